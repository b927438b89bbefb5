"""Fixtures shared by every tier.

The tier of a test is the folder it lives in (tests/unit, tests/cluster, tests/media); the marker is
added here, so `pytest -m unit` runs the pure tests alone and needs no platform at all.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from kubernetes import client, config
from localplatform.platform import LocalPlatform, PlatformInfo

TIERS = ("unit", "cluster", "media")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        tier = Path(str(item.fspath)).resolve().relative_to(tests_dir).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Keeps each phase's report on the item, so fixtures can tell whether their test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def run_root() -> Iterator[Path]:
    """A directory for the session's long-lived processes (platform, operator). Not pytest's tmp_path:
    pytest prunes old base temp dirs when another session starts, under processes still running."""
    root = Path(tempfile.mkdtemp(prefix="onair-tests-"))
    yield root
    if not os.environ.get("ONAIR_KEEP_TEST_STATE"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def platform(run_root: Path) -> Iterator[PlatformInfo]:
    """The real local platform, started once per test session in its own state dir and stopped after."""
    state_dir = Path(os.environ.get("ONAIR_TEST_STATE_DIR") or run_root / "platform")
    local = LocalPlatform(state_dir, kwok_nodes=2)
    info = local.up()
    saved = {key: os.environ.get(key) for key in info.env()}
    os.environ.update(info.env())
    try:
        yield info
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        local.down()


@pytest.fixture(scope="session")
def kube(platform: PlatformInfo) -> client.ApiClient:
    return config.new_client_from_config(platform.kubeconfig)


@pytest.fixture
def namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its contents go with it)."""
    core = client.CoreV1Api(kube)
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{secrets.token_hex(3)}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    core.create_namespace({"metadata": {"name": name, "labels": {"onair.dev/test": "true"}}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def kubectl(platform: PlatformInfo) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the real kubectl against the platform; returns the CompletedProcess (text)."""

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", *args], input=input, capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def s3(platform: PlatformInfo) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=platform.s3_endpoint,
        aws_access_key_id=platform.s3_access_key,
        aws_secret_access_key=platform.s3_secret_key,
        region_name=platform.s3_region,
    )
