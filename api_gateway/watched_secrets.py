"""The Secrets the gateway follows without a restart, each read and watched by name (RBAC grants no more):

- the API keys Secret: keys added, rotated or removed there are in force within seconds, and the tokens
  of a key removed or changed are refused from then on (auth.VerifiedTokens). A Secret deleted leaves
  no key in force: deleting it is how all access is revoked at once.
- the JWT signing key's Secret: a new key is in force within seconds, and every token signed with the
  one before is refused (clients log in again). A Secret deleted keeps the key in force: without one
  nobody could log in, and the old key is no less secret for its Secret being gone.

A Secret whose value does not parse (or lacks its key) changes nothing: what is in force stays, the error
is logged and counted.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from onair.api_gateway.auth import VerifiedTokens, load_api_keys
from onair.api_gateway.cache import WatchCache, rv_int
from onair.api_gateway.config import MIN_SIGNING_KEY_LENGTH

log = logging.getLogger("onair.gateway")


class WatchedSecret:
    """One Secret's value under `data_key`, handed to `apply` on each change (a ValueError from it:
    the value is refused, the one in force stays); what it holds is put in force in `tokens`."""

    what = "Secret"
    cache_name = "secret"
    when_missing = ""  # what it means that the Secret does not exist
    updates_metric = ""  # a counter of its changes, by result: applied, invalid, removed
    updates_help = ""

    def __init__(self, namespace: str, name: str, data_key: str, tokens: VerifiedTokens,
                 registry: CollectorRegistry) -> None:
        self.where = f"{namespace}/{name}"
        self.data_key = data_key
        self.tokens = tokens
        self.updates = Counter(self.updates_metric, self.updates_help, ["result"], registry=registry)
        self.cache = WatchCache(self.cache_name, f"/api/v1/namespaces/{namespace}/secrets",
                                field_selector=f"metadata.name={name}")
        self.cache.listeners.append(self._on_secret)

    def apply(self, text: str) -> None:
        raise NotImplementedError

    def removed(self) -> None:
        raise NotImplementedError

    def _on_secret(self, event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            self.removed()
            self.updates.labels("removed").inc()
            return
        if old is not None and rv_int(old) == rv_int(new):  # a relist of the watch: nothing changed
            return
        encoded = (new.get("data") or {}).get(self.data_key)
        try:
            if encoded is None:
                raise ValueError(f"it has no key {self.data_key!r}")
            self.apply(base64.b64decode(encoded, validate=True).decode())
        except ValueError as error:  # binascii.Error and UnicodeDecodeError are ValueErrors too
            log.error("the %s %s is not valid (%s); what is in force stays", self.what, self.where, error)
            self.updates.labels("invalid").inc()
            return
        self.updates.labels("applied").inc()

    def warn_if_missing(self) -> None:
        if self.cache.synced.is_set() and not self.cache.objects:
            log.warning("the %s %s does not exist: %s", self.what, self.where, self.when_missing)


class ApiKeysSecret(WatchedSecret):
    what = "API keys Secret"
    cache_name = "api-keys-secret"
    when_missing = "nobody can log in until it is created"
    updates_metric = "onair_gateway_api_keys_updates_total"
    updates_help = ("Changes of the API keys Secret, by result: applied, invalid (kept the keys in force), "
                    "removed (no key in force)")

    def __init__(self, namespace: str, name: str, data_key: str, tokens: VerifiedTokens,
                 registry: CollectorRegistry) -> None:
        super().__init__(namespace, name, data_key, tokens, registry)
        Gauge("onair_gateway_api_keys", "API keys in force", registry=registry).set_function(
            lambda: len(tokens.api_keys))

    def apply(self, text: str) -> None:
        keys = load_api_keys(text)
        self.tokens.use_keys(keys)
        log.info("API keys from the Secret %s in force: %s", self.where, ", ".join(k.name for k in keys) or "none")

    def removed(self) -> None:
        log.warning("the API keys Secret %s was deleted: no API key is in force, nobody can log in", self.where)
        self.tokens.use_keys([])


class SigningKeySecret(WatchedSecret):
    what = "JWT signing key Secret"
    cache_name = "signing-key-secret"
    when_missing = "the key given at startup stays in force"
    updates_metric = "onair_gateway_signing_key_updates_total"
    updates_help = ("Changes of the JWT signing key's Secret, by result: applied, invalid (kept the key in "
                    "force), removed (kept the key in force)")

    def apply(self, text: str) -> None:
        key = text.strip()
        if len(key) < MIN_SIGNING_KEY_LENGTH:
            raise ValueError(f"the key has {len(key)} characters; at least {MIN_SIGNING_KEY_LENGTH} are needed")
        if self.tokens.use_signing_key(key):
            log.warning("a new JWT signing key from the Secret %s is in force: tokens signed with the one "
                        "before are refused, their clients log in again", self.where)

    def removed(self) -> None:
        log.warning("the JWT signing key Secret %s was deleted; the key in force stays", self.where)
