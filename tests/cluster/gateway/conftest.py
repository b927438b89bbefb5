"""Cluster-tier fixtures of the gateway tests: the gateway process and a project per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_support import Project, RunningGateway, make_project, start_gateway
from kubernetes import client
from localplatform.platform import PlatformInfo
from localplatform.processes import stop_process_group
from outcome import has_failed


@pytest.fixture(scope="session")
def gateway(platform: PlatformInfo, crds: None, operator_namespace: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    # operator_namespace: the gateway's own namespace in a deployment, where it keeps its id counters.
    running = start_gateway(platform, tmp_path_factory.mktemp("gateway"))
    yield running
    pid = running.process.running_pid()
    if pid is not None:
        stop_process_group(pid, grace_seconds=10)


@pytest.fixture
def project(kube: client.ApiClient, namespace: str, gateway: RunningGateway,
            request: pytest.FixtureRequest) -> Iterator[Project]:
    yield make_project(kube, namespace, gateway)
    if has_failed(request):
        print(f"\n--- gateway log ---\n{gateway.process.log_tail(60)}")
