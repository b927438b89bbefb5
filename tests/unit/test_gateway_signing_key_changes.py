"""The JWT signing key's Secret as its watch cache delivers it: what each change puts in force (a new key
through the chart's Secret and RBAC, against the API server: tests/cluster/test_chart.py)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from onair.api_gateway.auth import AuthError, VerifiedTokens, parse_api_keys
from onair.api_gateway.watched_secrets import SigningKeySecret

STARTUP_KEY = "signing-key-given-at-startup-0123456789"
NEW_KEY = "signing-key-written-into-the-secret-later"
KEYS = parse_api_keys([{"name": "console", "key": "console-key-0123456789", "projects": ["*"], "role": "write"}])


def secret(value: str, resource_version: int, data_key: str = "jwt-secret") -> dict[str, Any]:
    return {"metadata": {"namespace": "ops", "name": "gateway", "resourceVersion": str(resource_version)},
            "data": {data_key: base64.b64encode(value.encode()).decode()}}


def test_each_change_of_the_secret_and_only_a_valid_one_changes_the_key() -> None:
    registry = CollectorRegistry()
    tokens = VerifiedTokens(STARTUP_KEY, KEYS)
    watched = SigningKeySecret("ops", "gateway", "jwt-secret", tokens, registry)

    def updates(result: str) -> float | None:
        return registry.get_sample_value("onair_gateway_signing_key_updates_total", {"result": result})

    startup_token = tokens.issue(KEYS[0], 60)
    watched.cache.replace([secret(STARTUP_KEY + "\n", 5)], "5")  # the key the gateway started with
    assert tokens.signing_key == STARTUP_KEY and updates("applied") == 1
    assert tokens.principal(startup_token).subject == "console"

    watched.cache.apply_event({"type": "MODIFIED", "object": secret("too-short", 6)})
    watched.cache.apply_event({"type": "MODIFIED", "object": secret(NEW_KEY, 7, data_key="other")})
    assert tokens.signing_key == STARTUP_KEY and updates("invalid") == 2
    assert tokens.principal(startup_token).subject == "console"

    watched.cache.apply_event({"type": "MODIFIED", "object": secret(NEW_KEY, 8)})
    assert tokens.signing_key == NEW_KEY and updates("applied") == 2
    with pytest.raises(AuthError, match="Signature verification failed"):
        tokens.principal(startup_token)
    new_token = tokens.issue(KEYS[0], 60)
    watched.cache.replace([secret(NEW_KEY, 8)], "12")  # the watch listed again: the same Secret
    assert updates("applied") == 2 and tokens.principal(new_token).subject == "console"

    # Deleted: the key in force stays (nobody could log in without one).
    watched.cache.apply_event({"type": "DELETED", "object": secret(NEW_KEY, 13)})
    assert tokens.signing_key == NEW_KEY and updates("removed") == 1
    assert tokens.principal(new_token).subject == "console"
