"""Cluster-tier fixtures: the CRDs installed, the operator running as a real process against the
platform's API server, and a namespace ready for jobs (S3 credentials, a JobTemplate)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixed_secrets import STREAM_KEY_SEED
from kubernetes import client
from localplatform.platform import LocalPlatform, PlatformInfo
from localplatform.processes import ManagedProcess, free_ports, stop_process_group
from outcome import has_failed
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "onair"
OPERATOR_NAMESPACE = "onair-system"
LADDER = {
    "apiVersion": "onair.dev/v1alpha1", "kind": "JobTemplate",
    "metadata": {"name": "small-ladder"},
    "spec": {"id": 7, "name": "small ladder", "default": True, "segmentDurationSeconds": 2, "playlistWindow": 5,
             "renditions": [
                 {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 800000, "gopSeconds": 2},
                 {"name": "180p", "width": 320, "height": 180, "fps": 30, "videoBitrate": 300000, "gopSeconds": 2},
             ]},
}


@pytest.fixture(scope="session")
def crds(platform: PlatformInfo) -> None:
    subprocess.run(["kubectl", "apply", "--server-side", "-f", str(ROOT / "crds")], check=True,
                   capture_output=True, text=True)
    subprocess.run(["kubectl", "wait", "--for=condition=Established", "--timeout=60s",
                    "crd/livejobs.onair.dev", "crd/recordjobs.onair.dev", "crd/jobtemplates.onair.dev"],
                   check=True, capture_output=True, text=True)


@dataclass
class RunningOperator:
    process: ManagedProcess
    metrics_url: str
    health_url: str

    def log_tail(self, lines: int = 80) -> str:
        return self.process.log_tail(lines)


def operator_env(platform: PlatformInfo, health_port: int, metrics_port: int, **extra: str) -> dict[str, str]:
    encoder = str(Path(sys.executable).parent / "onair-encoder")
    return {
        **platform.env(),
        "ONAIR_STANDALONE": "true",
        "ONAIR_NAMESPACE": OPERATOR_NAMESPACE,
        "ONAIR_LISTEN_HOST": "127.0.0.1",
        "ONAIR_HEALTH_PORT": str(health_port),
        "ONAIR_METRICS_PORT": str(metrics_port),
        "ONAIR_INGEST_ADDRESS": "pod-ip",
        "ONAIR_ENCODER_COMMAND": json.dumps([encoder]),
        "ONAIR_S3_ENDPOINT": platform.s3_endpoint,
        "ONAIR_S3_REGION": platform.s3_region,
        "ONAIR_WEBHOOK_SECRET": "test-webhook-secret",
        "ONAIR_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",  # the tests' receivers listen on 127.0.0.1
        "ONAIR_PULL_ALLOWED_NETWORKS": json.dumps(["127.0.0.0/8"]),  # and so do the sources they pull
        "ONAIR_STREAM_KEY_SEED": STREAM_KEY_SEED,
        "ONAIR_RESTART_BACKOFF_SECONDS": "0.5",
        **extra,
    }


def start_operator(platform: PlatformInfo, run_dir: Path, name: str = "operator", **extra: str) -> RunningOperator:
    health_port, metrics_port = free_ports(2)
    process = ManagedProcess(
        name=name, argv=[str(Path(sys.executable).parent / "onair-operator")], run_dir=run_dir,
        env=operator_env(platform, health_port, metrics_port, **extra),
    )
    process.start()
    operator = RunningOperator(process, f"http://127.0.0.1:{metrics_port}/metrics",
                               f"http://127.0.0.1:{health_port}/healthz")

    def healthy() -> bool:
        if process.running_pid() is None:
            raise AssertionError(f"the operator exited:\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(operator.health_url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(healthy, 60, "the operator's health endpoint")
    return operator


def helm_bin() -> str:
    found = shutil.which("helm") or next(
        (str(p) for p in sorted(Path.home().glob(".cache/onair/bin/kubectl-helm-*/helm"))), None)
    if not found:
        pytest.skip("helm is not installed (hack/bootstrap.sh)")
    return found


@contextmanager
def chart_operator_identity(platform: PlatformInfo, kubectl: Callable[..., Any], run_dir: Path, namespace: str,
                            **values: str) -> Iterator[dict[str, str]]:
    """For a test's own operator that must run as deployed: the chart's operator RBAC rendered with
    `values` (helm --set) for an operator that lives in and watches `namespace`, and the environment
    that runs it with a token of the chart's ServiceAccount instead of the admin certificate."""
    release = f"rbac-{secrets.token_hex(3)}"
    sets = [f"operator.watchNamespaces={{{namespace}}}", *(f"{key}={value}" for key, value in values.items())]
    rendered = subprocess.run(
        [helm_bin(), "template", release, str(CHART), "--namespace", namespace,
         "--show-only", "templates/operator-rbac.yaml", *(arg for item in sets for arg in ("--set", item))],
        check=True, capture_output=True, text=True).stdout
    kubectl("apply", "-f", "-", input=rendered)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = LocalPlatform(Path(platform.state_dir)).service_account_kubeconfig(
            platform, namespace, f"{release}-onair-operator", run_dir / "operator.kubeconfig")
        yield {"KUBECONFIG": str(kubeconfig), "ONAIR_NAMESPACE": namespace,
               "ONAIR_WATCH_NAMESPACES": json.dumps([namespace])}
    finally:  # what the namespace's deletion does not take
        kubectl("delete", "clusterrole,clusterrolebinding", "-l", f"app.kubernetes.io/instance={release}")


def stop_operator(operator: RunningOperator) -> None:
    pid = operator.process.running_pid()
    if pid is not None:
        stop_process_group(pid, grace_seconds=10)


@pytest.fixture(scope="session")
def operator_namespace(kube: client.ApiClient) -> str:
    try:
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": OPERATOR_NAMESPACE}})
    except client.ApiException as error:
        if error.status != 409:
            raise
    return OPERATOR_NAMESPACE


# The operator of the live tests writes a job's moving counters at most this often (seconds), and reads
# a running encoder about as often: short, so that a test sees several writes quickly; long enough to
# tell from the encoder's counters, which move every second.
STATUS_PROGRESS_INTERVAL = 4.0


@pytest.fixture(scope="session")
def operator(platform: PlatformInfo, crds: None, operator_namespace: str, run_root: Path) -> Iterator[RunningOperator]:
    """The operator for jobs whose encoders really run (on the process node): namespaces t-*."""
    running = start_operator(platform, run_root / "operator",
                             ONAIR_WATCH_NAMESPACES=json.dumps(["t-*"]),
                             ONAIR_STATUS_PROGRESS_INTERVAL_SECONDS=str(STATUS_PROGRESS_INTERVAL))
    yield running
    stop_operator(running)


KWOK_PLACEMENT = {
    "ONAIR_ENCODER_NODE_SELECTOR": json.dumps({"type": "kwok"}),
    "ONAIR_ENCODER_TOLERATIONS": json.dumps([{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]),
}


@pytest.fixture(scope="session")
def kwok_operator(platform: PlatformInfo, crds: None, operator_namespace: str,
                  run_root: Path) -> Iterator[RunningOperator]:
    """An operator whose encoder Pods go to kwok's simulated nodes (Running, never really encoding):
    namespaces k-*, for lifecycle and scale tests."""
    running = start_operator(platform, run_root / "kwok-operator", name="kwok-operator",
                             ONAIR_WATCH_NAMESPACES=json.dumps(["k-*"]), **KWOK_PLACEMENT)
    yield running
    stop_operator(running)


@pytest.fixture
def kwok_namespace(kube: client.ApiClient, kwok_operator: RunningOperator, platform: PlatformInfo,
                   request: pytest.FixtureRequest) -> Iterator[str]:
    core = client.CoreV1Api(kube)
    name = f"k-{secrets.token_hex(4)}"
    core.create_namespace({"metadata": {"name": name}})
    prepare_job_namespace(kube, platform, name)
    yield name
    if has_failed(request):
        print(f"\n--- kwok operator log ---\n{kwok_operator.log_tail()}")
    core.delete_namespace(name, propagation_policy="Background")


@contextmanager
def own_job_namespace(kube: client.ApiClient, platform: PlatformInfo, prefix: str) -> Iterator[str]:
    """A fresh namespace `<prefix>-<random>` ready for jobs (for a test's own operator to watch), deleted after."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    prepare_job_namespace(kube, platform, name)
    yield name
    client.CoreV1Api(kube).delete_namespace(name, propagation_policy="Background")


def prepare_job_namespace(kube: client.ApiClient, platform: PlatformInfo, namespace: str) -> None:
    client.CoreV1Api(kube).create_namespaced_secret(namespace, {
        "metadata": {"name": "onair-s3-credentials"},
        "stringData": {"AWS_ACCESS_KEY_ID": platform.s3_access_key, "AWS_SECRET_ACCESS_KEY": platform.s3_secret_key},
    })
    client.CustomObjectsApi(kube).create_namespaced_custom_object("onair.dev", "v1alpha1", namespace,
                                                                  "jobtemplates", LADDER)


@pytest.fixture
def job_namespace(namespace: str, kube: client.ApiClient, platform: PlatformInfo,
                  operator: RunningOperator, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace with S3 credentials and the test JobTemplate (id 7); prints the operator's and the
    process node's logs when the test fails."""
    prepare_job_namespace(kube, platform, namespace)
    yield namespace
    if has_failed(request):
        print(f"\n--- operator log ---\n{operator.log_tail()}")
        node_log = Path(platform.state_dir) / "logs" / "process-node.log"
        if node_log.exists():
            print("\n--- process node log ---\n" + "\n".join(node_log.read_text().splitlines()[-40:]))
        pods_dir = Path(platform.state_dir) / "process-node" / "pods"
        for log in sorted(pods_dir.glob(f"{namespace}_*/*.log")):
            print(f"\n--- {log.parent.name}/{log.name} ---\n" + "\n".join(log.read_text().splitlines()[-30:]))


@pytest.fixture
def publisher() -> Iterator[Any]:
    """publish(url): a real ffmpeg publishing a 640x360 test pattern with audio over RTMP, killed after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def publish(url: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-f", "flv", url,
        ], stdin=subprocess.DEVNULL)
        started.append(process)
        return process

    yield publish
    for process in started:
        process.kill()
        process.wait()


def custom(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def get_job(kube: client.ApiClient, namespace: str, name: str, plural: str = "livejobs") -> dict[str, Any]:
    return custom(kube).get_namespaced_custom_object("onair.dev", "v1alpha1", namespace, plural, name)


def wait_phase(kube: client.ApiClient, namespace: str, name: str, phase: str, timeout: float = 60,
               plural: str = "livejobs") -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        seen.update(job=get_job(kube, namespace, name, plural))
        return seen["job"] if seen["job"].get("status", {}).get("phase") == phase else None

    try:
        return wait_until(reached, timeout, f"{plural} {namespace}/{name} to reach {phase}")
    except AssertionError as error:
        status = seen.get("job", {}).get("status", {})
        summary = {key: status.get(key) for key in ("phase", "conditions", "resourceName", "restarts")}
        summary["timings"] = (status.get("timings") or [])[-5:]
        raise AssertionError(f"{error}\nthe job's status then: {json.dumps(summary, indent=1)}") from None

