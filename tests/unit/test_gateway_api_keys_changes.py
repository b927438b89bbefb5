"""The API keys Secret as its watch cache delivers it: what each change puts in force (the same against the
API server: tests/cluster/gateway/test_gateway_api_keys_secret.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

from prometheus_client import CollectorRegistry

from onair.api_gateway.auth import VerifiedTokens
from onair.api_gateway.watched_secrets import ApiKeysSecret

SECRET = "unit-test-signing-key-of-32-bytes!"


def secret(keys_text: str, resource_version: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "ops", "name": "keys", "resourceVersion": str(resource_version)},
            "data": {"api-keys.yaml": base64.b64encode(keys_text.encode()).decode()}}


def keys(*names: str) -> str:
    return json.dumps([{"name": name, "key": f"{name}-key-0123456789", "projects": ["*"], "role": "read"}
                       for name in names])


def test_each_change_of_the_secret_and_only_a_change_counts() -> None:
    registry = CollectorRegistry()
    tokens = VerifiedTokens(SECRET, [])
    watched = ApiKeysSecret("ops", "keys", "api-keys.yaml", tokens, registry)

    def updates(result: str) -> float | None:
        return registry.get_sample_value("onair_gateway_api_keys_updates_total", {"result": result})

    watched.cache.replace([secret(keys("alice"), 5)], "5")
    assert [k.name for k in tokens.api_keys] == ["alice"] and updates("applied") == 1
    watched.cache.replace([secret(keys("alice"), 5)], "9")  # the watch listed again: the same Secret
    assert updates("applied") == 1

    watched.cache.apply_event({"type": "MODIFIED", "object": secret("- {name: broken", 10)})
    assert [k.name for k in tokens.api_keys] == ["alice"] and updates("invalid") == 1
    no_key = secret(keys("bob"), 11)
    no_key["data"] = {"other.yaml": no_key["data"]["api-keys.yaml"]}
    watched.cache.apply_event({"type": "MODIFIED", "object": no_key})
    assert [k.name for k in tokens.api_keys] == ["alice"] and updates("invalid") == 2

    watched.cache.apply_event({"type": "MODIFIED", "object": secret(keys("bob", "carol"), 12)})
    assert [k.name for k in tokens.api_keys] == ["bob", "carol"] and updates("applied") == 2
    assert registry.get_sample_value("onair_gateway_api_keys") == 2

    watched.cache.apply_event({"type": "DELETED", "object": secret(keys("bob", "carol"), 13)})
    assert tokens.api_keys == () and updates("removed") == 1
    assert registry.get_sample_value("onair_gateway_api_keys") == 0
