"""The API keys Secret, watched by a real gateway process against the API server: a platform team adds,
rotates and removes keys in the Secret, and the gateway follows without a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from gateway_support import RunningGateway, start_gateway
from kubernetes import client
from localplatform.platform import PlatformInfo
from localplatform.processes import stop_process_group
from waiting import wait_until

ALICE = {"name": "alice", "key": "alice-key-0123456789", "projects": ["*"], "role": "admin"}
BOB = {"name": "bob", "key": "bob-key-0123456789ab", "projects": ["*"], "role": "admin"}


def put_keys(core: client.CoreV1Api, namespace: str, text: str, create: bool = False) -> None:
    body = {"metadata": {"name": "api-keys"}, "stringData": {"api-keys.yaml": text}}
    if create:
        core.create_namespaced_secret(namespace, body)
    else:
        core.patch_namespaced_secret("api-keys", namespace, body)


@contextmanager
def gateway_reading_secret(platform: PlatformInfo, namespace: str, run_dir: Path) -> Iterator[RunningGateway]:
    gateway = start_gateway(platform, run_dir, ONAIR_GATEWAY_API_KEYS="",
                            ONAIR_GATEWAY_API_KEYS_SECRET=f"{namespace}/api-keys")
    try:
        yield gateway
    except AssertionError:
        print(f"\n--- gateway log ---\n{gateway.process.log_tail(40)}")
        raise
    finally:
        pid = gateway.process.running_pid()
        if pid is not None:
            stop_process_group(pid, grace_seconds=10)


def test_keys_follow_their_secret_without_a_restart(platform: PlatformInfo, crds: None, kube: client.ApiClient,
                                                    namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(kube)
    put_keys(core, namespace, json.dumps([ALICE]), create=True)
    with gateway_reading_secret(platform, namespace, tmp_path) as gateway:
        check_keys_follow_the_secret(core, namespace, gateway)


def check_keys_follow_the_secret(core: client.CoreV1Api, namespace: str, gateway: RunningGateway) -> None:
    base = gateway.base

    def login(key: dict[str, object]) -> requests.Response:
        return requests.post(f"{base}/api/v1/login", json={"apiKey": key["key"]}, timeout=10)

    def streamers(token: str) -> requests.Response:
        return requests.get(f"{base}/api/v1/streamers", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def updates(result: str) -> float:
        for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
            if line.startswith(f'onair_gateway_api_keys_updates_total{{result="{result}"}}'):
                return float(line.split()[-1])
        return 0.0

    pid = gateway.process.running_pid()
    alice = login(ALICE).json()["result"]["token"]
    assert streamers(alice).status_code == 200

    # Keys that do not parse change nothing: alice keeps working, the error is counted.
    put_keys(core, namespace, "- {name: broken, projects: [")
    wait_until(lambda: updates("invalid") == 1, 30, "the invalid Secret to be counted")
    assert streamers(alice).status_code == 200 and login(ALICE).status_code == 200

    # Alice's key replaced by Bob's: Bob logs in, Alice's key and the token she holds are refused.
    put_keys(core, namespace, json.dumps([BOB]))
    wait_until(lambda: login(BOB).status_code == 200, 30, "Bob's key to be in force")
    refused = streamers(alice)
    assert refused.status_code == 401
    assert "removed or changed" in refused.json()["errors"][0]
    assert login(ALICE).status_code == 401
    bob = login(BOB).json()["result"]["token"]
    assert streamers(bob).status_code == 200

    # The Secret deleted: no key is in force.
    core.delete_namespaced_secret("api-keys", namespace)
    wait_until(lambda: login(BOB).status_code == 401, 30, "no key to be in force once the Secret is gone")
    assert streamers(bob).status_code == 401 and updates("removed") == 1

    # Made again: in force again, with the same process all along.
    put_keys(core, namespace, json.dumps([ALICE]), create=True)
    wait_until(lambda: login(ALICE).status_code == 200, 30, "Alice's key to be in force again")
    assert gateway.process.running_pid() == pid


def test_a_missing_secret_is_named_in_the_log_and_nobody_can_log_in(platform: PlatformInfo, crds: None,
                                                                    namespace: str, tmp_path: Path) -> None:
    with gateway_reading_secret(platform, namespace, tmp_path) as gateway:
        login = requests.post(f"{gateway.base}/api/v1/login", json={"apiKey": ALICE["key"]}, timeout=10)
        assert login.status_code == 401
        assert f"the API keys Secret {namespace}/api-keys does not exist" in gateway.process.log_tail(40)
