"""The operator's compact caches keep everything the reconciler reads."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from onair.models import RecordJob
from onair.operator.config import OperatorConfig
from onair.operator.controller import (
    COMMAND_RETRY_SECONDS,
    CachedJob,
    CachedPod,
    Controller,
    PackedJson,
    slim_pod,
)
from onair.operator.leadership import Leadership
from onair.operator.pods import pod_state
from onair.operator.reconcile import Decision
from onair.streamkeys import derive_control_key

META: dict[str, Any] = {"name": "news-encoder-1", "namespace": "t", "uid": "u1", "resourceVersion": "7",
        "labels": {"onair.dev/job": "news"}, "managedFields": [{"manager": "kwok"}]}
RUNNING: dict[str, Any] = {
    "metadata": META, "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "encoder", "image": "x"}]},
    "status": {"phase": "Running", "podIP": "127.2.0.9", "hostIP": "127.0.0.1", "qosClass": "Burstable",
               "conditions": [{"type": "Initialized", "status": "True"},
                              {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                              {"type": "PodScheduled", "status": "True"}],
               "containerStatuses": [{"name": "encoder", "ready": True, "restartCount": 0, "image": "x",
                                      "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]},
}
FAILED = {**RUNNING, "status": {"phase": "Failed", "containerStatuses": [{"name": "encoder", "state": {
    "terminated": {"exitCode": 2, "message": "bad config", "finishedAt": "2026-01-01T00:01:00Z"}}}]}}
UNSCHEDULABLE = {**RUNNING, "spec": {}, "status": {"phase": "Pending", "conditions": [
    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available"}]}}
WAITING = {**RUNNING, "status": {"phase": "Pending", "containerStatuses": [
    {"name": "encoder", "state": {"waiting": {"reason": "CreateContainerConfigError"}}}]}}
DELETING = {**RUNNING, "metadata": {**META, "deletionTimestamp": "2026-01-01T00:02:00Z"}}


@pytest.mark.parametrize("pod", [RUNNING, FAILED, UNSCHEDULABLE, WAITING, DELETING],
                         ids=["running", "failed", "unschedulable", "waiting", "deleting"])
def test_cached_pods_read_the_same_as_whole_ones(pod: dict[str, Any]) -> None:
    cached = CachedPod.of(copy.deepcopy(pod))
    assert pod_state(cached.body()) == pod_state(pod)
    assert cached.resource_version == 7 and cached.body() == slim_pod(pod)



def test_cached_jobs_keep_the_body_but_not_managed_fields() -> None:
    body: dict[str, Any] = {"apiVersion": "onair.dev/v1alpha1", "kind": "RecordJob",
            "metadata": {"name": "clip", "namespace": "t", "uid": "u2", "resourceVersion": "41",
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"source": {"liveJobRef": "news"}, "output": {"bucket": "media"}},
            "status": {"phase": "Started", "progress": 0.5}}
    cached = CachedJob.of(body)
    assert (cached.uid, cached.resource_version, cached.phase, cached.deleting, cached.live_job_ref) == \
        ("u2", 41, "Started", False, "news")
    expected = copy.deepcopy(body)
    del expected["metadata"]["managedFields"]
    assert cached.body() == expected
    assert cached.body() is not cached.body()  # each reconcile gets its own copy to change
    fresh = CachedJob.of({**body, "metadata": {**body["metadata"], "deletionTimestamp": "x"}, "status": {}})
    assert fresh.deleting and fresh.phase == "Unknown"


def test_packed_json_gives_back_exactly_what_was_packed() -> None:
    packer = PackedJson()
    first = {"kind": "LiveJob", "metadata": {"name": "news"}, "status": {"phase": "Live"}}
    bigger_than_the_window = {"kind": "LiveJob", "spec": {"description": "ü" * 20_000},
                              "status": {"timings": [{"n": i} for i in range(500)]}}
    others = [first, {"kind": "LiveJob", "metadata": {"name": "sport"}}, bigger_than_the_window, {}, {"é": None}]
    packed = [packer.pack(obj) for obj in others]
    assert [packer.unpack(p) for p in packed] == others
    # Objects like the first (the dictionary) pack small: that is the point of the cache.
    like_first = {**first, "metadata": {"name": "weather"}}
    assert len(packer.pack(like_first)) < len(json.dumps(like_first)) / 2


async def test_jobs_that_come_and_go_leave_nothing_behind() -> None:
    controller = Controller(None, OperatorConfig(stream_key_seed="unit-test-stream-key-seed-0123456789"))  # type: ignore[arg-type]
    labels = {"onair.dev/job": "news", "onair.dev/kind": "LiveJob"}
    pod = {**RUNNING, "metadata": {**META, "labels": labels}}
    controller.on_pod_event("ADDED", pod)
    assert list(controller.pods) == [("LiveJob", "t", "news")]
    record = {"apiVersion": "onair.dev/v1alpha1", "kind": "RecordJob",
              "metadata": {"name": "clip", "namespace": "t", "uid": "u2", "resourceVersion": "3"},
              "spec": {"source": {"liveJobRef": "news"}, "output": {"bucket": "media"}}}
    controller.on_job_event("RecordJob", "ADDED", record)
    assert controller.recordings_of == {("t", "news"): {("RecordJob", "t", "clip")}}

    controller.on_pod_event("DELETED", pod)
    controller.on_job_event("RecordJob", "DELETED", record)
    assert controller.pods == {} and controller.recordings_of == {} and controller.jobs == {}


async def test_a_standby_replica_reports_no_jobs_and_no_queue() -> None:
    """The acting replica counts; a standby's caches are not kept current, so it reports nothing."""
    leadership = Leadership(None, standalone=False, peering_name="onair", priority=0, own_id="b")  # type: ignore[arg-type]
    leadership.active.set()
    controller = Controller(None, OperatorConfig(stream_key_seed="unit-test-stream-key-seed-0123456789"),  # type: ignore[arg-type]
                            leadership=leadership)
    job = {"apiVersion": "onair.dev/v1alpha1", "kind": "RecordJob",
           "metadata": {"name": "clip", "namespace": "t", "uid": "u2", "resourceVersion": "3"},
           "spec": {"source": {"liveJobRef": "news"}, "output": {"bucket": "media"}}}
    controller.on_job_event("RecordJob", "ADDED", job)
    assert list(controller.phase_counts()) and controller.queue_depth() == 1
    leadership.active.clear()  # another replica took over
    assert list(controller.phase_counts()) == [] and controller.queue_depth() == 0


async def test_a_deleted_job_with_a_webhook_url_announces_its_deletion() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    class Sender:
        def send(self, url: str, payload: dict[str, Any], report: Any) -> None:
            sent.append((url, payload))

    controller = Controller(None, OperatorConfig(stream_key_seed="unit-test-stream-key-seed-0123456789"))  # type: ignore[arg-type]
    controller.webhooks = Sender()  # type: ignore[assignment]
    live = {"apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
            "metadata": {"name": "news", "namespace": "t", "uid": "u1", "resourceVersion": "9"},
            "spec": {"jobTemplateId": 1, "destination": {"bucket": "media"},
                     "callbackUrl": "https://receiver.example/hook"},
            "status": {"phase": "Live"}}
    controller.on_job_event("LiveJob", "ADDED", live)
    assert sent == []
    controller.on_job_event("LiveJob", "DELETED", live)
    controller.on_job_event("LiveJob", "DELETED", live)  # a status write's 404, then the watch
    assert [(url, payload["type"], payload["job"]["phase"]) for url, payload in sent] == [
        ("https://receiver.example/hook", "livejob.deleted", "Live")]
    quiet = {**live, "spec": {**live["spec"], "callbackUrl": None}}
    controller.on_job_event("LiveJob", "ADDED", quiet)
    controller.on_job_event("LiveJob", "DELETED", quiet)
    assert len(sent) == 1
    # Another replica that announces the same deletion (it took over with an older view) gives it the
    # same id, so that the receiver can drop the repeat; another job's deletion has its own.
    other_replica = Controller(None, OperatorConfig(stream_key_seed="unit-test-stream-key-seed-0123456789"))  # type: ignore[arg-type]
    other_replica.webhooks = Sender()  # type: ignore[assignment]
    other_replica.on_job_event("LiveJob", "ADDED", live)
    other_replica.on_job_event("LiveJob", "DELETED", live)
    renamed = {**live, "metadata": {**live["metadata"], "uid": "u3"}}
    other_replica.on_job_event("LiveJob", "ADDED", renamed)
    other_replica.on_job_event("LiveJob", "DELETED", renamed)
    ids = [payload["id"] for _, payload in sent]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]


async def test_a_deleted_live_job_tells_its_running_encoder_to_finish_and_a_record_job_does_not() -> None:
    """Deleted, a LiveJob's stream is over: its encoder ends the playlists (EXT-X-ENDLIST), as when it is
    switched off, whether or not the garbage collector's stop of its Pod came first."""
    config = OperatorConfig(stream_key_seed="unit-test-stream-key-seed-0123456789")
    controller = Controller(None, config)  # type: ignore[arg-type]
    sent: list[tuple[str, str, str, bool]] = []

    async def send(pod_uid: str, command: str, control_key: str, *, stopping_too: bool = False) -> bool:
        sent.append((pod_uid, command, control_key, stopping_too))
        return True

    controller.reports.send = send  # type: ignore[method-assign]
    for kind, pod_uid in (("LiveJob", "pod-live"), ("RecordJob", "pod-record")):
        job = {"apiVersion": "onair.dev/v1alpha1", "kind": kind,
               "metadata": {"name": "news", "namespace": "t", "uid": f"uid-{kind}", "resourceVersion": "9"},
               "spec": {}}
        encoder = copy.deepcopy(RUNNING)
        encoder["metadata"].update(uid=pod_uid, labels={"onair.dev/job": "news", "onair.dev/kind": kind},
                                   deletionTimestamp="2026-01-01T00:00:30Z")  # already being stopped
        controller.on_job_event(kind, "ADDED", job)
        controller.on_pod_event("MODIFIED", encoder)
        controller.on_job_event(kind, "DELETED", job)
    await asyncio.sleep(0)
    control_key = derive_control_key(config.stream_key_seed, "t", "news", "uid-LiveJob")
    assert sent == [("pod-live", "finish", control_key, True)]
    # Deleted in the foreground: the job is still there, marked, while its Pods are stopped first.
    sent.clear()
    job = {"apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob", "spec": {},
           "metadata": {"name": "news", "namespace": "t", "uid": "uid-2", "resourceVersion": "20"}}
    encoder = copy.deepcopy(RUNNING)
    encoder["metadata"].update(uid="pod-2", labels={"onair.dev/job": "news", "onair.dev/kind": "LiveJob"})
    controller.on_job_event("LiveJob", "ADDED", job)
    controller.on_pod_event("MODIFIED", encoder)
    marked = copy.deepcopy(job)
    marked["metadata"].update(resourceVersion="21", deletionTimestamp="2026-01-01T00:00:00Z",
                              finalizers=["foregroundDeletion"])
    controller.on_job_event("LiveJob", "MODIFIED", marked)
    controller.on_job_event("LiveJob", "MODIFIED", marked)  # seen again (a resync): told once
    controller.on_job_event("LiveJob", "DELETED", marked)
    await asyncio.sleep(0)
    assert sent == [("pod-2", "finish", derive_control_key(config.stream_key_seed, "t", "news", "uid-2"), True)]
    await controller.reports.close()


class ListingOnly:
    """The API server's answer to the lists drop_vanished makes: metadata only, one item a page."""

    def __init__(self, listings: dict[str, dict[str, Any]]) -> None:
        self.listings = listings
        self.paths: list[str] = []

    async def pages(self, path: str, *, metadata_only: bool = False, **params: str) -> AsyncIterator[dict[str, Any]]:
        assert metadata_only  # whole objects, 10,000 at a time, are what it must not read
        self.paths.append(path)
        listing = self.listings[path.rsplit("/", 1)[1]]
        for item in listing["items"] or [None]:
            yield {"metadata": listing["metadata"], "items": [{"metadata": item["metadata"]}] if item else []}


@pytest.mark.parametrize("watched", [[], ["t", "other"]])
async def test_what_was_deleted_while_the_watch_was_away_is_dropped(watched: list[str]) -> None:
    """A watch that reconnects lists again but reports no deletion that happened meanwhile."""
    labels = {"onair.dev/job": "news", "onair.dev/kind": "LiveJob"}
    gone = {**RUNNING, "metadata": {**META, "labels": labels, "name": "news-encoder-1", "resourceVersion": "7"}}
    newer = {**RUNNING, "metadata": {**META, "labels": labels, "name": "news-encoder-2", "uid": "u3",
                                     "resourceVersion": "99"}}  # created after the list was made
    job = {"apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
           "metadata": {"name": "news", "namespace": "t", "uid": "j1", "resourceVersion": "5"},
           "spec": {"jobTemplateId": 1, "input": {"serverType": "RTMP"}, "destination": {"bucket": "media"}}}
    deleted = {**job, "metadata": {**job["metadata"], "name": "old", "uid": "j0", "resourceVersion": "4"}}
    listings = {
        "pods": {"metadata": {"resourceVersion": "50"}, "items": []},
        "livejobs": {"metadata": {"resourceVersion": "50"}, "items": [job]},
        "recordjobs": {"metadata": {"resourceVersion": "50"}, "items": []},
    }
    kube = ListingOnly(listings)
    controller = Controller(kube, OperatorConfig(  # type: ignore[arg-type]
        stream_key_seed="unit-test-stream-key-seed-0123456789", watch_namespaces=watched))
    for pod in (gone, newer):
        controller.on_pod_event("ADDED", pod)
    for body in (job, deleted):
        controller.on_job_event("LiveJob", "ADDED", body)
    await controller.drop_vanished()
    assert list(controller.pods[("LiveJob", "t", "news")]) == ["news-encoder-2"]
    assert list(controller.jobs) == [("LiveJob", "t", "news")]
    assert ("LiveJob", "t", "news") in controller.queue  # looks again, and replaces its lost Pod
    # Named namespaces are listed one by one (the chart binds the operator's rights in those only).
    scopes = {path.split("/namespaces/")[1].split("/")[0] if "/namespaces/" in path else None for path in kube.paths}
    assert scopes == (set(watched) if watched else {None})


async def test_a_replica_taking_over_drops_what_was_deleted_while_it_stood_by() -> None:
    labels = {"onair.dev/job": "news", "onair.dev/kind": "LiveJob"}
    gone = {**RUNNING, "metadata": {**META, "labels": labels, "name": "news-encoder-1", "resourceVersion": "7"}}
    listings = {"pods": {"metadata": {"resourceVersion": "50"}, "items": []},
                "livejobs": {"metadata": {"resourceVersion": "50"}, "items": []},
                "recordjobs": {"metadata": {"resourceVersion": "50"}, "items": []}}
    controller = Controller(ListingOnly(listings), OperatorConfig(  # type: ignore[arg-type]
        stream_key_seed="unit-test-stream-key-seed-0123456789"))
    controller.on_pod_event("ADDED", gone)
    controller.resync()  # what the leadership loop calls on taking over
    await asyncio.gather(*controller._background)
    assert not controller.pods.get(("LiveJob", "t", "news"))  # not waited on until the periodic re-list


class Writes:
    """Records the deletes and status patches the controller sends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def delete(self, path: str) -> None:
        self.calls.append(("delete", path, None))

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", path, patch))
        return {**patch, "metadata": {"name": path.split("/")[-2], "uid": "uid-1", "resourceVersion": "99"}}


@pytest.mark.parametrize("kind", ["LiveJob", "RecordJob"])
async def test_a_job_our_model_refuses_is_failed_with_its_encoder_stopped(kind: str) -> None:
    """A CRD older than the operator can let through a spec the operator's model refuses."""
    kube = Writes()
    controller = Controller(kube, OperatorConfig(  # type: ignore[arg-type]
        stream_key_seed="unit-test-stream-key-seed-0123456789"))
    labels = {"onair.dev/job": "news", "onair.dev/kind": kind}
    controller.on_pod_event("ADDED", {**RUNNING, "metadata": {**META, "labels": labels}})
    key = (kind, "t", "news")
    body = {"kind": kind, "metadata": {"name": "news", "namespace": "t", "generation": 4, "resourceVersion": "7"},
            "status": {}}
    url = "callbackUrl" if kind == "LiveJob" else "notifyUrl"
    body = {**body, "spec": {url: "https://hooks.example.com/onair"},
            "status": {"phase": "Live" if kind == "LiveJob" else "Started", "observedGeneration": 3,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Live", "message": "",
                                       "lastTransitionTime": "2026-11-23T11:00:00Z", "observedGeneration": 3}]}}
    await controller._fail_invalid(key, body, ["spec.input.serverType: unknown"])
    plural = "livejobs" if kind == "LiveJob" else "recordjobs"
    field = "message" if kind == "LiveJob" else "errorMessage"
    assert [call[:2] for call in kube.calls] == [
        ("delete", "/api/v1/namespaces/t/pods/news-encoder-1"),
        ("patch", f"/apis/onair.dev/v1alpha1/namespaces/t/{plural}/news/status")]
    # As any failure reads: the phase and why, when, its timing, Ready False, and the webhook it owes.
    assert kube.calls[1][2]["metadata"] == {"resourceVersion": "7"}  # onto the version it judged
    status = kube.calls[1][2]["status"]
    message = "invalid spec: spec.input.serverType: unknown"
    assert (status["phase"], status[field], status["observedGeneration"]) == ("Failed", message, 4)
    assert status["finishedAt"] and status["timings"][-1]["phase"] == "Failed"
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [("Ready", "False", "SpecInvalid")]
    assert [(w["event"], w["phase"]) for w in status["pendingWebhooks"]] == [("failed", "Failed")]
    # A job that completed under this spec keeps its phase: what it recorded or streamed is there. A
    # LiveJob changed since would start again (a new schedule), so that change is what is refused.
    kube.calls.clear()
    completed = {**body, "status": {"phase": "Completed", "observedGeneration": 4}}
    await controller._fail_invalid(key, completed, ["spec.input.serverType: unknown"])
    assert kube.calls == []
    changed_since = {**completed, "metadata": {**body["metadata"], "generation": 5}}
    await controller._fail_invalid(key, changed_since, ["spec.input.serverType: unknown"])
    assert [call[2]["status"]["phase"] for call in kube.calls if call[0] == "patch"] == (
        ["Failed"] if kind == "LiveJob" else [])


class Lists:
    """Empty answers to the start-up sync's lists, and the paths it asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def pages(self, path: str, **params: str) -> AsyncIterator[dict[str, Any]]:
        self.paths.append(path)
        yield {"metadata": {"resourceVersion": "1"}, "items": []}

    async def list(self, path: str, **params: str) -> dict[str, Any]:
        self.paths.append(path)
        return {"metadata": {"resourceVersion": "1"}, "items": []}


@pytest.mark.parametrize(("watched", "expected"), [
    ([], ["/api/v1/pods", "/apis/onair.dev/v1alpha1/jobtemplates"]),
    (["news"], ["/api/v1/namespaces/news/pods", "/apis/onair.dev/v1alpha1/namespaces/news/jobtemplates",
                "/apis/onair.dev/v1alpha1/namespaces/onair-system/jobtemplates"]),
])
async def test_the_start_up_sync_lists_where_the_operator_may_and_its_fallback_templates(
        watched: list[str], expected: list[str]) -> None:
    kube = Lists()
    controller = Controller(kube, OperatorConfig(  # type: ignore[arg-type]
        stream_key_seed="unit-test-stream-key-seed-0123456789", watch_namespaces=watched))
    await controller.sync_caches()
    assert kube.paths == expected


async def test_an_encoder_command_not_taken_is_sent_again_soon() -> None:
    """A resume the recorder did not take (busy, restarting, out of reach) is not lost: nothing else would
    look at a paused recording again, its reports do not change."""
    controller = Controller(Writes(), OperatorConfig(  # type: ignore[arg-type]
        stream_key_seed="unit-test-stream-key-seed-0123456789"))
    body = {"apiVersion": "onair.dev/v1alpha1", "kind": "RecordJob",
            "metadata": {"name": "news", "namespace": "t", "uid": "u-job", "generation": 2, "resourceVersion": "9"},
            "spec": {"source": {"streamUrl": "rtmp://origin/live/a"}, "output": {"bucket": "media"}},
            "status": {"phase": "Paused", "resourceName": "news-encoder-1"}}
    key = ("RecordJob", "t", "news")
    decision = Decision(status=copy.deepcopy(body["status"]), encoder_command="resume")
    await controller._apply(key, RecordJob.model_validate(body), body, decision, None, [RUNNING])
    assert decision.requeue_after == COMMAND_RETRY_SECONDS and key in controller.queue
