"""Keys derived from the installation's secrets: from the seed and a job's identity, the stream key (a
publisher's credential) and the control key (the bearer token of the operator's commands to the job's
encoder); from the webhook secret and a project, that project's webhook signing key.

The gateway must answer a create with the job's stream key, and the operator must hand the same
key to the job's encoder. Deriving it (HMAC-SHA256 of namespace, name and uid under a seed both
read from one Secret) lets each compute it on its own: a create through the gateway is one write
(the LiveJob), a job applied with kubectl gets its key the same way, and the gateway needs no access
to Secrets. The uid makes a re-created job (the way to retire a leaked key) get a new key.
"""

from __future__ import annotations

import hmac
import uuid

MIN_SEED_LENGTH = 32


def check_seed(seed: str, variable: str) -> str:
    if len(seed) < MIN_SEED_LENGTH:
        raise ValueError(f"{variable}: the stream-key seed must be at least {MIN_SEED_LENGTH} characters "
                         f"(the Helm chart creates one; operator and gateway must share it)")
    return seed


def derive_stream_key(seed: str, namespace: str, name: str, uid: str) -> str:
    """A GUID (the form the REST contract gives stream keys)."""
    digest = hmac.digest(seed.encode(), f"{namespace}/{name}/{uid}".encode(), "sha256")
    return str(uuid.UUID(bytes=digest[:16], version=4))


def derive_control_key(seed: str, namespace: str, name: str, uid: str) -> str:
    """What the encoder's /finish, /pause and /resume demand, so that nothing else in the cluster that
    reaches the Pod's address can stop or pause it. ("control:" cannot begin a namespace, so no stream
    key is derived from the same text.)"""
    return hmac.digest(seed.encode(), f"control:{namespace}/{name}/{uid}".encode(), "sha256").hex()


PREVIEW_PATH = "/websocketplay"  # the encoder serves a LiveJob's live preview at PREVIEW_PATH/<preview key>
PREVIEW_VIEWER_MESSAGE_BYTES = 4096  # a preview viewer's own messages (it has nothing to say but a close)


def derive_preview_key(seed: str, namespace: str, name: str, uid: str) -> str:
    """The key in a LiveJob's preview URL (status.urls.webSocketConnection): it lets its holder watch the
    ingest, nothing more, and is as public as the job's status. Another text than the stream key's, so
    neither gives away the other."""
    return hmac.digest(seed.encode(), f"preview:{namespace}/{name}/{uid}".encode(), "sha256")[:16].hex()


WEBHOOK_SIGNATURE_HEADER = "Onair-Signature"  # carries the signature made with derive_webhook_key


def derive_webhook_key(secret: str, namespace: str) -> str:
    """The key a project's webhooks are signed with: one per project (namespace), derived from the
    installation's webhook secret, so a receiver of one project cannot forge another project's events.
    The operator signs with it; the gateway hands it to the project's writers."""
    return hmac.digest(secret.encode(), f"webhook:{namespace}".encode(), "sha256").hex()


__all__ = ["MIN_SEED_LENGTH", "PREVIEW_PATH", "PREVIEW_VIEWER_MESSAGE_BYTES", "WEBHOOK_SIGNATURE_HEADER", "check_seed",
           "derive_control_key", "derive_preview_key", "derive_stream_key", "derive_webhook_key"]
