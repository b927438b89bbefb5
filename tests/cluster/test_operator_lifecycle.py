"""The operator against the real API server, with encoder Pods on kwok's simulated nodes: children,
phases driven by Pod states, restarts, switching off and on, deletion, validation, metrics."""

from __future__ import annotations

import base64
import subprocess
import urllib.request
from collections.abc import Callable
from typing import Any

from cluster.conftest import RunningOperator, get_job, wait_phase
from kubernetes import client
from waiting import wait_until

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def live_job_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob", "metadata": {"name": name},
        "spec": {"jobTemplateId": 7, "input": {"serverType": "RTMP"},
                 "destination": {"bucket": "onair", "path": f"live/{name}"}, **spec},
    }


def create_live_job(kube: client.ApiClient, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "onair.dev", "v1alpha1", namespace, "livejobs", live_job_manifest(name, **spec))


def patch_spec(kube: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        "onair.dev", "v1alpha1", namespace, "livejobs", name, {"spec": spec})


def encoder_pods(kube: client.ApiClient, namespace: str, job: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"onair.dev/job={job}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def test_live_job_gets_its_children_and_waits_for_input(kube: client.ApiClient, kwok_namespace: str) -> None:
    created = create_live_job(kube, kwok_namespace, "news")
    job = wait_phase(kube, kwok_namespace, "news", "WaitingForInput")
    status = job["status"]
    assert [t["phase"] for t in status["timings"]] == ["Pending", "Provisioning", "WaitingForInput"]
    assert status["observedGeneration"] == created["metadata"]["generation"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["EncoderRunning"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["TemplateResolved"]["status"] == "True"

    core = client.CoreV1Api(kube)
    pod = core.read_namespaced_pod(status["resourceName"], kwok_namespace)
    assert pod.metadata.name.startswith("news-encoder-")
    assert pod.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert pod.spec.automount_service_account_token is False
    secret = core.read_namespaced_secret(status["streamKeySecret"], kwok_namespace)
    stream_key = base64.b64decode(secret.data["streamKey"]).decode()
    assert len(stream_key) == 36
    assert stream_key not in str(status)  # the key never shows in status
    service = core.read_namespaced_service(status["serviceName"], kwok_namespace)
    assert {p.name for p in service.spec.ports} == {"rtmp", "srt", "preview"}
    # The test operator names the Pod IP (ONAIR_INGEST_ADDRESS=pod-ip): the dev platform has no Service proxy.
    assert status["urls"]["rtmpServer"] == f"rtmp://{pod.status.pod_ip}:1935/live/"
    assert status["urls"]["outputManifests"].keys() == {"360p", "180p"}


def test_deleted_encoder_pod_is_replaced_and_counted(kube: client.ApiClient, kwok_namespace: str) -> None:
    create_live_job(kube, kwok_namespace, "replace-me")
    first = wait_phase(kube, kwok_namespace, "replace-me", "WaitingForInput")["status"]["resourceName"]
    client.CoreV1Api(kube).delete_namespaced_pod(first, kwok_namespace)
    job = wait_until(
        lambda: (j := get_job(kube, kwok_namespace, "replace-me"))["status"].get("restarts") == 1
        and j["status"]["phase"] == "WaitingForInput" and j,
        60, "a replacement encoder")
    assert job["status"]["resourceName"] != first
    assert job["status"]["attempt"] == 2
    assert [p.metadata.name for p in encoder_pods(kube, kwok_namespace, "replace-me")] == [
        job["status"]["resourceName"]]
    assert "Provisioning" in [t["phase"] for t in job["status"]["timings"][3:]]


def test_deleted_recorder_pod_is_replaced_and_counted(kube: client.ApiClient, kwok_namespace: str) -> None:
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "onair.dev", "v1alpha1", kwok_namespace, "recordjobs", {
            "apiVersion": "onair.dev/v1alpha1", "kind": "RecordJob", "metadata": {"name": "tape"},
            "spec": {"source": {"streamUrl": "rtmp://origin.example/live/tape"}, "output": {"bucket": "onair"}}})

    def recording() -> dict[str, Any] | None:
        job = get_job(kube, kwok_namespace, "tape", "recordjobs")
        ready = [c for c in job.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
        return job if ready and ready[0]["status"] == "True" else None

    first = wait_until(recording, 60, "a recording recorder")["status"]["resourceName"]
    client.CoreV1Api(kube).delete_namespaced_pod(first, kwok_namespace, grace_period_seconds=0)
    job = wait_until(lambda: (j := recording()) and j["status"].get("retries") == 1 and j, 60, "a replacement recorder")
    assert job["status"]["resourceName"] != first and job["status"]["phase"] == "Started"
    assert [p.metadata.name for p in encoder_pods(kube, kwok_namespace, "tape")] == [job["status"]["resourceName"]]


def test_crash_looping_encoder_ends_failed(kube: client.ApiClient, kwok_namespace: str) -> None:
    """Each attempt's Pod reports a crash (as a kubelet would); after max restarts the job fails."""
    create_live_job(kube, kwok_namespace, "crashy")
    core = client.CoreV1Api(kube)
    crashed: set[str] = set()

    def crash_current() -> dict[str, Any] | None:
        job = get_job(kube, kwok_namespace, "crashy")
        if job.get("status", {}).get("phase") == "Failed":
            return job
        for pod in encoder_pods(kube, kwok_namespace, "crashy"):
            if pod.metadata.name not in crashed and pod.status.phase == "Running":
                core.patch_namespaced_pod_status(pod.metadata.name, kwok_namespace, {"status": {
                    "phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [{"name": "encoder", "image": "x", "imageID": "", "ready": False,
                                           "restartCount": 0,
                                           "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}})
                crashed.add(pod.metadata.name)
        return None

    job = wait_until(crash_current, 120, "the job to fail after repeated crashes", interval=0.3)
    assert job["status"]["restarts"] == 5  # the operator's default ONAIR_MAX_RESTARTS
    ready = {c["type"]: c for c in job["status"]["conditions"]}["EncoderRunning"]
    assert ready["reason"] == "RetriesExhausted"
    assert "exited with code 1" in job["status"]["message"]


def test_switch_off_and_on(kube: client.ApiClient, kwok_namespace: str) -> None:
    create_live_job(kube, kwok_namespace, "toggle")
    first = wait_phase(kube, kwok_namespace, "toggle", "WaitingForInput")["status"]["resourceName"]
    patch_spec(kube, kwok_namespace, "toggle", {"online": False})
    wait_phase(kube, kwok_namespace, "toggle", "Offline")
    wait_until(lambda: not encoder_pods(kube, kwok_namespace, "toggle"), 30, "the encoder Pod to go")
    patch_spec(kube, kwok_namespace, "toggle", {"online": True})
    job = wait_phase(kube, kwok_namespace, "toggle", "WaitingForInput")
    assert job["status"]["resourceName"] != first
    phases = [t["phase"] for t in job["status"]["timings"]]
    assert phases[-5:] == ["WaitingForInput", "Stopping", "Offline", "Provisioning", "WaitingForInput"]


def test_a_job_the_crd_lets_through_and_the_operator_refuses_reads_failed_naming_the_field(
        kube: client.ApiClient, kwok_namespace: str) -> None:
    """A CRD older than the operator (helm upgrade leaves CRDs as they were) can store a spec the operator's
    model refuses; here a finish time UTC cannot hold, which the CRD's date-time format accepts."""
    create_live_job(kube, kwok_namespace, "year-9999", schedule={"finishDateTime": "9999-12-31T23:59:59-01:00"})
    job = wait_phase(kube, kwok_namespace, "year-9999", "Failed")
    status = job["status"]
    assert status["message"].startswith("invalid spec: spec.schedule.finishDateTime: must be a time within"), status
    assert status["finishedAt"] and status["timings"][-1]["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SpecInvalid")
    assert not encoder_pods(kube, kwok_namespace, "year-9999")


def test_deleting_a_job_deletes_its_children(kube: client.ApiClient, kwok_namespace: str) -> None:
    create_live_job(kube, kwok_namespace, "short-lived")
    status = wait_phase(kube, kwok_namespace, "short-lived", "WaitingForInput")["status"]
    client.CustomObjectsApi(kube).delete_namespaced_custom_object("onair.dev", "v1alpha1", kwok_namespace,
                                                                  "livejobs", "short-lived")
    core = client.CoreV1Api(kube)

    def children_gone() -> bool:
        pods = encoder_pods(kube, kwok_namespace, "short-lived")
        secrets = [s for s in core.list_namespaced_secret(kwok_namespace).items
                   if s.metadata.name == status["streamKeySecret"]]
        services = [s for s in core.list_namespaced_service(kwok_namespace).items
                    if s.metadata.name == status["serviceName"]]
        return not pods and not secrets and not services

    wait_until(children_gone, 60, "garbage collection of the job's Pod, Secret and Service")


def test_missing_template_keeps_job_pending_until_it_appears(kube: client.ApiClient, kwok_namespace: str) -> None:
    create_live_job(kube, kwok_namespace, "early", jobTemplateId=99)
    job = wait_until(lambda: (j := get_job(kube, kwok_namespace, "early")).get("status", {}).get("conditions") and j,
                     30, "a status")
    assert job["status"]["phase"] == "Pending"
    resolved = {c["type"]: c for c in job["status"]["conditions"]}["TemplateResolved"]
    assert resolved["reason"] == "TemplateNotFound" and "99" in resolved["message"]
    template = {"apiVersion": "onair.dev/v1alpha1", "kind": "JobTemplate", "metadata": {"name": "late"},
                "spec": {"id": 99, "name": "late", "renditions": [
                    {"name": "240p", "width": 426, "height": 240, "fps": 25, "videoBitrate": 400000}]}}
    client.CustomObjectsApi(kube).create_namespaced_custom_object("onair.dev", "v1alpha1", kwok_namespace,
                                                                  "jobtemplates", template)
    wait_phase(kube, kwok_namespace, "early", "WaitingForInput")


def test_invalid_manifests_are_refused_naming_the_field(kubectl: Kubectl, kwok_namespace: str) -> None:
    import json

    cases = {
        "spec.input.serverType": {"input": {"serverType": "FTP"}},
        "spec.input.url": {"input": {"serverType": "HLS"}},
        "spec.destination.bucket": {"destination": {"bucket": "Not_A_Bucket"}},
        "spec.callbackUrl": {"callbackUrl": "ftp://example.com/hook"},
    }
    for field, override in cases.items():
        manifest = live_job_manifest("bad")
        manifest["spec"].update(override)
        result = kubectl("apply", "-n", kwok_namespace, "-f", "-", input=json.dumps(manifest), check=False)
        assert result.returncode != 0, field
        assert field in result.stderr, (field, result.stderr)
    # Names the Pods' labels and the ingest Service could not carry are refused, not retried for ever.
    for name in ("x" * 64, "studio.one"):
        manifest = live_job_manifest(name)
        result = kubectl("apply", "-n", kwok_namespace, "-f", "-", input=json.dumps(manifest), check=False)
        assert result.returncode != 0 and "metadata.name" in result.stderr, (name, result.stderr)
    accepted = live_job_manifest("x" * 63)
    kubectl("apply", "--dry-run=server", "-n", kwok_namespace, "-f", "-", input=json.dumps(accepted))
    # A template transcodes a recorded stream; a recording of a LiveJob keeps its renditions.
    recording = {"apiVersion": "onair.dev/v1alpha1", "kind": "RecordJob", "metadata": {"name": "cut"},
                 "spec": {"source": {"liveJobRef": "news"}, "output": {"bucket": "media"}, "jobTemplateId": 2}}
    result = kubectl("apply", "--dry-run=server", "-n", kwok_namespace, "-f", "-", input=json.dumps(recording),
                     check=False)
    assert result.returncode != 0 and "spec.jobTemplateId" in result.stderr, result.stderr
    recording["spec"]["source"] = {"streamUrl": "rtmp://origin.example.com/live/news"}
    kubectl("apply", "--dry-run=server", "-n", kwok_namespace, "-f", "-", input=json.dumps(recording))


def test_frozen_fields_cannot_change_while_running(kubectl: Kubectl, kube: client.ApiClient,
                                                   kwok_namespace: str) -> None:
    create_live_job(kube, kwok_namespace, "frozen")
    wait_phase(kube, kwok_namespace, "frozen", "WaitingForInput")
    result = kubectl("patch", "livejob", "frozen", "-n", kwok_namespace, "--type=merge",
                     "-p", '{"spec":{"destination":{"bucket":"elsewhere"}}}', check=False)
    assert result.returncode != 0
    assert "spec.destination" in result.stderr and "online" in result.stderr


def test_metrics_count_jobs_by_phase(kube: client.ApiClient, kwok_namespace: str,
                                     kwok_operator: RunningOperator) -> None:
    create_live_job(kube, kwok_namespace, "counted")
    wait_phase(kube, kwok_namespace, "counted", "WaitingForInput")

    def scrape() -> str:
        with urllib.request.urlopen(kwok_operator.metrics_url, timeout=5) as response:
            return response.read().decode()

    text = wait_until(lambda: (t := scrape()) and 'onair_jobs{kind="LiveJob",phase="WaitingForInput"}' in t and t,
                      10, "the jobs-by-phase gauge")
    assert 'onair_operator_reconciles_total{kind="LiveJob",result="ok"}' in text
    assert "onair_operator_reconcile_duration_seconds_bucket" in text


def test_a_job_re_created_with_the_same_name_gets_its_own_secret(kube: client.ApiClient,
                                                                  kwok_namespace: str) -> None:
    """The old job's Secret lingers (a finalizer here; a slow garbage collector in life): the new job
    must not take it for its own, with the old keys and the old owner."""
    core = client.CoreV1Api(kube)
    api = client.CustomObjectsApi(kube)
    old = create_live_job(kube, kwok_namespace, "again")
    old_secret = wait_phase(kube, kwok_namespace, "again", "WaitingForInput")["status"]["streamKeySecret"]
    core.patch_namespaced_secret(old_secret, kwok_namespace, {"metadata": {"finalizers": ["onair.dev/test-hold"]}})
    try:
        api.delete_namespaced_custom_object("onair.dev", "v1alpha1", kwok_namespace, "livejobs", "again")

        def job_gone() -> bool:
            try:
                get_job(kube, kwok_namespace, "again")
            except client.ApiException as error:
                return error.status == 404
            return False

        wait_until(job_gone, 30, "the old job to be deleted")
        new = create_live_job(kube, kwok_namespace, "again")
        status = wait_phase(kube, kwok_namespace, "again", "WaitingForInput")["status"]
        secret = core.read_namespaced_secret(status["streamKeySecret"], kwok_namespace)
        assert secret.metadata.owner_references[0].uid == new["metadata"]["uid"] != old["metadata"]["uid"]
        assert secret.metadata.deletion_timestamp is None
        pod = core.read_namespaced_pod(status["resourceName"], kwok_namespace)
        env = {e.name: e for e in pod.spec.containers[0].env}
        assert env["ONAIR_STREAM_KEY"].value_from.secret_key_ref.name == secret.metadata.name
        old_key = base64.b64decode(core.read_namespaced_secret(old_secret, kwok_namespace).data["streamKey"])
        assert base64.b64decode(secret.data["streamKey"]) != old_key
    finally:
        core.patch_namespaced_secret(old_secret, kwok_namespace, {"metadata": {"finalizers": None}})


def test_a_running_encoder_outlives_its_template(kube: client.ApiClient, kwok_namespace: str) -> None:
    """The JobTemplate goes (deleted, then made ambiguous by two of the same id): the running encoder
    keeps running and the job keeps its phase; TemplateResolved says what is wrong."""
    api = client.CustomObjectsApi(kube)
    create_live_job(kube, kwok_namespace, "orphan")
    job = wait_phase(kube, kwok_namespace, "orphan", "WaitingForInput")
    pod_name = job["status"]["resourceName"]

    def template_condition(reason: str) -> dict[str, Any] | None:
        status = get_job(kube, kwok_namespace, "orphan")["status"]
        resolved = {c["type"]: c for c in status["conditions"]}["TemplateResolved"]
        return status if resolved["reason"] == reason else None

    api.delete_namespaced_custom_object("onair.dev", "v1alpha1", kwok_namespace, "jobtemplates", "small-ladder")
    gone = wait_until(lambda: template_condition("TemplateNotFound"), 30, "TemplateResolved=False")
    ladder = {"apiVersion": "onair.dev/v1alpha1", "kind": "JobTemplate",
              "spec": {"id": 7, "name": "twin", "renditions": [
                  {"name": "240p", "width": 426, "height": 240, "fps": 25, "videoBitrate": 400000}]}}
    for name in ("twin-a", "twin-b"):
        api.create_namespaced_custom_object("onair.dev", "v1alpha1", kwok_namespace, "jobtemplates",
                                            {**ladder, "metadata": {"name": name}})
    ambiguous = wait_until(lambda: template_condition("TemplateAmbiguous"), 30, "TemplateAmbiguous")
    for status in (gone, ambiguous):
        assert status["phase"] == "WaitingForInput"
        assert status["resourceName"] == pod_name
        assert "Failed" not in [t["phase"] for t in status["timings"]]
    assert [p.metadata.name for p in encoder_pods(kube, kwok_namespace, "orphan")] == [pod_name]
