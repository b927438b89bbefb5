"""Two operator replicas with kopf peering: one acts, the other stands by, and takes over when the
first dies (issue 3: "peering so two replicas never both act")."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster.conftest import (
    KWOK_PLACEMENT,
    RunningOperator,
    prepare_job_namespace,
    start_operator,
    stop_operator,
    wait_phase,
)
from kubernetes import client
from localplatform.platform import PlatformInfo
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
LIFETIME = 10  # seconds a replica's heartbeat counts (60 by default)


def reconciles(operator: RunningOperator) -> float:
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(sample.value for family in families if family.name == "onair_operator_reconciles"
               for sample in family.samples if sample.name.endswith("_total"))


def acting(replica: RunningOperator) -> bool:
    """kopf's own word in the replica's log: it resumed after its last pause."""
    log = replica.process.log_file.read_text(errors="replace")
    resumed = log.rfind("Resuming operations after the pause")
    return resumed > max(log.rfind("Pausing operations in favour of"), log.rfind("Pausing all operators"))


def live_job(name: str) -> dict[str, object]:
    return {"apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob", "metadata": {"name": name},
            "spec": {"jobTemplateId": 7, "input": {"serverType": "RTMP"},
                     "destination": {"bucket": "onair", "path": f"peering/{name}"}}}


@pytest.fixture
def peered_namespace(kube: client.ApiClient, platform: PlatformInfo, crds: None, operator_namespace: str,
                     kubectl: Callable[..., Any]) -> Iterator[str]:
    name = f"p-{secrets.token_hex(4)}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    prepare_job_namespace(kube, platform, name)
    peering_crds = ROOT / "charts" / "onair" / "crds" / "kopf-peerings.yaml"
    kubectl("apply", "--server-side", "-f", str(peering_crds))
    wait_until(lambda: _peering_crd_ready(kube), 30, "the kopf peering CRDs")
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "kopf.dev", "v1", name, "kopfpeerings", {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                                                 "metadata": {"name": "onair"}})
    yield name
    client.CoreV1Api(kube).delete_namespace(name, propagation_policy="Background")


def _peering_crd_ready(kube: client.ApiClient) -> bool:
    crd = client.ApiextensionsV1Api(kube).read_custom_resource_definition("kopfpeerings.kopf.dev")
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def test_one_replica_acts_and_the_other_takes_over(platform: PlatformInfo, kube: client.ApiClient,
                                                   peered_namespace: str, run_root: Path) -> None:
    settings = {"ONAIR_STANDALONE": "false", "ONAIR_PEERING_NAME": "onair",
                "ONAIR_PEERING_LIFETIME_SECONDS": str(LIFETIME),
                "ONAIR_WATCH_NAMESPACES": json.dumps([peered_namespace]), **KWOK_PLACEMENT}
    # Fixed priorities (the chart draws them at random), so the test knows which replica must act.
    replicas = [start_operator(platform, run_root / f"peer-{i}-{peered_namespace}", name=f"peer-{i}",
                               ONAIR_PEERING_PRIORITY=str(100 * (i + 1)), **settings)
                for i in range(2)]
    try:
        # kopf starts paused and says "Resuming" when it finds no peer above it, "Pausing" when one
        # appears later. Jobs come once both replicas are in the peering object and only the one with
        # the higher priority (peer-1) has resumed.
        def peers_in_peering_object() -> int:
            peering = client.CustomObjectsApi(kube).get_namespaced_custom_object(
                "kopf.dev", "v1", peered_namespace, "kopfpeerings", "onair")
            return len(peering.get("status") or {})

        try:
            wait_until(lambda: peers_in_peering_object() == 2 and [acting(r) for r in replicas] == [False, True], 90,
                       "both replicas in the peering object and only the higher priority one acting")
        except AssertionError as error:
            raise AssertionError(f"{error}\n" + "\n".join(f"--- peer-{i}:\n{r.log_tail(60)}"
                                                            for i, r in enumerate(replicas))) from None
        before = [reconciles(r) for r in replicas]
        jobs = client.CustomObjectsApi(kube)
        names = [f"job-{i}" for i in range(4)]
        for name in names:
            jobs.create_namespaced_custom_object("onair.dev", "v1alpha1", peered_namespace, "livejobs", live_job(name))
        for name in names:
            wait_phase(kube, peered_namespace, name, "WaitingForInput", timeout=60)
        pods = client.CoreV1Api(kube).list_namespaced_pod(peered_namespace).items
        assert sorted(p.metadata.labels["onair.dev/job"] for p in pods) == names, "exactly one Pod per job"

        counts = [reconciles(r) - b for r, b in zip(replicas, before, strict=True)]
        assert counts[0] == 0 and counts[1] > 0, f"only the higher priority replica reconciled: {counts}"
        standby, leader = replicas

        pid = leader.process.running_pid()
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)  # no goodbye: its peering record has to expire
        jobs.create_namespaced_custom_object("onair.dev", "v1alpha1", peered_namespace, "livejobs",
                                             live_job("after-failover"))
        wait_phase(kube, peered_namespace, "after-failover", "WaitingForInput", timeout=LIFETIME * 3 + 30)
        assert reconciles(standby) > before[replicas.index(standby)]
        assert len(client.CoreV1Api(kube).list_namespaced_pod(peered_namespace).items) == len(names) + 1
    finally:
        for replica in replicas:
            stop_operator(replica)


def test_a_replica_that_stands_by_stops_acting_on_its_own_timers(platform: PlatformInfo, kube: client.ApiClient,
                                                                 peered_namespace: str, run_root: Path) -> None:
    """kopf pauses a replica's event handling when a peer with a higher priority appears; its work queue
    and timers (a schedule's end) must stand by too, or both replicas act."""
    settings = {"ONAIR_STANDALONE": "false", "ONAIR_PEERING_NAME": "onair",
                "ONAIR_PEERING_LIFETIME_SECONDS": str(LIFETIME),
                "ONAIR_WATCH_NAMESPACES": json.dumps([peered_namespace]), **KWOK_PLACEMENT}
    first = start_operator(platform, run_root / f"first-{peered_namespace}", name="first",
                           ONAIR_PEERING_PRIORITY="100", **settings)
    replicas = [first]
    try:
        wait_until(lambda: acting(first), 60, "the first replica to act")
        finish = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=45)
        job = live_job("scheduled")
        job["spec"]["schedule"] = {"finishDateTime": finish.isoformat()}  # type: ignore[index]
        client.CustomObjectsApi(kube).create_namespaced_custom_object("onair.dev", "v1alpha1", peered_namespace,
                                                                      "livejobs", job)
        wait_phase(kube, peered_namespace, "scheduled", "WaitingForInput", timeout=30)  # a timer set for `finish`

        second = start_operator(platform, run_root / f"second-{peered_namespace}", name="second",
                                ONAIR_PEERING_PRIORITY="200", **settings)
        replicas.append(second)
        wait_until(lambda: acting(second) and not acting(first) and
                   "standing by" in first.process.log_file.read_text(errors="replace"), 30,
                   "the second replica to act and the first to stand by")
        assert dt.datetime.now(dt.UTC) < finish - dt.timedelta(seconds=5), "the test's timing no longer holds"
        before = reconciles(first)
        wait_phase(kube, peered_namespace, "scheduled", "Completed", timeout=90)  # the second replica ended it
        assert reconciles(first) == before, "the replica standing by reconciled when its timer fired"
    finally:
        for replica in replicas:
            stop_operator(replica)
