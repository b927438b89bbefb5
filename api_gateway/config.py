"""Gateway configuration, read from ONAIR_GATEWAY_* environment variables."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from onair.api_gateway.auth import ApiKey, Role, load_api_keys

# An HS256 key shorter than its 32-byte hash is weaker than the hash (RFC 7518 3.2).
MIN_SIGNING_KEY_LENGTH = 32

ENV_PREFIX = "ONAIR_GATEWAY_"


@dataclass
class GatewayConfig:
    """Everything the app needs; `init_app(config)` takes one of these."""

    host: str = "0.0.0.0"
    port: int = 8080
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # Stream keys are derived from this; the operator must have the same seed (the chart shares one Secret).
    stream_key_seed: str = ""
    # The operator's webhook secret (the chart shares its Secret): projects' signing keys derive from it.
    webhook_secret: str = ""
    token_ttl_seconds: int = 900
    api_keys: list[ApiKey] = field(default_factory=list)
    # Or the Secret holding them ("name" in template_namespace, or "namespace/name"), watched: keys
    # added, rotated or removed there take effect without a restart.
    api_keys_secret: str = ""
    api_keys_secret_key: str = "api-keys.yaml"
    # The Secret (as api_keys_secret) holding the JWT signing key, watched: a new key there is in force
    # without a restart (jwt_secret is the key until the Secret is read).
    jwt_secret_secret: str = ""
    jwt_secret_secret_key: str = "jwt-secret"
    cors_origins: tuple[str, ...] = ()
    # Where platform-wide JobTemplates live (the operator's namespace).
    template_namespace: str = "onair-system"
    # Largest accepted request body; bigger ones get 413.
    max_body_bytes: int = 64 * 1024
    # Ids are leased this many at a time from the counters of this ConfigMap (one key per project
    # namespace), in template_namespace: the only object the gateway writes besides jobs.
    id_block_size: int = 50
    id_counter_configmap: str = "onair-gateway-ids"
    # Ascending keyset pages by creation leave out jobs created within the last second plus this
    # many seconds: room for a create to commit and for another replica's job to reach this cache.
    keyset_settle_seconds: float = 2.0
    # Seconds the gateway waits for its caches before answering reads with 503.
    cache_sync_timeout: float = 30.0
    # Kubernetes access: None discovers in-cluster credentials or KUBECONFIG.
    kubeconfig: str | None = None
    # Watch other things (encoder Pods, nodes, stream-key Secrets): off in unit tests that feed caches.
    watch: bool = True
    public_metrics: bool = True
    # The operator's watched namespaces, names or kopf patterns (empty: every namespace): the projects
    # served are the labelled namespaces among them (a job elsewhere would never be reconciled), and the
    # encoder Pods are read in the named ones only (where the chart grants the read), cluster-wide with
    # a pattern.
    watch_namespaces: tuple[str, ...] = ()
    # The port encoders serve the live preview on (the operator's preview_port): the relay's target.
    preview_port: int = 8091
    # Viewers of one job's preview this gateway relays (the encoder's own preview is opened once for all).
    preview_max_viewers: int = 100

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> GatewayConfig:
        env = dict(os.environ if env is None else env)

        def get(name: str, default: str | None = None) -> str | None:
            return env.get(ENV_PREFIX + name, default)

        def read_file(name: str) -> str | None:
            path = get(name)
            return Path(path).read_text() if path else None

        config = cls()
        config.host = get("HOST", config.host) or config.host
        config.port = int(get("PORT", str(config.port)) or config.port)
        jwt_secret = get("JWT_SECRET") or (read_file("JWT_SECRET_FILE") or "").strip()
        if jwt_secret:
            if len(jwt_secret) < MIN_SIGNING_KEY_LENGTH:
                raise ValueError(f"{ENV_PREFIX}JWT_SECRET has {len(jwt_secret)} characters; at least "
                                 f"{MIN_SIGNING_KEY_LENGTH} are needed")
            config.jwt_secret = jwt_secret
        seed = get("STREAM_KEY_SEED") or (read_file("STREAM_KEY_SEED_FILE") or "").strip()
        if seed:
            config.stream_key_seed = seed
        config.webhook_secret = get("WEBHOOK_SECRET") or (read_file("WEBHOOK_SECRET_FILE") or "").strip()
        config.token_ttl_seconds = int(get("TOKEN_TTL_SECONDS", str(config.token_ttl_seconds)) or 900)
        keys_text = get("API_KEYS") or read_file("API_KEYS_FILE")
        if keys_text:
            config.api_keys = load_api_keys(keys_text)
        config.api_keys_secret = get("API_KEYS_SECRET") or ""
        config.api_keys_secret_key = get("API_KEYS_SECRET_KEY") or config.api_keys_secret_key
        if config.api_keys_secret and keys_text:
            raise ValueError(f"set {ENV_PREFIX}API_KEYS_SECRET or {ENV_PREFIX}API_KEYS[_FILE], not both")
        config.jwt_secret_secret = get("JWT_SECRET_SECRET") or ""
        config.jwt_secret_secret_key = get("JWT_SECRET_SECRET_KEY") or config.jwt_secret_secret_key
        origins = get("CORS_ORIGINS") or get("CORS_ORIGIN") or ""
        config.cors_origins = tuple(o.strip().rstrip("/") for o in origins.split(",") if o.strip())
        config.template_namespace = get("TEMPLATE_NAMESPACE", config.template_namespace) or config.template_namespace
        config.max_body_bytes = int(get("MAX_BODY_BYTES", str(config.max_body_bytes)) or config.max_body_bytes)
        config.id_block_size = int(get("ID_BLOCK_SIZE", str(config.id_block_size)) or config.id_block_size)
        if config.id_block_size < 2:  # the next block is leased once half of one is handed out
            raise ValueError(f"{ENV_PREFIX}ID_BLOCK_SIZE must be at least 2, not {config.id_block_size}")
        config.id_counter_configmap = get("ID_COUNTER_CONFIGMAP") or config.id_counter_configmap
        config.keyset_settle_seconds = float(get("KEYSET_SETTLE_SECONDS", str(config.keyset_settle_seconds))
                                             or config.keyset_settle_seconds)
        config.kubeconfig = get("KUBECONFIG") or None
        config.public_metrics = (get("PUBLIC_METRICS", "true") or "true").lower() in ("1", "true", "yes")
        config.watch_namespaces = watch_list(get("WATCH_NAMESPACES") or "")
        config.preview_port = int(get("PREVIEW_PORT", str(config.preview_port)) or config.preview_port)
        config.preview_max_viewers = int(get("PREVIEW_MAX_VIEWERS", str(config.preview_max_viewers))
                                         or config.preview_max_viewers)
        if config.preview_max_viewers < 1:
            raise ValueError(f"{ENV_PREFIX}PREVIEW_MAX_VIEWERS must be at least 1, not {config.preview_max_viewers}")
        return config

    @property
    def api_keys_secret_ref(self) -> tuple[str, str]:
        """(namespace, name) of the API keys Secret."""
        return self._secret_ref(self.api_keys_secret)

    @property
    def jwt_secret_secret_ref(self) -> tuple[str, str]:
        """(namespace, name) of the JWT signing key's Secret."""
        return self._secret_ref(self.jwt_secret_secret)

    def _secret_ref(self, text: str) -> tuple[str, str]:
        namespace, _, name = text.rpartition("/")
        return namespace or self.template_namespace, name


__all__ = ["ApiKey", "GatewayConfig", "Role"]


def watch_list(value: str) -> tuple[str, ...]:
    """The operator's watch list: a JSON array as the operator is given it (kopf patterns, whose own
    commas join the parts of one pattern: "t-*, !t-test"), or names separated by commas."""
    if value.lstrip().startswith("["):
        try:
            entries = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{ENV_PREFIX}WATCH_NAMESPACES: not a JSON array: {error}") from None
        if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
            raise ValueError(f"{ENV_PREFIX}WATCH_NAMESPACES: a JSON array of strings, not {value!r}")
        return tuple(entry.strip() for entry in entries if entry.strip())
    return tuple(name.strip() for name in value.split(",") if name.strip())
