"""Secrets that processes started by different fixtures must share, as the Helm chart shares them."""

# The operator and the gateway derive each job's stream key from this seed.
STREAM_KEY_SEED = "test-stream-key-seed-0123456789abcdef"
