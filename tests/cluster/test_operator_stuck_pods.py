"""An encoder Pod that can never start (no node for it, its image cannot be pulled) fails its LiveJob
after the provisioning timeout instead of leaving it Provisioning forever; one the API server refuses
(a ResourceQuota) is asked for again, and the job says why meanwhile. Each test runs its own
operator (namespaces s-*) with a provisioning timeout of a few seconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster.conftest import KWOK_PLACEMENT, get_job, own_job_namespace, start_operator, stop_operator, wait_phase
from cluster.test_operator_lifecycle import create_live_job
from cluster.test_operator_recordjobs import create_record_job
from kubernetes import client
from localplatform.platform import PlatformInfo
from waiting import wait_until

from onair.operator import naming

TIMEOUT = "3"


@pytest.fixture
def stuck_namespace(kube: client.ApiClient, platform: PlatformInfo, crds: None,
                    operator_namespace: str) -> Iterator[str]:
    with own_job_namespace(kube, platform, "s") as name:
        yield name


def job_events(kube: client.ApiClient, namespace: str, job: str) -> dict[str, str]:
    events = client.CoreV1Api(kube).list_namespaced_event(namespace).items
    return {e.reason: e.message for e in events if e.involved_object.name == job}


def assert_failed_naming(kube: client.ApiClient, namespace: str, job: dict[str, Any], reason: str,
                         detail: str) -> None:
    status = job["status"]
    assert status["timings"][-1]["reason"] == reason
    assert reason in status["message"] and detail in status["message"], status["message"]
    running = {c["type"]: c for c in status["conditions"]}["EncoderRunning"]
    assert (running["status"], running["reason"]) == ("False", "EncoderStartFailed")
    name = job["metadata"]["name"]
    events = wait_until(lambda: (e := job_events(kube, namespace, name)).keys() >= {reason, "Failed"} and e, 20,
                        f"the {reason} and Failed Events on the job")
    assert detail in events[reason]
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"onair.dev/job={name}").items
    assert all(p.metadata.deletion_timestamp is not None for p in pods)  # the stuck Pod is removed


def test_an_unschedulable_encoder_fails_the_job(kube: client.ApiClient, platform: PlatformInfo, run_root: Path,
                                                stuck_namespace: str) -> None:
    """The real scheduler finds no node with the label the operator asks for."""
    operator = start_operator(platform, run_root / "stuck-unschedulable", name="stuck-unschedulable",
                              ONAIR_WATCH_NAMESPACES=json.dumps(["s-*"]), ONAIR_PROVISIONING_TIMEOUT_SECONDS=TIMEOUT,
                              ONAIR_ENCODER_NODE_SELECTOR=json.dumps({"onair.dev/no-such-node": "true"}))
    try:
        create_live_job(kube, stuck_namespace, "nowhere")
        job = wait_phase(kube, stuck_namespace, "nowhere", "Failed", timeout=60)
        assert "Provisioning" in [t["phase"] for t in job["status"]["timings"]]
        assert_failed_naming(kube, stuck_namespace, job, "Unschedulable", "node(s)")
        scheduled = {c["type"]: c for c in job["status"]["conditions"]}["Scheduled"]
        assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    finally:
        stop_operator(operator)


def test_an_image_that_cannot_be_pulled_fails_the_job(kube: client.ApiClient, platform: PlatformInfo,
                                                      run_root: Path, stuck_namespace: str) -> None:
    """The Pod's container reports ImagePullBackOff (written here as a kubelet would: kwok's nodes pull
    nothing). Its phase stays Running so that kwok's pod-ready stage leaves the status alone."""
    operator = start_operator(platform, run_root / "stuck-image", name="stuck-image",
                              ONAIR_WATCH_NAMESPACES=json.dumps(["s-*"]), ONAIR_PROVISIONING_TIMEOUT_SECONDS=TIMEOUT,
                              **KWOK_PLACEMENT)
    try:
        create_live_job(kube, stuck_namespace, "no-image")
        pod_name = wait_phase(kube, stuck_namespace, "no-image", "WaitingForInput")["status"]["resourceName"]
        message = 'Back-off pulling image "ghcr.io/onair-dev/onair:0.1.0"'
        client.CoreV1Api(kube).patch_namespaced_pod_status(pod_name, stuck_namespace, {"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{"name": "encoder", "image": "ghcr.io/onair-dev/onair:0.1.0", "imageID": "",
                                   "ready": False, "restartCount": 0,
                                   "state": {"waiting": {"reason": "ImagePullBackOff", "message": message}}}]}})
        job = wait_phase(kube, stuck_namespace, "no-image", "Failed", timeout=60)
        assert_failed_naming(kube, stuck_namespace, job, "ImagePullBackOff", message)
        assert get_job(kube, stuck_namespace, "no-image")["status"]["phase"] == "Failed"
    finally:
        stop_operator(operator)


def test_an_encoder_pod_a_quota_refuses_is_said_in_the_job_and_made_once_the_quota_allows(
        kube: client.ApiClient, platform: PlatformInfo, run_root: Path, stuck_namespace: str) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_resource_quota(stuck_namespace, {"metadata": {"name": "no-pods"},
                                                            "spec": {"hard": {"pods": "0"}}})
    operator = start_operator(platform, run_root / "stuck-quota", name="stuck-quota",
                              ONAIR_WATCH_NAMESPACES=json.dumps(["s-*"]), **KWOK_PLACEMENT)
    try:
        create_live_job(kube, stuck_namespace, "over-quota")
        create_record_job(kube, stuck_namespace, "recording-over-quota",
                          {"source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"}})

        def refused() -> dict[str, Any] | None:
            conditions = (get_job(kube, stuck_namespace, "over-quota").get("status") or {}).get("conditions") or []
            ready = {c["type"]: c for c in conditions}.get("Ready")
            return ready if ready is not None and ready["reason"] == "PodRefused" else None

        ready = wait_until(refused, 30, "Ready: PodRefused on the job")
        # "exceeded quota: no-pods, ..." (or "status unknown for quota: no-pods" before the quota's first count)
        assert ready["status"] == "False" and "quota: no-pods" in ready["message"], ready
        assert "quota: no-pods" in get_job(kube, stuck_namespace, "over-quota")["status"]["message"]
        events = wait_until(lambda: (e := job_events(kube, stuck_namespace, "over-quota")).get("FailedCreate") and e,
                            20, "a FailedCreate Event on the job")
        assert "quota: no-pods" in events["FailedCreate"]
        # A recording that has no recorder has not started (nor said so to its notifyUrl).
        recording = wait_until(
            lambda: (j := get_job(kube, stuck_namespace, "recording-over-quota", "recordjobs")).get("status") and any(
                c["reason"] == "PodRefused" for c in j["status"].get("conditions", [])) and j,
            30, "Ready: PodRefused on the RecordJob")
        assert recording["status"]["phase"] == "Initial" and "startedAt" not in recording["status"]
        core.delete_namespaced_resource_quota("no-pods", stuck_namespace)
        job = wait_phase(kube, stuck_namespace, "over-quota", "WaitingForInput", timeout=60)
        assert "Failed" not in [t["phase"] for t in job["status"]["timings"]]
        wait_phase(kube, stuck_namespace, "recording-over-quota", "Started", timeout=60, plural="recordjobs")
    finally:
        stop_operator(operator)


def test_an_ingest_service_and_key_secret_a_quota_refuses_are_said_and_made_once_it_allows(
        kube: client.ApiClient, platform: PlatformInfo, run_root: Path, stuck_namespace: str) -> None:
    """The job still runs and reports its status meanwhile (a refused child once stopped every status
    write of it), with a FailedCreate Event naming the child, and status names neither. Both are made
    once the quota allows, by an operator that started after the refusals (a restart, a failover): the
    status, not the memory of the operator that was refused, says they are missing."""
    core = client.CoreV1Api(kube)
    core.create_namespaced_resource_quota(stuck_namespace, {"metadata": {"name": "no-services"},
                                                            "spec": {"hard": {"services": "0", "secrets": "0"}}})
    operator = start_operator(platform, run_root / "stuck-service", name="stuck-service",
                              ONAIR_WATCH_NAMESPACES=json.dumps(["s-*"]), **KWOK_PLACEMENT)
    try:
        create_live_job(kube, stuck_namespace, "no-ingest")

        def refusals() -> list[str]:
            return [e.message for e in core.list_namespaced_event(stuck_namespace).items
                    if e.involved_object.name == "no-ingest" and e.reason == "FailedCreate"]

        job = wait_phase(kube, stuck_namespace, "no-ingest", "WaitingForInput", timeout=60)
        uid = job["metadata"]["uid"]
        service, secret = naming.service_name("no-ingest", uid), naming.stream_key_secret_name("no-ingest", uid)
        messages = wait_until(lambda: (m := refusals()) and any(f"Service {service}" in text for text in m) and m,
                              30, "a FailedCreate Event naming the Service")
        assert any(f"Secret {secret}" in text and "quota: no-services" in text for text in messages), messages
        status = get_job(kube, stuck_namespace, "no-ingest")["status"]
        assert "serviceName" not in status and "streamKeySecret" not in status, status
    finally:
        stop_operator(operator)
    core.delete_namespaced_resource_quota("no-services", stuck_namespace)
    restarted = start_operator(platform, run_root / "stuck-service-restarted", name="stuck-service-restarted",
                               ONAIR_WATCH_NAMESPACES=json.dumps(["s-*"]), **KWOK_PLACEMENT)
    try:
        wait_until(lambda: {s.metadata.name for s in core.list_namespaced_service(stuck_namespace).items} >= {service},
                   60, f"Service {service} made once the quota is gone")
        wait_until(lambda: secret in {s.metadata.name for s in core.list_namespaced_secret(stuck_namespace).items},
                   60, f"Secret {secret} made once the quota is gone")
        job = wait_until(lambda: (j := get_job(kube, stuck_namespace, "no-ingest"))["status"].get("serviceName")
                         and j["status"].get("streamKeySecret") and j, 30, "status naming the Service and Secret")
        assert (job["status"]["serviceName"], job["status"]["streamKeySecret"]) == (service, secret)
        assert job["status"]["phase"] == "WaitingForInput"
    finally:
        stop_operator(restarted)
