"""The API keys Secret, watched: keys added, rotated or removed there are in force within seconds, without
a restart, and the tokens of a key removed or changed are refused from then on (auth.VerifiedTokens).

A Secret whose keys do not parse changes nothing: the keys in force stay, the error is logged and
counted. A Secret deleted leaves no key in force: deleting it is how all access is revoked at once.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from onair.api_gateway.auth import VerifiedTokens, load_api_keys
from onair.api_gateway.cache import WatchCache, rv_int

log = logging.getLogger("onair.gateway")


class ApiKeysSecret:
    def __init__(self, namespace: str, name: str, data_key: str, tokens: VerifiedTokens,
                 registry: CollectorRegistry) -> None:
        self.where = f"{namespace}/{name}"
        self.data_key = data_key
        self.tokens = tokens
        # RBAC grants the read of this one Secret by name: a list or watch must select it by name.
        self.cache = WatchCache("api-keys-secret", f"/api/v1/namespaces/{namespace}/secrets",
                                field_selector=f"metadata.name={name}")
        self.cache.listeners.append(self._on_secret)
        self.updates = Counter("onair_gateway_api_keys_updates_total",
                               "Changes of the API keys Secret, by result: applied, invalid (kept the keys "
                               "in force), removed (no key in force)", ["result"], registry=registry)
        Gauge("onair_gateway_api_keys", "API keys in force", registry=registry).set_function(
            lambda: len(tokens.api_keys))

    def _on_secret(self, event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            log.warning("the API keys Secret %s was deleted: no API key is in force, nobody can log in", self.where)
            self.tokens.use_keys([])
            self.updates.labels("removed").inc()
            return
        if old is not None and rv_int(old) == rv_int(new):  # a relist of the watch: nothing changed
            return
        encoded = (new.get("data") or {}).get(self.data_key)
        try:
            if encoded is None:
                raise ValueError(f"it has no key {self.data_key!r}")
            keys = load_api_keys(base64.b64decode(encoded, validate=True).decode())
        except ValueError as error:  # binascii.Error and UnicodeDecodeError are ValueErrors too
            log.error("the API keys Secret %s is not valid (%s); the %d keys in force stay", self.where, error,
                      len(self.tokens.api_keys))
            self.updates.labels("invalid").inc()
            return
        self.tokens.use_keys(keys)
        self.updates.labels("applied").inc()
        log.info("API keys from the Secret %s in force: %s", self.where, ", ".join(k.name for k in keys) or "none")

    def warn_if_missing(self) -> None:
        if self.cache.synced.is_set() and not self.cache.objects:
            log.warning("the API keys Secret %s does not exist: nobody can log in until it is created", self.where)
