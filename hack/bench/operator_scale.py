"""Operator scale benchmark (issue 3).

Creates N LiveJobs at once on kwok nodes and reports the time until every job has its Pod and is
WaitingForInput, next to the write bound measured in the same run on the same API server: a plain
async client creating the same N Pods and patching N statuses. Then the operator's RSS with N jobs
and with --rss-jobs jobs. The operator runs as the chart deploys it: with a token of its
ServiceAccount and the chart's RBAC, not the platform's admin certificate.

    .venv/bin/python hack/bench/operator_scale.py [--jobs 1000] [--rss-jobs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
sys.path.insert(0, str(ROOT / "tests"))

from benchkit import cpu_by_program, cpu_used_since, delete_namespace, rss_mb, say  # noqa: E402
from localplatform.platform import LocalPlatform, PlatformInfo  # noqa: E402

from onair.kubeclient import ApiError, Credentials, KubeClient, gather_limited, resource_path  # noqa: E402
from onair.models import API_VERSION, JobTemplateSpec, LiveJob  # noqa: E402
from onair.operator.builders import build_encoder_pod  # noqa: E402
from onair.operator.config import OperatorConfig  # noqa: E402

CONCURRENCY = 64
STREAM_KEY_SEED = "bench-stream-key-seed-0123456789abcdef"
TEMPLATE = {"id": 1, "name": "bench", "renditions": [
    {"name": "720p", "width": 1280, "height": 720, "fps": 30, "videoBitrate": 3000000},
    {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 800000}]}
KWOK = {"nodeSelector": {"type": "kwok"}, "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]}


def live_job(name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "LiveJob", "metadata": {"name": name},
            "spec": {"jobTemplateId": 1, "input": {"serverType": "RTMP"},
                     "destination": {"bucket": "onair", "path": f"live/{name}"}}}


async def ensure_namespace(kube: KubeClient, name: str) -> None:
    await kube.create("/api/v1/namespaces", {"metadata": {"name": name}})


async def create_jobs(kube: KubeClient, namespace: str, names: list[str]) -> list[dict[str, Any]]:
    path = resource_path(API_VERSION, "livejobs", namespace)
    return await gather_limited(CONCURRENCY, *(kube.create(path, live_job(n)) for n in names))


async def write_bound(kube: KubeClient, jobs: int) -> tuple[float, str, str]:
    """The same Pods the operator would create, and one status patch per job, with no operator."""
    namespace = "bench-baseline"
    await ensure_namespace(kube, namespace)
    created = await create_jobs(kube, namespace, [f"job-{i:05d}" for i in range(jobs)])
    before = await apiserver_writes(kube)
    template = JobTemplateSpec.model_validate(TEMPLATE)
    config = OperatorConfig(encoder_node_selector=KWOK["nodeSelector"], encoder_tolerations=KWOK["tolerations"],
                            stream_key_seed=STREAM_KEY_SEED)
    pods = [build_encoder_pod(LiveJob.model_validate({**body, "kind": "LiveJob", "apiVersion": API_VERSION}),
                              template, config, 1) for body in created if body]
    started, cpu_before = time.monotonic(), cpu_by_program()
    await gather_limited(CONCURRENCY, *(kube.create(resource_path("v1", "pods", namespace), p) for p in pods))
    await gather_limited(CONCURRENCY, *(
        kube.merge_patch(resource_path(API_VERSION, "livejobs", namespace, b["metadata"]["name"], "status"),
                         {"status": {"phase": "WaitingForInput"}}) for b in created if b))
    elapsed = time.monotonic() - started
    cpu = cpu_used_since(cpu_before)
    writes = per_job(before, await apiserver_writes(kube), jobs)
    say("write bound: removing its objects before the operator runs")
    await delete_namespace(kube, namespace)
    return elapsed, writes, cpu


async def list_jobs(kube: KubeClient, path: str) -> dict[str, Any]:
    for attempt in range(6):
        try:
            # Small pages: an API server busy with a burst of thousands of jobs took over the client's
            # 30 s for one page of 500, or answered a later page 504 (its watch cache behind the
            # continue token): a whole run was lost to each.
            return await kube.list(path, limit=100)
        except (TimeoutError, ApiError) as error:
            if attempt == 5 or (isinstance(error, ApiError) and error.status != 504):
                raise
            say(f"listing the jobs failed ({error}); again")
            await asyncio.sleep(2)
    raise AssertionError("unreachable")


async def wait_all_waiting(kube: KubeClient, namespace: str, total: int, started: float, timeout: float) -> float:
    """Watch the jobs (one LIST, then a watch: polling would load the API server it measures) until
    `total` are WaitingForInput; returns the time since `started`."""
    path = resource_path(API_VERSION, "livejobs", namespace)
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    waiting: set[str] = set()
    while len(waiting) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(waiting)}/{total} jobs WaitingForInput after {timeout}s")
        listing = await list_jobs(kube, path)
        waiting = {j["metadata"]["name"] for j in listing["items"]
                   if (j.get("status") or {}).get("phase") == "WaitingForInput"}
        version = listing["metadata"]["resourceVersion"]
        try:
            while len(waiting) < total and time.monotonic() <= deadline:
                async for event in kube.watch(path, version, timeout_seconds=60):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    if (obj.get("status") or {}).get("phase") == "WaitingForInput":
                        waiting.add(obj["metadata"]["name"])
                    if time.monotonic() - last_report > 5:
                        say(f"{len(waiting)}/{total} WaitingForInput after {time.monotonic() - started:.1f}s")
                        last_report = time.monotonic()
                    if len(waiting) >= total:
                        break
        except ApiError as error:
            if error.status != 410:
                raise
            say("the watch expired (410, the API server far behind a burst); listing again")
    return time.monotonic() - started


def _seconds(stamp: str | None, zero: float) -> float | None:
    if not stamp:
        return None
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - zero


async def stages(kube: KubeClient, namespace: str, zero: float) -> str:
    """When each step of the jobs happened, in seconds after the creates began (the 50th and 90th
    percentiles, and the last): where a slow burst waits. API-server stamps are whole seconds."""
    jobs = (await kube.list(resource_path(API_VERSION, "livejobs", namespace)))["items"]
    pods = (await kube.list(resource_path("v1", "pods", namespace)))["items"]
    steps: dict[str, list[float]] = {name: [] for name in (
        "job created", "Provisioning written", "Pod created", "Pod bound", "Pod ready", "WaitingForInput written")}

    def add(step: str, value: float | None) -> None:
        if value is not None:
            steps[step].append(value)

    for job in jobs:
        add("job created", _seconds(job["metadata"].get("creationTimestamp"), zero))
        for timing in (job.get("status") or {}).get("timings") or []:
            if timing["phase"] in ("Provisioning", "WaitingForInput"):
                add(f"{timing['phase']} written", _seconds(timing["time"], zero))
    for pod in pods:
        add("Pod created", _seconds(pod["metadata"].get("creationTimestamp"), zero))
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition["type"] in ("PodScheduled", "Ready") and condition.get("status") == "True":
                step = "Pod bound" if condition["type"] == "PodScheduled" else "Pod ready"
                add(step, _seconds(condition.get("lastTransitionTime"), zero))

    def line(step: str, values: list[float]) -> str:
        values.sort()
        if not values:
            return f"  {step:24s}: none"
        return (f"  {step:24s}: p50 {values[len(values) // 2]:6.1f}  p90 {values[len(values) * 9 // 10]:6.1f}"
                f"  last {values[-1]:6.1f}")

    return "\n".join(line(step, values) for step, values in steps.items())


WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}


async def apiserver_writes(kube: KubeClient) -> dict[str, float]:
    """Every client's writes so far (apiserver_request_total), by resource: the operator's own, and
    what they cause the scheduler, kwok and the controller manager to write."""
    writes: dict[str, float] = {}
    for family in text_string_to_metric_families(await kube.get_text("/metrics")):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels.get("verb") in WRITE_VERBS:
                name = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
                writes[name] = writes.get(name, 0.0) + sample.value
    return writes


def per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> str:
    changes = {name: (after.get(name, 0.0) - before.get(name, 0.0)) / jobs for name in after}
    shown = sorted(((name, count) for name, count in changes.items() if count >= 0.05), key=lambda item: -item[1])
    total = sum(count for _, count in shown)
    return f"{total:5.2f}  (" + ", ".join(f"{name} {count:.2f}" for name, count in shown) + ")"


def writes_per_job(metrics_url: str, jobs: int) -> dict[str, float]:
    """The operator's own count of its API writes (onair_operator_api_writes_total), per job."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    writes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "onair_operator_api_writes":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    name = f"{sample.labels['verb']} {sample.labels['resource']}"
                    writes[name] = writes.get(name, 0.0) + sample.value / jobs
    return writes


def reconciles_per_job(metrics_url: str, jobs: int) -> str:
    """How many reconciles the operator ran per job, and how long one took on average."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    count = seconds = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "onair_operator_reconcile_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    count += sample.value
                elif sample.name.endswith("_sum"):
                    seconds += sample.value
    return f"{count / jobs:.2f} per job, {1000 * seconds / max(count, 1):.0f} ms each on average"


async def run(info: PlatformInfo, operator_kubeconfig: Path, jobs: int, rss_jobs: int, state: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from cluster.conftest import KWOK_PLACEMENT, start_operator, stop_operator

    kube = KubeClient(Credentials.from_kubeconfig(info.kubeconfig), connections=CONCURRENCY)
    try:
        await ensure_namespace(kube, "onair-system")
        await kube.create(resource_path(API_VERSION, "jobtemplates", "onair-system"),
                          {"apiVersion": API_VERSION, "kind": "JobTemplate", "metadata": {"name": "bench"},
                           "spec": TEMPLATE})
        say(f"write bound: {jobs} Pod creates + {jobs} status patches, {CONCURRENCY} in flight")
        bound, bound_writes, bound_cpu = await write_bound(kube, jobs)
        say(f"write bound: {bound:.2f}s")

        # The namespace exists before the operator starts, as in a cluster.
        await ensure_namespace(kube, "bench-op")
        await kube.create(resource_path("v1", "secrets", "bench-op"),
                          {"metadata": {"name": "onair-s3-credentials"},
                           "stringData": {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}})
        operator = start_operator(info, state / "operator", name="bench-operator",
                                  KUBECONFIG=str(operator_kubeconfig),
                                  ONAIR_WATCH_NAMESPACES=json.dumps(["bench-op"]), ONAIR_WORKERS="128",
                                  **KWOK_PLACEMENT)
        pid = operator.process.running_pid()
        assert pid is not None
        try:
            say(f"operator: creating {jobs} LiveJobs at once")
            before = await apiserver_writes(kube)
            started, started_wall, cpu_before = time.monotonic(), time.time(), cpu_by_program()
            await create_jobs(kube, "bench-op", [f"job-{i:05d}" for i in range(jobs)])
            operator_seconds = await wait_all_waiting(kube, "bench-op", jobs, started, timeout=1800)
            operator_cpu = cpu_used_since(cpu_before)
            # Less the LiveJob creates themselves, which the bound's run made before its clock started.
            after = await apiserver_writes(kube)
            after["livejobs"] = after.get("livejobs", 0.0) - jobs
            operator_writes = per_job(before, after, jobs)
            rss_small = rss_mb(pid)
            timeline = await stages(kube, "bench-op", started_wall)
            writes = writes_per_job(operator.metrics_url, jobs)
            reconciles = reconciles_per_job(operator.metrics_url, jobs)
            say(f"operator: {operator_seconds:.2f}s, RSS {rss_small:.0f} MB")
            rss_large = float("nan")
            if rss_jobs > jobs:
                say(f"creating {rss_jobs - jobs} more LiveJobs for the RSS measurement")
                started_large = time.monotonic()
                names = [f"job-{i:05d}" for i in range(jobs, rss_jobs)]
                await create_jobs(kube, "bench-op", names)
                await wait_all_waiting(kube, "bench-op", rss_jobs, started_large, timeout=3600)
                rss_large = rss_mb(pid)
        finally:
            stop_operator(operator)
    finally:
        await kube.close()
    print()
    print(f"jobs                                : {jobs}")
    print(f"write bound (plain async client)    : {bound:8.2f} s  ({jobs} Pod creates + {jobs} status patches)")
    print(f"operator (create -> WaitingForInput): {operator_seconds:8.2f} s")
    print(f"ratio operator / write bound        : {operator_seconds / bound:8.2f}   (goal <= 1.5)")
    print(f"operator writes per job             : {sum(writes.values()):8.2f}   "
          f"({', '.join(f'{name} {count:.2f}' for name, count in sorted(writes.items()))})")
    print(f"operator reconciles                 : {reconciles}")
    print(f"API-server writes per job, bound    : {bound_writes}")
    print(f"API-server writes per job, operator : {operator_writes}")
    print(f"CPU seconds by program, bound       : {bound_cpu}")
    print(f"CPU seconds by program, operator    : {operator_cpu}")
    print("when each step happened (s after the creates began):")
    print(timeline)
    print(f"operator RSS with {jobs:>6} jobs        : {rss_small:8.0f} MB")
    if rss_jobs > jobs:
        print(f"operator RSS with {rss_jobs:>6} jobs        : {rss_large:8.0f} MB  (goal <= 200 MB)")


def install_crds(info: PlatformInfo) -> None:
    env = {**os.environ, **info.env()}
    subprocess.run(["kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")],
                   check=True, capture_output=True, env=env)
    subprocess.run(["kubectl", "wait", "--for=condition=Established", "--timeout=60s", "crd/livejobs.onair.dev",
                    "crd/jobtemplates.onair.dev"], check=True, capture_output=True, env=env)


def operator_identity(platform: LocalPlatform, info: PlatformInfo, state: Path) -> Path:
    """The chart's ServiceAccount and RBAC for the operator (rendered by helm), and a kubeconfig with a
    token of that ServiceAccount."""
    env = {**os.environ, **info.env()}
    rbac = subprocess.run(["helm", "template", "onair", str(ROOT / "charts" / "onair"), "--namespace", "onair-system",
                           "--show-only", "templates/operator-rbac.yaml",
                           "--set", "operator.watchNamespaces={bench-op}"],
                          check=True, capture_output=True, text=True, env=env).stdout
    # With the watched namespace named, the chart binds the operator's rights in it: it must exist.
    for namespace in ("onair-system", "bench-op"):
        subprocess.run(["kubectl", "create", "namespace", namespace], check=True, capture_output=True, env=env)
    subprocess.run(["kubectl", "apply", "-f", "-"], input=rbac, check=True, capture_output=True, text=True, env=env)
    return platform.service_account_kubeconfig(info, "onair-system", "onair-operator", state / "operator.kubeconfig")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rss-jobs", type=int, default=10000, help="0 to skip the large RSS measurement")
    args = parser.parse_args()
    # A TERM (a timeout, Ctrl-C's cousin) still runs the finally blocks that stop what we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state = Path(tempfile.mkdtemp(prefix="onair-bench-"))
    platform = LocalPlatform(state / "platform", kwok_nodes=2)
    info = platform.up()
    try:
        install_crds(info)
        kubeconfig = operator_identity(platform, info, state)
        asyncio.run(run(info, kubeconfig, args.jobs, args.rss_jobs, state))
    finally:
        platform.down()


if __name__ == "__main__":
    main()
