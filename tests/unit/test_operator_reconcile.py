"""The reconciler's decisions, from observed state to actions and status, without a cluster."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import ValidationError

from onair.addresses import AddressPolicy
from onair.encoder.config import ConfigError, load_job_config
from onair.encoder.pipeline import Encoder, Ports
from onair.encoder.upload import S3Store
from onair.exitcodes import EXIT_BAD_CONFIG, EXIT_INTERRUPTED, FINISHED_MESSAGE
from onair.models import (
    MAX_PAUSED_RANGES,
    HardwareAcceleration,
    JobTemplateSpec,
    LiveJob,
    LiveJobStatus,
    RecordJob,
    RecordJobStatus,
)
from onair.operator import naming
from onair.operator.builders import (
    LABEL_FINISH_ONLY,
    build_encoder_pod,
    build_ingest_service,
    build_job_secret,
    termination_grace_seconds,
)
from onair.operator.config import ENCODER_ENV_SET_BY_OPERATOR, OperatorConfig
from onair.operator.pods import pod_state
from onair.operator.reconcile import (
    FINISH_SLACK_SECONDS,
    STUCK_TERMINATING_SECONDS,
    Decision,
    TemplateLookup,
    clip_request,
    decide_live_job,
    decide_record_job,
    finish_allowance,
    forget_refused_child,
    mark_pod_refused,
    phase_path,
    progress_only,
)
from onair.operator.services import ServiceEndpoint, service_endpoint
from onair.operator.webhooks import events_announced
from onair.phases import (
    LIVE_JOB_TERMINAL_PHASES,
    RECORD_JOB_TERMINAL_PHASES,
    ConditionReason,
    LiveJobPhase,
    RecordJobPhase,
    can_transition,
)
from onair.streamkeys import derive_control_key, derive_preview_key, derive_stream_key

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
CONFIG = OperatorConfig(s3_endpoint="http://s3.local:8333", max_restarts=2, restart_backoff_seconds=2,
                        stream_key_seed="unit-test-stream-key-seed-0123456789")
TEMPLATE = TemplateLookup(JobTemplateSpec.model_validate({
    "id": 1, "name": "ladder",
    "renditions": [{"name": "720p", "width": 1280, "height": 720, "fps": 30, "videoBitrate": 3_000_000},
                   {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 800_000}],
}))


def live_job(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> LiveJob:
    body: dict[str, Any] = {
        "apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
        "metadata": {"name": "news", "namespace": "ns", "uid": "uid-1", "generation": generation,
                     "resourceVersion": "1"},
        "spec": {"jobTemplateId": 1, "input": {"serverType": "RTMP"},
                 "destination": {"bucket": "media", "path": "live/news"}, **spec},
    }
    if status is not None:
        body["status"] = status
    return LiveJob.model_validate(body)


def pod(name: str, phase: str = "Running", ready: bool = True, exit_code: int | None = None,
        deleting: bool = False, finished_at: dt.datetime | None = None,
        killed_by: dt.datetime = NOW + dt.timedelta(seconds=30), message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"startedAt": "2026-11-23T11:59:00Z"}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "reason": "Error",
                                "finishedAt": (finished_at or NOW).strftime("%Y-%m-%dT%H:%M:%SZ")}}
        if message is not None:  # the container's termination message
            state["terminated"]["message"] = message
    metadata: dict[str, Any] = {"name": name, "uid": f"pod-{name}"}
    if deleting:
        metadata["deletionTimestamp"] = killed_by.strftime("%Y-%m-%dT%H:%M:%SZ")  # the end of its grace period
    return {"metadata": metadata, "spec": {"nodeName": "node"},
            "status": {"phase": phase, "podIP": "127.1.0.9",
                       "conditions": [{"type": "PodScheduled", "status": "True"},
                                      {"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "encoder", "state": state}]}}


def current_pod_name(attempt: int = 1) -> str:
    return naming.pod_name("news", "encoder", "uid-1", attempt)


def announced(previous: str | None, decision: Decision, recorded_before: bool = True) -> list[str]:
    """The webhook events a decision's phase changes send, as the controller sends them."""
    phase_type = LiveJobPhase if decision.phase_changes and isinstance(decision.phase_changes[0], LiveJobPhase) \
        else RecordJobPhase
    last = phase_type(previous) if previous else None
    return [event for event, _ in events_announced(last, decision.phase_changes, recorded_before)]


def test_phase_path_passes_through_intermediate_phases() -> None:
    assert phase_path(None, LiveJobPhase.PROVISIONING) == [LiveJobPhase.PENDING, LiveJobPhase.PROVISIONING]
    assert phase_path(LiveJobPhase.PROVISIONING, LiveJobPhase.LIVE) == [LiveJobPhase.WAITING_FOR_INPUT,
                                                                          LiveJobPhase.LIVE]
    assert phase_path(LiveJobPhase.LIVE, LiveJobPhase.LIVE) == []
    # A stop called off (the start moved back, the finish later): never switched off, so not Offline.
    assert phase_path(LiveJobPhase.STOPPING, LiveJobPhase.PROVISIONING) == [LiveJobPhase.PENDING,
                                                                              LiveJobPhase.PROVISIONING]
    # Switched off, then on again before the encoder was gone: the stream did end (a stopped webhook).
    assert phase_path(LiveJobPhase.STOPPING, LiveJobPhase.PROVISIONING, switched_off=True) == [
        LiveJobPhase.OFFLINE, LiveJobPhase.PROVISIONING]
    for path in (phase_path(None, target) for target in LiveJobPhase):
        previous = None
        for phase in path:
            assert can_transition(previous, phase)
            previous = phase


@pytest.mark.parametrize("phase_type", [LiveJobPhase, RecordJobPhase])
def test_phase_path_between_phases_that_go_on_never_passes_a_terminal_phase(phase_type: type) -> None:
    """Each phase passed is a timing, an Event and a webhook: a job that goes on never says it completed
    or failed on the way."""
    terminal = LIVE_JOB_TERMINAL_PHASES if phase_type is LiveJobPhase else RECORD_JOB_TERMINAL_PHASES
    going_on = [phase for phase in phase_type if phase not in terminal]
    for current in [None, *going_on]:
        for target in going_on:
            path = phase_path(current, target)
            assert not terminal & set(path), f"{current} -> {target}: {path}"
            previous = current
            for phase in path:
                assert can_transition(previous, phase), f"{current} -> {target}: {path}"
                previous = phase


def test_new_job_creates_children_and_pod_and_is_provisioning() -> None:
    decision = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW)
    assert decision.ensure_children
    assert decision.create_pod_attempt == 1
    assert decision.status["phase"] == "Provisioning"
    assert [t["phase"] for t in decision.status["timings"]] == ["Pending", "Provisioning"]
    assert decision.status["resourceName"] == current_pod_name()
    assert decision.status["observedGeneration"] == 1


def test_reconciling_the_same_observation_twice_changes_nothing() -> None:
    first = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW)
    pending = [pod(current_pod_name(), "Pending", ready=False)]
    second = decide_live_job(live_job(first.status), TEMPLATE, pending, None, CONFIG, NOW + dt.timedelta(seconds=5))
    third = decide_live_job(live_job(second.status), TEMPLATE, pending, None, CONFIG, NOW + dt.timedelta(seconds=9))
    assert second.create_pod_attempt is None and third.create_pod_attempt is None
    assert second.status["phase"] == "Provisioning"
    assert third.status == second.status


def test_new_pods_first_event_needs_no_status_write_and_scheduling_is_not_called_unschedulable() -> None:
    created = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    unbound = pod(current_pod_name(), "Pending", ready=False)
    unbound["spec"] = {}
    unbound["status"] = {"phase": "Pending"}
    first_event = decide_live_job(live_job(created), TEMPLATE, [unbound], None, CONFIG, NOW + dt.timedelta(seconds=1))
    assert first_event.status == created
    scheduled = next(c for c in created["conditions"] if c["type"] == "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("Unknown", "Scheduling")

    unbound["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "message": "0/3 nodes are available: 3 Insufficient cpu."}]
    refused = decide_live_job(live_job(created), TEMPLATE, [unbound], None, CONFIG, NOW + dt.timedelta(seconds=2))
    scheduled = next(c for c in refused.status["conditions"] if c["type"] == "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    assert "Insufficient cpu" in scheduled["message"]


def test_the_ingest_service_is_made_once_the_encoder_is_ready() -> None:
    """Made with the ready Pod, the Service's Endpoints and EndpointSlice are written once each."""
    created = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW)
    assert created.ensure_children and not created.ensure_service
    starting = decide_live_job(live_job(created.status), TEMPLATE, [pod(current_pod_name(), "Pending", ready=False)],
                               None, CONFIG, NOW)
    assert not starting.ensure_service
    ready = decide_live_job(live_job(created.status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW)
    assert ready.ensure_service
    waiting = decide_live_job(live_job(ready.status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW)
    assert not waiting.ensure_service
    assert not waiting.ensure_children
    # Refused by the API server (a quota), a child is not named in status: the next decision, by any
    # operator, makes it again, while the job runs on.
    refused = dict(waiting.status)
    forget_refused_child(waiting, "serviceName")
    forget_refused_child(waiting, "streamKeySecret")
    assert "serviceName" not in waiting.status and "streamKeySecret" not in waiting.status and refused != waiting.status
    again = decide_live_job(live_job(waiting.status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW)
    assert again.ensure_service and again.ensure_children and again.status["phase"] == "WaitingForInput"
    # An operator that first sees the encoder not ready (a failover) does not name a Service it did not make.
    unready = decide_live_job(live_job(waiting.status), TEMPLATE, [pod(current_pod_name(), ready=False)], None,
                              CONFIG, NOW)
    assert not unready.ensure_service and "serviceName" not in unready.status
    ready_again = decide_live_job(live_job(unready.status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW)
    assert ready_again.ensure_service and ready_again.status["serviceName"]


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_a_node_port_or_load_balancer_service_is_made_with_the_secret_before_the_job_runs(service_type: str) -> None:
    """Its node port or address is allocated as it is made: the ingest URL is right before the first run."""
    config = CONFIG.model_copy(update={"service_type": service_type, "ingest_host": "ingest.example.net"})
    for job in (live_job(), live_job(online=False)):
        decision = decide_live_job(job, TEMPLATE, [], None, config, NOW)
        assert decision.ensure_children and decision.ensure_service
        assert decision.status["serviceName"] == naming.service_name("news", "uid-1")
    assert not decide_live_job(live_job(online=False), TEMPLATE, [], None, CONFIG, NOW).ensure_service


def test_a_job_switched_off_and_on_again_while_stopping_says_it_stopped() -> None:
    """The stream did end (its encoder was told to finish): Offline and a stopped webhook on the way to the
    next run. A stop called off before it happened (the start moved back) goes through Pending, silently."""
    running = decide_live_job(live_job(), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW).status
    off = decide_live_job(live_job(running, online=False), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW)
    assert off.status["phase"] == "Stopping" and off.finish_before_delete
    on = decide_live_job(live_job(off.status, online=True), TEMPLATE, [], None, CONFIG, NOW)
    assert on.phase_changes == [LiveJobPhase.OFFLINE, LiveJobPhase.PROVISIONING]
    assert announced("Stopping", on) == ["stopped"]
    later = (NOW + dt.timedelta(hours=1)).isoformat()
    postponed = decide_live_job(live_job(running, schedule={"startDateTime": later}), TEMPLATE,
                                [pod(current_pod_name())], None, CONFIG, NOW)
    assert postponed.status["phase"] == "Stopping"
    resumed = decide_live_job(live_job(postponed.status), TEMPLATE, [], None, CONFIG, NOW)
    assert resumed.phase_changes == [LiveJobPhase.PENDING, LiveJobPhase.PROVISIONING]
    assert announced("Stopping", resumed) == []


def test_a_pod_ready_before_provisioning_was_written_keeps_provisioning_in_the_timings() -> None:
    """The controller may hold a new Pod's Provisioning write; the one write that follows still lists
    Provisioning, at the Pod's creation."""
    ready = pod(current_pod_name())
    ready["metadata"]["creationTimestamp"] = "2026-11-23T11:59:57Z"
    status = decide_live_job(live_job(), TEMPLATE, [ready], None, CONFIG, NOW).status
    assert status["phase"] == "WaitingForInput"
    assert [(t["phase"], t["time"]) for t in status["timings"]] == [
        ("Pending", "2026-11-23T11:59:57Z"), ("Provisioning", "2026-11-23T11:59:57Z"),
        ("WaitingForInput", "2026-11-23T12:00:00Z")]
    starting = pod(current_pod_name(), "Pending", ready=False)
    starting["metadata"]["creationTimestamp"] = "2026-11-23T11:59:57Z"
    status = decide_live_job(live_job(), TEMPLATE, [starting], None, CONFIG, NOW).status
    assert [(t["phase"], t["time"]) for t in status["timings"]] == [
        ("Pending", "2026-11-23T11:59:57Z"), ("Provisioning", "2026-11-23T11:59:57Z")]
    starting["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "InvalidImageName"}}
    status = decide_live_job(live_job(), TEMPLATE, [starting], None, CONFIG, NOW).status
    assert [t["phase"] for t in status["timings"]] == ["Pending", "Provisioning", "Failed"]


def test_a_pod_made_from_a_spec_changed_before_provisioning_was_written_is_replaced() -> None:
    """The CRD refuses input changes only from Provisioning on; the Provisioning write may be held a
    few seconds after the Pod's creation, so a spec changed meanwhile gets a new attempt's Pod."""
    made = build_encoder_pod(live_job(), TEMPLATE.template, CONFIG, 1)
    assert made["metadata"]["labels"]["onair.dev/spec-generation"] == "1"
    old = {**pod(current_pod_name(), "Pending", ready=False), "metadata": {**made["metadata"], "uid": "p1"}}
    changed = decide_live_job(live_job(generation=2), TEMPLATE, [old], None, CONFIG, NOW)
    assert changed.delete_pods == [current_pod_name()]
    assert changed.create_pod_attempt is None  # not while the old one may still run
    assert changed.status["attempt"] == 2 and changed.status.get("restarts", 0) == 0
    replaced = decide_live_job(live_job(changed.status, generation=2), TEMPLATE, [], None, CONFIG,
                               NOW + dt.timedelta(seconds=1))
    assert replaced.create_pod_attempt == 2 and replaced.status.get("restarts", 0) == 0
    same = decide_live_job(live_job(), TEMPLATE, [old], None, CONFIG, NOW)
    assert same.delete_pods == [] and same.create_pod_attempt is None


def test_ready_pod_without_input_waits_for_input_and_publishes_urls() -> None:
    provisioning = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    decision = decide_live_job(live_job(provisioning), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW)
    status = decision.status
    assert status["phase"] == "WaitingForInput"
    service = naming.service_name("news", "uid-1")
    assert status["urls"]["rtmpServer"] == f"rtmp://{service}.ns.svc:1935/live/"
    assert status["urls"]["storageMasterFile"] == "http://s3.local:8333/media/live/news/master.m3u8"
    assert status["urls"]["outputManifests"]["360p"] == "http://s3.local:8333/media/live/news/360p/index.m3u8"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_a_node_port_service_puts_its_node_ports_into_the_ingest_urls_at_the_public_host() -> None:
    provisioning = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    waiting = live_job(provisioning)
    ports = ServiceEndpoint(node_ports={"rtmp": 31935, "srt": 31900})
    public = CONFIG.model_copy(update={"service_type": "NodePort", "ingest_host": "ingest.example.net"})
    urls = decide_live_job(waiting, TEMPLATE, [pod(current_pod_name())], None, public, NOW, ports).status["urls"]
    assert urls["rtmpServer"] == urls["ingest"] == "rtmp://ingest.example.net:31935/live/"
    # Inside the cluster (no public host) the Service's own port is the one to use.
    inside = CONFIG.model_copy(update={"service_type": "NodePort"})
    urls = decide_live_job(waiting, TEMPLATE, [pod(current_pod_name())], None, inside, NOW, ports).status["urls"]
    assert urls["rtmpServer"] == f"rtmp://{naming.service_name('news', 'uid-1')}.ns.svc:1935/live/"


def test_a_load_balancers_address_is_the_ingest_host_once_the_cloud_gave_one() -> None:
    waiting = live_job(decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status)
    balanced = CONFIG.model_copy(update={"service_type": "LoadBalancer", "ingest_host": "ingest.example.net"})
    service = {"spec": {"type": "LoadBalancer", "ports": [{"name": "rtmp", "port": 1935, "nodePort": 31935}]},
               "status": {"loadBalancer": {}}}

    def ingest() -> str:
        decision = decide_live_job(waiting, TEMPLATE, [pod(current_pod_name())], None, balanced, NOW,
                                   service_endpoint(service))
        return str(decision.status["urls"]["ingest"])

    assert ingest() == "rtmp://ingest.example.net:1935/live/", "no address yet: the configured host"
    service["status"] = {"loadBalancer": {"ingress": [{"hostname": "a1b2.elb.example.com"}]}}
    assert ingest() == "rtmp://a1b2.elb.example.com:1935/live/", "on the Service's port, not a node port"
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.7", "hostname": "lb.example.com"}]}}
    assert ingest() == "rtmp://203.0.113.7:1935/live/"
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "2001:db8::7"}]}}
    assert ingest() == "rtmp://[2001:db8::7]:1935/live/"


def test_srt_ingest_url_ends_where_the_publisher_appends_the_stream_key() -> None:
    srt = live_job(input={"serverType": "SRT"})
    provisioning = decide_live_job(srt, TEMPLATE, [], None, CONFIG, NOW).status
    srt_waiting = live_job(provisioning, input={"serverType": "SRT"})
    urls = decide_live_job(srt_waiting, TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW).status["urls"]
    service = naming.service_name("news", "uid-1")
    # The key as the passphrase, which never travels in the clear; a streamid does.
    assert urls["srtUrl"] == urls["ingest"] == f"srt://{service}.ns.svc:9000?passphrase="
    assert urls.get("rtmpServer") is None
    own = {"serverType": "SRT", "srtPassphraseSecretRef": {"name": "srt-passphrase"}}
    provisioning = decide_live_job(live_job(input=own), TEMPLATE, [], None, CONFIG, NOW).status
    urls = decide_live_job(live_job(provisioning, input=own), TEMPLATE, [pod(current_pod_name())], None, CONFIG,
                           NOW).status["urls"]
    assert urls["srtUrl"] == f"srt://{service}.ns.svc:9000?streamid="  # the passphrase is the job's own


def test_encoder_report_drives_live_and_reconnecting() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    pods = [pod(current_pod_name())]
    report = {"state": "live", "ingest": {"connected": True, "statistics": {"width": 1280, "height": 720}},
              "renditions": [{"name": "720p", "segmentsWritten": 3, "status": "Running"}]}
    live = decide_live_job(live_job(status), TEMPLATE, pods, report, CONFIG, NOW).status
    assert live["phase"] == "Live"
    assert live["statistics"] == {"width": 1280, "height": 720}
    assert live["outputs"][0]["segmentsWritten"] == 3
    assert next(c for c in live["conditions"] if c["type"] == "Ready")["status"] == "True"
    dropped = decide_live_job(live_job(live), TEMPLATE, pods, {**report, "state": "reconnecting"}, CONFIG,
                              NOW).status
    assert dropped["phase"] == "Reconnecting"
    back = decide_live_job(live_job(dropped), TEMPLATE, pods, report, CONFIG, NOW).status
    assert back["phase"] == "Live"
    assert [t["phase"] for t in back["timings"]][-3:] == ["Live", "Reconnecting", "Live"]


def test_the_job_says_what_its_encoder_says_about_its_input() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    pods = [pod(current_pod_name())]
    for state, phase, said in (
            ("waiting", "WaitingForInput", "the source playlist https://origin/live.m3u8 has ended (EXT-X-ENDLIST)"),
            ("reconnecting", "Reconnecting", "no new segment in the source playlist https://origin/live.m3u8"),
            ("live", "Live", "the input has no video stream: the ladder is encoded from video")):
        status = decide_live_job(live_job(status), TEMPLATE, pods, {"state": state, "message": said}, CONFIG,
                                 NOW).status
        input_connected = next(c for c in status["conditions"] if c["type"] == "InputConnected")
        assert (status["phase"], status["message"], input_connected["message"]) == (phase, said, said)
    # An encoder that says nothing (an older one) still gets a message.
    silent = decide_live_job(live_job(status), TEMPLATE, pods, {"state": "live"}, CONFIG, NOW).status
    assert silent["message"] == "input connected"


def test_an_encoder_waiting_for_a_missing_bucket_is_provisioning_and_says_why() -> None:
    """The encoder takes no input before it has read its stored playlists (its readiness probe fails
    meanwhile): not WaitingForInput, and the conditions name the bucket's problem."""
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    unready = [pod(current_pod_name(), ready=False)]
    missing = {"state": "waiting", "storage": {"available": False, "reason": "BucketNotFound",
                                               "message": "bucket 'onair-live' does not exist"}}
    waiting = decide_live_job(live_job(status), TEMPLATE, unready, missing, CONFIG, NOW).status
    conditions = {c["type"]: c for c in waiting["conditions"]}
    assert waiting["phase"] == "Provisioning"
    assert conditions["StorageAvailable"]["status"] == "False"
    assert conditions["StorageAvailable"]["reason"] == "BucketNotFound"
    assert "onair-live" in conditions["StorageAvailable"]["message"]
    assert conditions["EncoderRunning"]["status"] == "True"
    assert conditions["EncoderRunning"]["reason"] == "WaitingForStorage"
    assert "onair-live" in waiting["message"] and "onair-live" in conditions["Ready"]["message"]
    # A reason this operator does not know (another encoder version) still reads as unreachable.
    odd = {**missing, "storage": {**missing["storage"], "reason": "SomethingNew"}}
    unknown = decide_live_job(live_job(status), TEMPLATE, unready, odd, CONFIG, NOW).status
    assert {c["type"]: c for c in unknown["conditions"]}["StorageAvailable"]["reason"] == "BucketUnreachable"
    # The bucket made: the encoder turns ready and listens.
    listening = {"state": "waiting", "storage": {"available": True, "reason": None, "message": None}}
    ready = decide_live_job(live_job(waiting), TEMPLATE, [pod(current_pod_name())], listening, CONFIG, NOW).status
    conditions = {c["type"]: c for c in ready["conditions"]}
    assert ready["phase"] == "WaitingForInput"
    assert conditions["StorageAvailable"]["status"] == "True"
    assert conditions["InputConnected"]["reason"] == "WaitingForPublisher"


def test_a_live_encoder_failing_its_readiness_check_for_a_while_is_not_a_restart() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    report = {"state": "live"}
    live = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], report, CONFIG, NOW).status
    assert live["phase"] == "Live"
    slow = decide_live_job(live_job(live), TEMPLATE, [pod(current_pod_name(), ready=False)], report, CONFIG,
                           NOW + dt.timedelta(seconds=10))
    assert slow.status["phase"] == "Live" and slow.phase_changes == [] and slow.events == []
    running = next(c for c in slow.status["conditions"] if c["type"] == "EncoderRunning")
    assert (running["status"], running["reason"]) == ("False", "EncoderUnresponsive")
    # Not Ready meanwhile: its Service routes no publisher to it.
    ready = next(c for c in slow.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "EncoderUnresponsive")
    assert slow.create_pod_attempt is None and slow.delete_pods == []
    back = decide_live_job(live_job(slow.status), TEMPLATE, [pod(current_pod_name())], report, CONFIG,
                           NOW + dt.timedelta(seconds=20))
    assert back.phase_changes == [] and back.status["timings"] == live["timings"]
    assert back.status["startedAt"] == live["startedAt"]
    assert next(c for c in back.status["conditions"] if c["type"] == "Ready")["status"] == "True"

def test_a_stopped_job_no_longer_says_its_encoder_runs_or_its_input_is_connected() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    report = {"state": "live", "renditions": [{"name": "720p", "segmentsWritten": 3, "status": "Running"}]}
    live = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], report, CONFIG, NOW).status

    def conditions(job_status: dict[str, Any]) -> dict[str, tuple[str, int]]:
        return {c["type"]: (c["status"], c["observedGeneration"]) for c in job_status["conditions"]}

    assert conditions(live)["EncoderRunning"] == conditions(live)["InputConnected"] == ("True", 1)
    stopping = decide_live_job(live_job(live, generation=2, online=False), TEMPLATE, [pod(current_pod_name())],
                               report, CONFIG, NOW).status
    offline = decide_live_job(live_job(stopping, generation=2, online=False), TEMPLATE, [], None, CONFIG, NOW).status
    assert offline["phase"] == "Offline"
    assert conditions(offline)["EncoderRunning"] == conditions(offline)["InputConnected"] == ("False", 2)
    assert [output["status"] for output in offline["outputs"]] == ["Completed"]


def test_the_encoders_health_is_in_the_status_while_it_runs() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    pods = [pod(current_pod_name())]
    report = {"state": "live", "ingest": {"connected": True}, "droppedFrames": 12,
              "upload": {"lastLatencyMs": 84.5, "p99LatencyMs": 231.0, "failures": 2, "spoolBytes": 1024},
              "renditions": [{"name": "720p", "segmentsWritten": 3, "status": "Running"}]}
    live = decide_live_job(live_job(status), TEMPLATE, pods, report, CONFIG, NOW).status
    assert live["encoder"] == {"droppedFrames": 12, "lastUploadLatencyMs": 84.5, "uploadLatencyP99Ms": 231.0,
                               "uploadFailures": 2, "spoolBytes": 1024}
    stopping = decide_live_job(live_job(live, online=False), TEMPLATE, pods, report, CONFIG, NOW).status
    off = decide_live_job(live_job(stopping, online=False), TEMPLATE, [], None, CONFIG, NOW).status
    assert off["phase"] == "Offline" and "encoder" not in off


def test_a_running_jobs_moving_counters_are_progress_only_and_news_is_not() -> None:
    """What the controller writes at once and what at most every status_progress_interval_seconds."""
    waiting = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    pods = [pod(current_pod_name())]

    def report(segments: int, latency: float, bitrate: int | None = 2500, state: str = "live",
               rendition_status: str = "Running") -> dict[str, Any]:
        statistics = {"width": 1280, "height": 720, "videoDataRate": bitrate} if bitrate else None
        return {"state": state, "ingest": {"connected": state == "live", "statistics": statistics},
                "upload": {"lastLatencyMs": latency}, "renditions": [
                    {"name": "720p", "segmentsWritten": segments, "status": rendition_status,
                     "lastSegmentTime": f"2026-11-23T12:00:{segments:02d}Z"}]}

    live = decide_live_job(live_job(waiting), TEMPLATE, pods, report(3, 84.5), CONFIG, NOW).status
    later = NOW + dt.timedelta(seconds=5)

    def next_status(**changes: Any) -> dict[str, Any]:
        return decide_live_job(live_job(live), TEMPLATE, pods, report(**{"segments": 5, "latency": 91.0, **changes}),
                               CONFIG, later).status

    moved = next_status(bitrate=2610)
    assert moved != live and moved["outputs"][0]["segmentsWritten"] == 5
    assert progress_only("LiveJob", live, moved)
    assert not progress_only("LiveJob", live, next_status(state="reconnecting")), "a phase is news"
    assert not progress_only("LiveJob", live, next_status(rendition_status="Stalled")), "a rendition's state is news"
    no_statistics = decide_live_job(live_job(waiting), TEMPLATE, pods, report(3, 84.5, bitrate=None), CONFIG,
                                    NOW).status
    assert "statistics" not in no_statistics
    assert not progress_only("LiveJob", no_statistics, next_status()), "the first statistics are news"

    recording = {"phase": "Started", "progress": 0.25, "recordedSeconds": 15.0,
                 "files": [{"name": "master", "key": "r/master.m3u8", "format": "hls", "sizeBytes": 1000}]}
    further = {**recording, "progress": 0.5, "recordedSeconds": 30.0,
               "files": [{**recording["files"][0], "sizeBytes": 2000}]}
    assert progress_only("RecordJob", recording, further)
    another_file = {**further, "files": [*further["files"], {"name": "720p", "key": "r/720p.mp4", "format": "mp4"}]}
    assert not progress_only("RecordJob", recording, another_file), "a new file is news"
    assert not progress_only("RecordJob", recording, {**further, "phase": "Paused"})


def scheduled(status: dict[str, Any]) -> tuple[str, str]:
    condition = next(c for c in status["conditions"] if c["type"] == "Scheduled")
    return condition["status"], condition["message"]


def ended_spec(how: str) -> dict[str, Any]:
    """The spec change that ends a running job: switched off, or its finishDateTime at NOW + 0.5 s."""
    return {"online": False} if how == "switched off" else {
        "schedule": {"finishDateTime": (NOW + dt.timedelta(seconds=0.5)).isoformat()}}


def closer_pod(attempt: int, phase: str = "Running", ready: bool = False, exit_code: int | None = None,
               created: dt.datetime = NOW) -> dict[str, Any]:
    """The Pod made only to close the playlists a dead encoder left open, as its builder labels it."""
    body = pod(current_pod_name(attempt), phase, ready=ready, exit_code=exit_code)
    body["metadata"]["labels"] = {LABEL_FINISH_ONLY: "true"}
    body["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return body


def crashed_in_back_off() -> dict[str, Any]:
    """The status of a live job whose encoder crashed: waiting out the back-off before attempt 2."""
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                             NOW).status
    crashed = [pod(current_pod_name(), "Failed", ready=False, exit_code=1, finished_at=NOW)]
    died = decide_live_job(live_job(status), TEMPLATE, crashed, None, CONFIG, NOW)
    assert died.status["phase"] == "Provisioning" and died.status["playlistsLeftOpen"] is True
    return died.status


@pytest.mark.parametrize("how", ["switched off", "schedule over"])
def test_a_job_ended_during_a_restarts_back_off_has_a_pod_close_the_playlists_then_ends(how: str) -> None:
    spec, later = ended_spec(how), NOW + dt.timedelta(seconds=1)
    ended = decide_live_job(live_job(crashed_in_back_off(), generation=2, **spec), TEMPLATE, [], None, CONFIG, later)
    assert ended.phase_changes == ["Stopping"]  # not through a Pending it never was in
    assert (ended.create_pod_attempt, ended.finish_only) == (2, True)
    assert "playlistsLeftOpen" not in ended.status  # made once
    assert f"Pod {current_pod_name(2)} is made to close the playlists" in ended.status["message"]
    closing = decide_live_job(live_job(ended.status, generation=2, **spec), TEMPLATE, [closer_pod(2)], None, CONFIG,
                              later)
    assert not closing.phase_changes and closing.status["phase"] == "Stopping"
    # It exits by itself once it has read and closed them: not deleted (told to finish as well, for an
    # encoder image older than the operator, which knows no finishOnly).
    assert closing.delete_pods == [] and closing.create_pod_attempt is None and closing.encoder_command == "finish"
    assert closing.status["resourceName"] == current_pod_name(2)
    done = decide_live_job(live_job(closing.status, generation=2, **spec), TEMPLATE,
                           [closer_pod(2, "Succeeded", exit_code=0)], None, CONFIG, later)
    end = "Offline" if how == "switched off" else "Completed"
    assert done.phase_changes == [end] and done.status.get("restarts") == 1  # the closer is no restart
    assert done.create_pod_attempt is None
    conditions = {c["type"]: c for c in done.status["conditions"]}
    for type_ in ("EncoderRunning", "InputConnected"):  # not the restart it no longer plans
        assert (conditions[type_]["reason"], conditions[type_]["message"]) == (
            "EncoderStopped", f"no encoder takes input ({end})"), type_
        assert conditions[type_]["observedGeneration"] == 2


@pytest.mark.parametrize("how", ["switched off", "schedule over"])
def test_a_job_ended_while_an_evicted_encoder_still_flushes_has_its_playlists_closed_once_it_has_gone(
        how: str) -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                             NOW).status
    evicted = [pod(current_pod_name(), deleting=True)]  # in its grace period: it still writes
    died = decide_live_job(live_job(status), TEMPLATE, evicted, {"state": "live"}, CONFIG, NOW)
    assert died.status["phase"] == "Provisioning"
    spec = ended_spec(how)
    later = NOW + dt.timedelta(seconds=1)
    ending = decide_live_job(live_job(died.status, generation=2, **spec), TEMPLATE, evicted, None, CONFIG, later)
    assert ending.phase_changes == ["Stopping"] and ending.requeue_after
    assert f"waiting for Pod {current_pod_name()} to end" in ending.status["message"]
    assert ending.create_pod_attempt is None  # not two encoders on the same playlists
    gone = decide_live_job(live_job(ending.status, generation=2, **spec), TEMPLATE, [], None, CONFIG,
                           later + dt.timedelta(seconds=5))
    assert not gone.phase_changes and (gone.create_pod_attempt, gone.finish_only) == (2, True)
    done = decide_live_job(live_job(gone.status, generation=2, **spec), TEMPLATE,
                           [closer_pod(2, "Succeeded", exit_code=0)], None, CONFIG, later + dt.timedelta(seconds=9))
    end = "Offline" if how == "switched off" else "Completed"
    assert done.phase_changes == [end]
    assert events_announced(LiveJobPhase.STOPPING, done.phase_changes, True) == [("stopped", LiveJobPhase(end))]


@pytest.mark.parametrize("how", ["switched off", "schedule over"])
def test_a_replacement_not_up_yet_when_the_job_ends_is_told_to_finish_not_deleted_before_it_read_the_playlists(
        how: str) -> None:
    spec, later = ended_spec(how), NOW + dt.timedelta(seconds=3)
    restarting = decide_live_job(live_job(crashed_in_back_off()), TEMPLATE, [], None, CONFIG, later)
    assert restarting.create_pod_attempt == 2 and restarting.status["playlistsLeftOpen"] is True
    starting = [stuck_pod(current_pod_name(2), "ContainerCreating", "")]
    ended = decide_live_job(live_job(restarting.status, generation=2, **spec), TEMPLATE, starting, None, CONFIG, later)
    assert ended.phase_changes == ["Stopping"] and ended.delete_pods == []
    assert ended.encoder_command == "finish" and ended.create_pod_attempt is None
    assert f"Pod {current_pod_name(2)} closes the playlists" in ended.status["message"]
    # Not for ever: past the provisioning timeout and a grace period it is stopped as any encoder is.
    wait = finish_allowance(live_job(), CONFIG).total_seconds()
    assert ended.requeue_after == pytest.approx(wait - 3)  # from the Pod's creation
    given_up = decide_live_job(live_job(ended.status, generation=2, **spec), TEMPLATE, starting, None, CONFIG,
                               NOW + dt.timedelta(seconds=wait))
    assert given_up.delete_pods == [current_pod_name(2)] and given_up.finish_before_delete
    # One that cannot start (no image, no node) is not waited for.
    no_image = [stuck_pod(current_pod_name(2), "ImagePullBackOff", "Back-off pulling image")]
    stopped = decide_live_job(live_job(restarting.status, generation=2, **spec), TEMPLATE, no_image, None, CONFIG,
                              later)
    assert stopped.delete_pods == [current_pod_name(2)] and stopped.encoder_command is None


@pytest.mark.parametrize("went", ["crashed", "evicted"])
def test_a_job_switched_off_as_its_encoder_went_unbidden_has_the_playlists_closed(went: str) -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                             NOW).status
    ended = pod(current_pod_name(), "Failed", ready=False, exit_code=1) if went == "crashed" \
        else pod(current_pod_name(), deleting=True)  # a bare SIGTERM: it flushes, with the playlists open
    off = decide_live_job(live_job(status, generation=2, online=False), TEMPLATE, [ended], None, CONFIG, NOW)
    assert off.status["phase"] == "Stopping" and off.encoder_command is None
    if went == "evicted":
        assert off.create_pod_attempt is None and off.delete_pods == []  # not while it still writes them
        ended = pod(current_pod_name(), "Succeeded", ready=False, exit_code=0, deleting=True)
        off = decide_live_job(live_job(off.status, generation=2, online=False), TEMPLATE, [ended], None, CONFIG, NOW)
    assert (off.create_pod_attempt, off.finish_only) == (2, True)
    assert off.delete_pods == ([current_pod_name()] if went == "crashed" else [])
    assert off.status["resourceName"] == current_pod_name(2)
    done = decide_live_job(live_job(off.status, generation=2, online=False), TEMPLATE,
                           [closer_pod(2, "Succeeded", exit_code=0)], None, CONFIG, NOW)
    assert done.status["phase"] == "Offline" and done.create_pod_attempt is None


@pytest.mark.parametrize(("last_words", "closer"), [(FINISHED_MESSAGE, False),
                                                   ("stopped before the stored playlists could be read", True)],
                         ids=["closed them", "closed nothing"])
def test_a_replacement_told_to_finish_gets_a_closer_only_if_it_did_not_close_the_playlists(last_words: str,
                                                                                          closer: bool) -> None:
    spec, later = ended_spec("switched off"), NOW + dt.timedelta(seconds=3)
    restarting = decide_live_job(live_job(crashed_in_back_off()), TEMPLATE, [], None, CONFIG, later)
    starting = [stuck_pod(current_pod_name(2), "ContainerCreating", "")]
    told = decide_live_job(live_job(restarting.status, generation=2, **spec), TEMPLATE, starting, None, CONFIG, later)
    assert told.encoder_command == "finish"
    exited = [pod(current_pod_name(2), "Succeeded", ready=False, exit_code=0, message=last_words)]
    after = decide_live_job(live_job(told.status, generation=2, **spec), TEMPLATE, exited, None, CONFIG, later)
    if closer:  # it closed nothing (the store did not answer in its time): one made for that tries once
        assert (after.create_pod_attempt, after.finish_only) == (3, True) and after.status["phase"] == "Stopping"
    else:
        assert after.phase_changes == ["Offline"] and after.create_pod_attempt is None


def test_a_replacement_that_cannot_start_is_stopped_and_no_closer_follows() -> None:
    spec, later = ended_spec("switched off"), NOW + dt.timedelta(seconds=3)
    restarting = decide_live_job(live_job(crashed_in_back_off()), TEMPLATE, [], None, CONFIG, later)
    no_image = [stuck_pod(current_pod_name(2), "ImagePullBackOff", "Back-off pulling image")]
    stopping = decide_live_job(live_job(restarting.status, generation=2, **spec), TEMPLATE, no_image, None, CONFIG,
                               later)
    assert stopping.delete_pods == [current_pod_name(2)] and "playlistsLeftOpen" not in stopping.status
    gone = decide_live_job(live_job(stopping.status, generation=2, **spec), TEMPLATE, [], None, CONFIG, later)
    assert gone.phase_changes == ["Offline"] and gone.create_pod_attempt is None


@pytest.mark.parametrize("how", ["vanished as it is switched off", "crashed as the schedule ends",
                                 "crashed while it flushed"])
def test_an_encoder_that_ends_unbidden_as_its_job_ends_has_its_playlists_closed(how: str) -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                             NOW).status
    crashed = pod(current_pod_name(), "Failed", ready=False, exit_code=1)
    spec = ended_spec("schedule over" if how == "crashed as the schedule ends" else "switched off")
    later = NOW + dt.timedelta(seconds=1)
    if how == "vanished as it is switched off":
        ended = decide_live_job(live_job(status, generation=2, **spec), TEMPLATE, [], None, CONFIG, later)
    elif how == "crashed as the schedule ends":
        ended = decide_live_job(live_job(status, generation=2, **spec), TEMPLATE, [crashed], None, CONFIG, later)
    else:
        stopping = decide_live_job(live_job(status, generation=2, **spec), TEMPLATE, [pod(current_pod_name())], None,
                                   CONFIG, later)
        assert stopping.finish_before_delete and stopping.create_pod_attempt is None
        ended = decide_live_job(live_job(stopping.status, generation=2, **spec), TEMPLATE, [crashed], None, CONFIG,
                                later)
    assert ended.status["phase"] == "Stopping" and (ended.create_pod_attempt, ended.finish_only) == (2, True)


def test_a_closer_whose_status_write_was_lost_is_not_taken_for_the_jobs_encoder_when_switched_on_again() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    live = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                           NOW).status
    crashed = pod(current_pod_name(), "Failed", ready=False, exit_code=1)
    off = decide_live_job(live_job(live, generation=2, online=False), TEMPLATE, [crashed], None, CONFIG, NOW)
    assert (off.create_pod_attempt, off.finish_only) == (2, True)
    # Its Stopping was never written; the job is switched on again. The closer is not its encoder.
    on = decide_live_job(live_job(live, generation=3), TEMPLATE, [closer_pod(2, ready=True)], {"state": "live"},
                         CONFIG, NOW)
    assert on.status["phase"] == "Stopping" and on.delete_pods == [current_pod_name(2)]
    done = decide_live_job(live_job(on.status, generation=3), TEMPLATE, [closer_pod(2, "Succeeded", exit_code=0)],
                           None, CONFIG, NOW)
    assert done.status.get("restarts", 0) == 0 and not any(e[1] == "EncoderRestarted" for e in done.events)
    started = decide_live_job(live_job(done.status, generation=3), TEMPLATE, [], None, CONFIG, NOW)
    assert started.create_pod_attempt == 3 and not started.finish_only


def test_a_replacement_that_came_up_took_the_playlists_over_and_is_stopped_as_any_encoder() -> None:
    restarting = decide_live_job(live_job(crashed_in_back_off()), TEMPLATE, [], None, CONFIG,
                                 NOW + dt.timedelta(seconds=3))
    up = decide_live_job(live_job(restarting.status), TEMPLATE, [pod(current_pod_name(2))], None, CONFIG,
                         NOW + dt.timedelta(seconds=5))
    assert up.status["phase"] == "WaitingForInput" and "playlistsLeftOpen" not in up.status
    off = decide_live_job(live_job(up.status, generation=2, online=False), TEMPLATE, [pod(current_pod_name(2))],
                          None, CONFIG, NOW + dt.timedelta(seconds=6))
    assert off.delete_pods == [current_pod_name(2)] and off.finish_before_delete and off.create_pod_attempt is None


def test_a_closer_lost_before_it_finished_is_not_made_again() -> None:
    spec, later = ended_spec("switched off"), NOW + dt.timedelta(seconds=1)
    ended = decide_live_job(live_job(crashed_in_back_off(), generation=2, **spec), TEMPLATE, [], None, CONFIG, later)
    assert ended.create_pod_attempt == 2
    lost = decide_live_job(live_job(ended.status, generation=2, **spec), TEMPLATE, [], None, CONFIG, later)
    assert lost.phase_changes == ["Offline"] and lost.create_pod_attempt is None


def test_a_closer_the_api_server_refused_is_made_again_and_the_job_stays_stopping_meanwhile() -> None:
    """A ResourceQuota full as the job ends: the playlists still need closing once there is room."""
    spec, later = ended_spec("switched off"), NOW + dt.timedelta(seconds=1)
    ended = decide_live_job(live_job(crashed_in_back_off(), generation=2, **spec), TEMPLATE, [], None, CONFIG, later)
    assert (ended.create_pod_attempt, ended.finish_only) == (2, True)
    mark_pod_refused(live_job(crashed_in_back_off(), generation=2, **spec), ended, current_pod_name(2),
                     "exceeded quota: no-pods", later)
    assert ended.status["playlistsLeftOpen"] is True and ended.status["phase"] == "Stopping"
    assert f"Pod {current_pod_name(2)} was refused: exceeded quota" in ended.status["message"]
    again = decide_live_job(live_job(ended.status, generation=2, **spec), TEMPLATE, [], None, CONFIG,
                            later + dt.timedelta(seconds=5))
    assert (again.create_pod_attempt, again.finish_only) == (2, True) and again.status["phase"] == "Stopping"
    assert not again.phase_changes
    made = decide_live_job(live_job(again.status, generation=2, **spec), TEMPLATE,
                           [closer_pod(2, "Succeeded", exit_code=0)], None, CONFIG, later + dt.timedelta(seconds=9))
    assert made.phase_changes == ["Offline"] and "playlistsLeftOpen" not in made.status


def test_a_job_switched_on_again_while_its_closer_runs_starts_anew_once_the_closer_has_gone() -> None:
    spec, later = ended_spec("switched off"), NOW + dt.timedelta(seconds=1)
    ended = decide_live_job(live_job(crashed_in_back_off(), generation=2, **spec), TEMPLATE, [], None, CONFIG, later)
    on = decide_live_job(live_job(ended.status, generation=3), TEMPLATE, [closer_pod(2)], None, CONFIG, later)
    assert on.status["phase"] == "Stopping" and on.delete_pods == [current_pod_name(2)]
    assert on.create_pod_attempt is None and on.encoder_command is None
    # After the back-off of the encoder that died, as any restart.
    started = decide_live_job(live_job(on.status, generation=3), TEMPLATE, [], None, CONFIG,
                              NOW + dt.timedelta(seconds=5))
    assert started.status["phase"] == "Provisioning" and started.create_pod_attempt == 3 and not started.finish_only


def test_crashed_encoder_is_counted_once_and_replaced_after_backoff() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW).status
    crashed = [pod(current_pod_name(), "Failed", ready=False, exit_code=137, finished_at=NOW)]
    assert scheduled(status) == ("True", f"Pod {current_pod_name(1)} is bound")
    died = decide_live_job(live_job(status), TEMPLATE, crashed, None, CONFIG, NOW)
    assert died.status["restarts"] == 1 and died.status["attempt"] == 2
    assert died.status["phase"] == "Provisioning"
    assert scheduled(died.status) == ("False", "no encoder Pod (Provisioning)")  # not the dead one's binding
    assert died.delete_pods == [current_pod_name(1)]
    assert died.create_pod_attempt is None
    assert died.requeue_after == pytest.approx(2.0)
    # The dead Pod is still listed while it goes: no second count.
    deleting = [pod(current_pod_name(1), "Failed", ready=False, exit_code=137, finished_at=NOW, deleting=True)]
    during = decide_live_job(live_job(died.status), TEMPLATE, deleting, None, CONFIG, NOW + dt.timedelta(seconds=1))
    assert during.status["restarts"] == 1 and during.create_pod_attempt is None
    later = decide_live_job(live_job(during.status), TEMPLATE, [], None, CONFIG, NOW + dt.timedelta(seconds=3))
    assert later.create_pod_attempt == 2
    assert scheduled(later.status) == ("Unknown", f"Pod {current_pod_name(2)} waits for the scheduler")
    assert later.status["resourceName"] == current_pod_name(2)
    assert later.status["restarts"] == 1


def test_deleted_encoder_pod_counts_as_a_restart() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW).status
    gone = decide_live_job(live_job(status), TEMPLATE, [], None, CONFIG, NOW)
    assert gone.status["restarts"] == 1 and gone.status["attempt"] == 2


def test_crash_loop_ends_failed_not_forever() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status["restarts"] = status["consecutiveFailures"] = 2
    crashed = [pod(current_pod_name(), "Failed", ready=False, exit_code=1, finished_at=NOW)]
    decision = decide_live_job(live_job(status), TEMPLATE, crashed, None, CONFIG, NOW + dt.timedelta(minutes=5))
    assert decision.status["phase"] == "Failed"
    assert decision.create_pod_attempt is None
    assert "3 times" in decision.status["message"]


def test_config_error_exit_code_fails_at_once() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    refused = [pod(current_pod_name(), "Failed", ready=False, exit_code=2, finished_at=NOW)]
    decision = decide_live_job(live_job(status), TEMPLATE, refused, None, CONFIG, NOW)
    assert decision.status["phase"] == "Failed"
    assert next(c for c in decision.status["conditions"] if c["type"] == "EncoderRunning")["reason"] == "SpecInvalid"
    # Failed stays Failed for this generation; a spec change re-arms it.
    still = decide_live_job(live_job(decision.status), TEMPLATE, [], None, CONFIG, NOW)
    assert still.status["phase"] == "Failed" and still.create_pod_attempt is None
    rearmed = decide_live_job(live_job(decision.status, generation=2), TEMPLATE, [], None, CONFIG, NOW)
    assert rearmed.status["phase"] == "Provisioning"
    assert decision.status["finishedAt"] and "finishedAt" not in rearmed.status  # the last run's, not this one's


def test_switching_off_stops_then_goes_offline() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW).status
    stopping = decide_live_job(live_job(status, generation=2, online=False), TEMPLATE, [pod(current_pod_name())],
                               None, CONFIG, NOW)
    assert stopping.status["phase"] == "Stopping"
    assert stopping.delete_pods == [current_pod_name()]
    assert stopping.finish_before_delete  # the encoder writes ENDLIST before it goes
    offline = decide_live_job(live_job(stopping.status, generation=2, online=False), TEMPLATE, [], None, CONFIG, NOW)
    assert offline.status["phase"] == "Offline"
    back_on = decide_live_job(live_job(offline.status, generation=3), TEMPLATE, [], None, CONFIG, NOW)
    assert back_on.status["phase"] == "Provisioning"
    assert back_on.create_pod_attempt is not None


@pytest.mark.parametrize("old_pod", ["terminating", "exited"])
def test_switching_on_again_before_the_stopped_encoder_is_gone_is_not_a_crash(old_pod: str) -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW).status
    status["consecutiveFailures"] = CONFIG.max_restarts  # one more death would fail the job
    stopping = decide_live_job(live_job(status, generation=2, online=False), TEMPLATE, [pod(current_pod_name())],
                               None, CONFIG, NOW)
    going = (pod(current_pod_name(), deleting=True) if old_pod == "terminating"
             else pod(current_pod_name(), "Succeeded", ready=False, exit_code=0))
    on = decide_live_job(live_job(stopping.status, generation=3), TEMPLATE, [going], None, CONFIG, NOW)
    assert on.status["phase"] == "Stopping" and not on.phase_changes and not on.events
    assert on.status.get("restarts", 0) == 0 and on.status["consecutiveFailures"] == CONFIG.max_restarts
    assert on.create_pod_attempt is None  # not while the stopped encoder still writes the playlists
    assert on.delete_pods == ([] if old_pod == "terminating" else [current_pod_name()])
    started = decide_live_job(live_job(on.status, generation=3), TEMPLATE, [], None, CONFIG, NOW)
    assert started.status["phase"] == "Provisioning" and started.create_pod_attempt == 2
    assert started.status["resourceName"] == current_pod_name(2)


def test_an_encoder_pod_being_deleted_is_replaced_only_once_it_is_gone() -> None:
    """kubectl delete pod, an eviction or a drain: the Pod runs on through its grace period, still
    serving the Service and writing the playlists, so its successor must not start before it ends."""
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                             NOW).status
    deleting = [pod(current_pod_name(1), deleting=True)]
    died = decide_live_job(live_job(status), TEMPLATE, deleting, {"state": "live"}, CONFIG,
                           NOW + dt.timedelta(seconds=1))
    assert died.status["phase"] == "Provisioning" and died.status["restarts"] == 1
    assert died.create_pod_attempt is None and died.delete_pods == []
    # The back-off (2s) is over; the old encoder is still in its grace period.
    waiting = decide_live_job(live_job(died.status), TEMPLATE, deleting, None, CONFIG, NOW + dt.timedelta(seconds=4))
    assert waiting.create_pod_attempt is None
    assert waiting.requeue_after is not None and waiting.requeue_after <= 5
    assert waiting.status["phase"] == "Provisioning" and current_pod_name(1) in waiting.status["message"]
    assert waiting.status["restarts"] == 1 and not waiting.phase_changes
    # Its container exited (the Pod object may linger a moment): nothing of it runs any more.
    exited = [pod(current_pod_name(1), "Failed", ready=False, exit_code=137, deleting=True)]
    for pods in (exited, []):
        replaced = decide_live_job(live_job(waiting.status), TEMPLATE, pods, None, CONFIG,
                                   NOW + dt.timedelta(seconds=9))
        assert replaced.create_pod_attempt == 2 and replaced.status["resourceName"] == current_pod_name(2)
        assert replaced.status["restarts"] == 1  # one death, counted once


def test_a_pod_left_terminating_on_a_lost_node_is_not_waited_for_past_its_grace_period() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                             NOW).status
    lost = [pod(current_pod_name(), ready=False, deleting=True, killed_by=NOW + dt.timedelta(seconds=30))]
    died = decide_live_job(live_job(status), TEMPLATE, lost, None, CONFIG, NOW + dt.timedelta(seconds=10))
    status = died.status
    waiting = decide_live_job(live_job(status), TEMPLATE, lost, None, CONFIG, NOW + dt.timedelta(seconds=45))
    assert waiting.create_pod_attempt is None  # in its grace period, and a little after
    replaced = decide_live_job(live_job(waiting.status), TEMPLATE, lost, None, CONFIG, NOW + dt.timedelta(minutes=2))
    assert replaced.create_pod_attempt == 2  # its node is gone: the job goes on without it

def test_a_live_job_rescheduled_into_the_future_waits_in_pending_without_saying_it_stopped_or_failed() -> None:
    later = {"startDateTime": (NOW + dt.timedelta(hours=1)).isoformat()}
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    live = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                           NOW).status
    stopping = decide_live_job(live_job(live, generation=2, schedule=later), TEMPLATE, [pod(current_pod_name())],
                               {"state": "live"}, CONFIG, NOW + dt.timedelta(seconds=1))
    assert stopping.status["phase"] == "Stopping" and stopping.delete_pods == [current_pod_name()]
    pending = decide_live_job(live_job(stopping.status, generation=2, schedule=later), TEMPLATE, [], None, CONFIG,
                              NOW + dt.timedelta(seconds=30))
    assert pending.phase_changes == [LiveJobPhase.PENDING]
    assert announced("Stopping", pending) == []  # no "stopped": the stream goes on at its new start
    assert [reason for _, reason, _ in pending.events] == ["Pending"]
    assert pending.requeue_after == pytest.approx(3600 - 30)
    assert "finishedAt" not in pending.status

    # Rescheduled during a restart's back-off (no encoder runs): straight back to Pending.
    crashed = [pod(current_pod_name(), "Failed", ready=False, exit_code=1)]
    backoff = decide_live_job(live_job(live), TEMPLATE, crashed, None, CONFIG, NOW).status
    assert backoff["phase"] == "Provisioning"
    rescheduled = decide_live_job(live_job(backoff, generation=2, schedule=later), TEMPLATE, [], None, CONFIG,
                                  NOW + dt.timedelta(seconds=1))
    assert rescheduled.phase_changes == [LiveJobPhase.PENDING] and announced("Provisioning", rescheduled) == []
    assert rescheduled.create_pod_attempt is None


def test_a_switched_off_job_completes_at_its_finish_time_without_waiting_for_another_event() -> None:
    schedule = {"finishDateTime": (NOW + dt.timedelta(hours=1)).isoformat()}
    offline = decide_live_job(live_job(online=False, schedule=schedule), TEMPLATE, [], None, CONFIG, NOW)
    assert offline.status["phase"] == "Offline" and offline.create_pod_attempt is None
    assert offline.requeue_after == pytest.approx(3600)
    woken = decide_live_job(live_job(offline.status, online=False, schedule=schedule), TEMPLATE, [], None, CONFIG,
                            NOW + dt.timedelta(seconds=offline.requeue_after))
    assert woken.status["phase"] == "Completed" and announced("Offline", woken) == ["stopped"]


def test_schedule_waits_for_start_and_completes_at_finish() -> None:
    schedule = {"startDateTime": "2026-11-23T13:00:00Z", "finishDateTime": "2026-11-23T14:00:00Z"}
    early = decide_live_job(live_job(schedule=schedule), TEMPLATE, [], None, CONFIG, NOW)
    assert early.status["phase"] == "Pending"
    assert early.create_pod_attempt is None
    assert early.requeue_after == pytest.approx(3600)
    started = decide_live_job(live_job(early.status, schedule=schedule), TEMPLATE, [], None, CONFIG,
                              NOW + dt.timedelta(hours=1))
    assert started.status["phase"] == "Provisioning"
    over = decide_live_job(live_job(started.status, schedule=schedule), TEMPLATE, [], None, CONFIG,
                           NOW + dt.timedelta(hours=2))
    assert over.status["phase"] == "Completed"


def test_a_finish_time_moved_under_a_running_encoder_is_sent_to_it() -> None:
    """The encoder ends the job at the finish time it holds: a game in overtime, the end moved an hour
    later, must not end at the old one."""
    schedule = {"finishDateTime": "2026-11-23T13:00:00Z"}
    status = decide_live_job(live_job(schedule=schedule), TEMPLATE, [], None, CONFIG, NOW).status
    pods = [pod(current_pod_name())]
    holding = {"state": "live", "finishAt": "2026-11-23T13:00:00Z"}
    live = decide_live_job(live_job(status, schedule=schedule), TEMPLATE, pods, holding, CONFIG, NOW)
    assert live.status["phase"] == "Live" and live.encoder_command is None
    later = {"finishDateTime": "2026-11-23T14:00:00Z"}
    moved = decide_live_job(live_job(live.status, generation=2, schedule=later), TEMPLATE, pods, holding, CONFIG,
                            NOW)
    assert moved.encoder_command == "finish-at?at=2026-11-23T14%3A00%3A00%2B00%3A00"
    assert moved.status["phase"] == "Live" and moved.delete_pods == []
    dropped = decide_live_job(live_job(live.status, generation=2), TEMPLATE, pods, holding, CONFIG, NOW)
    assert dropped.encoder_command == "finish-at?at="
    older_encoder = decide_live_job(live_job(live.status, generation=2, schedule=later), TEMPLATE, pods,
                                    {"state": "live"}, CONFIG, NOW)
    assert older_encoder.encoder_command is None


def test_a_recordings_end_moved_while_it_records_is_sent_to_the_recorder() -> None:
    window = {"end": "2026-11-23T13:00:00Z"}
    first = naming.pod_name("rec", "recorder", "uid-r", 1)
    status = decide_record_job(record_job(timeRange=window), None, [], None, CONFIG, NOW).status
    report = {"recording": {"paused": False}, "finishAt": "2026-11-23T13:00:00Z"}
    recording = decide_record_job(record_job(status, timeRange=window), None, [pod(first)], report, CONFIG, NOW)
    assert recording.status["phase"] == "Started" and recording.encoder_command is None
    later = {"end": "2026-11-23T15:30:00Z"}
    moved = decide_record_job(record_job(recording.status, generation=2, timeRange=later), None, [pod(first)],
                              report, CONFIG, NOW)
    assert moved.encoder_command == "finish-at?at=2026-11-23T15%3A30%3A00%2B00%3A00"
    assert moved.delete_pods == [] and moved.status["phase"] == "Started"

def test_missing_template_keeps_job_pending_with_a_reason() -> None:
    lookup = TemplateLookup(None, message="no JobTemplate with id 1")
    decision = decide_live_job(live_job(), lookup, [], None, CONFIG, NOW)
    assert decision.status["phase"] == "Pending"
    assert decision.create_pod_attempt is None
    resolved = next(c for c in decision.status["conditions"] if c["type"] == "TemplateResolved")
    assert resolved["status"] == "False" and "id 1" in resolved["message"]


def test_a_passthrough_job_lists_its_one_rendition_and_does_not_wait_for_a_template() -> None:
    """inputClass Single passes the source through: the template's ladder is never made."""
    single = {"input": {"serverType": "RTMP", "inputClass": "Single"}}
    first = decide_live_job(live_job(**single), TEMPLATE, [], None, CONFIG, NOW)
    assert first.create_pod_attempt == 1
    assert first.status["urls"]["outputManifests"] == {
        "source": "http://s3.local:8333/media/live/news/source/index.m3u8"}
    missing = TemplateLookup(None, ConditionReason.TEMPLATE_NOT_FOUND, "no JobTemplate with id 1")
    anyway = decide_live_job(live_job(**single), missing, [], None, CONFIG, NOW)
    assert anyway.create_pod_attempt == 1 and anyway.status["phase"] == "Provisioning"
    resolved = next(c for c in anyway.status["conditions"] if c["type"] == "TemplateResolved")
    assert resolved["status"] == "False" and "not needed while inputClass is Single" in resolved["message"]


def test_an_nvenc_template_asks_for_one_gpu_for_encoders_only() -> None:
    nvenc = JobTemplateSpec.model_validate({**TEMPLATE.template.to_k8s(), "hardwareAcceleration": "NVENC"}) \
        if TEMPLATE.template else None
    container = build_encoder_pod(live_job(), nvenc, CONFIG, 1)["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["memory"] == "2Gi"  # the configured limits stay
    assert {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,video,utility"} in container["env"]
    software = build_encoder_pod(live_job(), TEMPLATE.template, CONFIG, 1)["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in software["resources"].get("limits", {})
    passthrough = live_job(input={"serverType": "RTMP", "inputClass": "Single"})
    copy = build_encoder_pod(passthrough, nvenc, CONFIG, 1)["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in copy["resources"].get("limits", {})


def test_a_hung_encoder_is_ended_by_the_kubelet_and_its_death_counted() -> None:
    container = build_encoder_pod(live_job(), TEMPLATE.template, CONFIG, 1)["spec"]["containers"][0]
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"] == {"path": "/livez", "port": "status"}
    # Minutes of no answer, not the seconds after which readiness takes it out of its Service.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 300 > readiness["periodSeconds"] * 3
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    live = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG, NOW)
    killed = pod(current_pod_name(), "Failed", ready=False, exit_code=137, finished_at=NOW + dt.timedelta(minutes=6))
    after = decide_live_job(live_job(live.status), TEMPLATE, [killed], None, CONFIG, NOW + dt.timedelta(minutes=6))
    assert after.status["restarts"] == 1 and after.status["attempt"] == 2


def test_encoder_pod_is_least_privileged_and_wired_to_its_secrets() -> None:
    job = live_job()
    pod_body = build_encoder_pod(job, TEMPLATE.template, CONFIG, 1)
    assert pod_body["metadata"]["name"] == current_pod_name()
    assert pod_body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = pod_body["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = spec["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    secret_name = naming.stream_key_secret_name("news", "uid-1")
    assert env["ONAIR_STREAM_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secret_name
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    # Temporary (STS) credentials carry a session token; long-lived keys have none.
    token = env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["name"] == env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] and token["optional"]
    control = env["ONAIR_CONTROL_KEY"]["valueFrom"]["secretKeyRef"]
    assert control == {"name": secret_name, "key": "controlKey", "optional": True}
    secret = build_job_secret(job, CONFIG.stream_key_seed)
    assert secret["metadata"]["name"] == secret_name
    key = secret["stringData"]["streamKey"]
    assert uuid.UUID(key).version == 4 and key == str(uuid.UUID(key))
    assert key == derive_stream_key(CONFIG.stream_key_seed, str(job.metadata.namespace), "news", "uid-1")
    assert secret["stringData"]["controlKey"] == derive_control_key(
        CONFIG.stream_key_seed, str(job.metadata.namespace), "news", "uid-1")
    assert secret["stringData"]["controlKey"] != key
    recreated = job.model_copy(update={"metadata": job.metadata.model_copy(update={"uid": "uid-2"})})
    assert build_job_secret(recreated, CONFIG.stream_key_seed)["stringData"]["streamKey"] != key
    assert build_job_secret(job, "another-seed-of-at-least-32-characters")["stringData"]["streamKey"] != key
    service = build_ingest_service(job, CONFIG)
    assert service["spec"]["selector"] == {"onair.dev/job": "news", "onair.dev/role": "encoder"}
    # Headless: the name resolves to the Pod, so the Service's ports must be the ones the Pod listens on.
    assert service["spec"]["clusterIP"] == "None"
    listening = {(p["name"], p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert {(p["name"], p["port"], p["protocol"]) for p in service["spec"]["ports"]} <= listening
    balanced = build_ingest_service(job, CONFIG.model_copy(update={"service_type": "LoadBalancer"}))
    assert "clusterIP" not in balanced["spec"]


def test_encoder_pods_take_the_platforms_security_settings_and_stay_restricted() -> None:
    """OpenShift's restricted-v2 assigns each namespace its own uid range and refuses a fixed runAsUser
    outside it: the chart's podSecurityContext without one reaches the encoder Pods too. What it cannot
    do is loosen them below the restricted Pod Security Standard."""
    platform = CONFIG.model_copy(update={
        "encoder_image_pull_policy": "Always",
        "encoder_pod_security_context": {"runAsNonRoot": False, "supplementalGroups": [5000],
                                         "seccompProfile": {"type": "Unconfined"}},
        "encoder_container_security_context": {"allowPrivilegeEscalation": True, "privileged": True, "runAsUser": 0,
                                               "capabilities": {"add": ["NET_ADMIN"]},
                                               "seccompProfile": {"type": "Localhost",
                                                                  "localhostProfile": "onair.json"}},
    })
    spec = build_encoder_pod(live_job(), TEMPLATE.template, platform, 1)["spec"]
    assert spec["securityContext"] == {"runAsNonRoot": True, "supplementalGroups": [5000],
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    container = spec["containers"][0]
    assert container["imagePullPolicy"] == "Always"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "Localhost", "localhostProfile": "onair.json"}}
    # By default the image's own non-root uid, as before.
    default = build_encoder_pod(live_job(), TEMPLATE.template, CONFIG, 1)["spec"]
    assert default["securityContext"]["runAsUser"] == 10001 and default["securityContext"]["runAsNonRoot"]


def test_the_preview_url_names_the_key_the_encoder_is_given_on_its_own_port() -> None:
    job = live_job(decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status)
    container = build_encoder_pod(job, TEMPLATE.template, CONFIG, 1)["spec"]["containers"][0]
    key = {e["name"]: e for e in container["env"]}["ONAIR_PREVIEW_KEY"]["value"]
    assert key == derive_preview_key(CONFIG.stream_key_seed, "ns", "news", "uid-1")
    assert key not in (derive_stream_key(CONFIG.stream_key_seed, "ns", "news", "uid-1"),
                       derive_control_key(CONFIG.stream_key_seed, "ns", "news", "uid-1"))
    assert "--preview-port=8091" in container["args"]
    assert ("preview", 8091, "TCP") in {(p["name"], p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ("preview", 8091) in {(p["name"], p["port"]) for p in build_ingest_service(job, CONFIG)["spec"]["ports"]}
    urls = decide_live_job(job, TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW).status["urls"]
    service = naming.service_name("news", "uid-1")
    assert urls["webSocketConnection"] == f"ws://{service}.ns.svc:8091/websocketplay/{key}"
    public = CONFIG.model_copy(update={"service_type": "NodePort", "ingest_host": "ingest.example.net"})

    def preview_url(node_ports: dict[str, int]) -> str | None:
        decision = decide_live_job(job, TEMPLATE, [pod(current_pod_name())], None, public, NOW,
                                   ServiceEndpoint(node_ports=node_ports))
        return decision.status["urls"].get("webSocketConnection")

    assert preview_url({"rtmp": 31935, "srt": 31900, "preview": 31991}) == \
        f"ws://ingest.example.net:31991/websocketplay/{key}"
    assert preview_url({"rtmp": 31935, "srt": 31900}) is None, "a Service without the port: no URL that fails"
    # Relayed by the gateway: its public host and TLS, whatever the ingest's address.
    relayed = CONFIG.model_copy(update={"preview_base_url": "wss://onair.example.com/", "ingest_address": "pod-ip"})
    urls = decide_live_job(job, TEMPLATE, [pod(current_pod_name())], None, relayed, NOW).status["urls"]
    assert urls["webSocketConnection"] == f"wss://onair.example.com/websocketplay/{key}"


def test_a_preview_base_that_is_not_a_websocket_url_is_refused() -> None:
    seed = {"ONAIR_STREAM_KEY_SEED": CONFIG.stream_key_seed}
    for bad in ("https://onair.example.com", "wss://", "wss://host/path?query", "onair.example.com"):
        with pytest.raises(ValidationError, match="preview_base_url"):
            OperatorConfig.from_env({**seed, "ONAIR_PREVIEW_BASE_URL": bad})
    assert OperatorConfig.from_env({**seed, "ONAIR_PREVIEW_BASE_URL": "ws://gateway:8080"}).preview_base_url


def test_a_job_whose_encoder_has_not_been_read_yet_keeps_its_phase() -> None:
    """An operator that has just started knows the Pods before their encoders' reports; an encoder on its
    way out reports stopping, failed or completed. Neither is a return to WaitingForInput."""
    name = current_pod_name()
    started = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    for state, phase in (("live", "Live"), ("reconnecting", "Reconnecting")):
        running = decide_live_job(live_job(started), TEMPLATE, [pod(name)], {"state": state}, CONFIG, NOW).status
        assert running["phase"] == phase
        for report in (None, {"state": "stopping"}, {"state": "failed"}, {"state": "completed"}):
            later = decide_live_job(live_job(running), TEMPLATE, [pod(name)], report, CONFIG,
                                    NOW + dt.timedelta(hours=1))
            assert later.status["phase"] == phase and not later.phase_changes, (state, report)
            assert later.status.get("startedAt") == running.get("startedAt")


def test_waiting_out_a_restart_back_off_writes_the_status_once() -> None:
    """Each status write comes back as a watch event and a reconcile: the status it decides then must be
    the same, or the job writes itself in a loop for the whole back-off."""
    name = current_pod_name()
    config = CONFIG.model_copy(update={"restart_backoff_seconds": 20.0})
    live = decide_live_job(live_job(), TEMPLATE, [], None, config, NOW).status
    live = decide_live_job(live_job(live), TEMPLATE, [pod(name)], {"state": "live"}, config, NOW).status
    died = decide_live_job(live_job(live), TEMPLATE, [pod(name, "Failed", ready=False, exit_code=1)], None, config,
                           NOW).status
    gone = pod(name, "Failed", ready=False, exit_code=1, deleting=True)
    waiting = decide_live_job(live_job(died), TEMPLATE, [gone], None, config, NOW + dt.timedelta(seconds=0.2)).status
    assert "restarting the encoder (attempt 2) at 2026-" in waiting["message"], waiting["message"]
    for seconds in (0.4, 1.5, 9.0):
        again = decide_live_job(live_job(waiting), TEMPLATE, [gone], None, config, NOW + dt.timedelta(seconds=seconds))
        assert again.status == waiting and again.create_pod_attempt is None


def test_switched_on_again_before_the_stopped_pods_deletion_is_seen_is_not_a_crash() -> None:
    name = current_pod_name()
    live = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    live = decide_live_job(live_job(live), TEMPLATE, [pod(name)], {"state": "live"}, CONFIG, NOW).status
    stopping = decide_live_job(live_job(live, generation=2, online=False), TEMPLATE, [pod(name)], {"state": "live"},
                               CONFIG, NOW).status
    # online: true again; the cache still shows the Pod as it was before the delete.
    on_again = decide_live_job(live_job(stopping, generation=3), TEMPLATE, [pod(name)], {"state": "live"}, CONFIG,
                               NOW)
    assert on_again.status["phase"] == "Stopping" and not on_again.phase_changes
    deleted = decide_live_job(live_job(on_again.status, generation=3), TEMPLATE, [pod(name, deleting=True)], None,
                              CONFIG, NOW)
    assert deleted.status["phase"] == "Stopping"
    assert deleted.status.get("restarts", 0) == live.get("restarts", 0)
    assert "EncoderRestarted" not in [event[1] for event in deleted.events]


def test_a_stop_does_not_wait_for_ever_on_a_pod_lost_with_its_node() -> None:
    """The kubelet that would report the end of a Pod being deleted is gone with its node: past its
    grace period (and a margin) the Pod counts as ended, as it does when it died on its own."""
    name = current_pod_name()
    live = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    live = decide_live_job(live_job(live), TEMPLATE, [pod(name)], {"state": "live"}, CONFIG, NOW).status
    stopping = decide_live_job(live_job(live, generation=2, online=False), TEMPLATE, [pod(name)], None, CONFIG,
                               NOW).status
    assert stopping["phase"] == "Stopping"
    deleting = pod(name, deleting=True, killed_by=NOW + dt.timedelta(seconds=30))
    waits = decide_live_job(live_job(stopping, generation=2, online=False), TEMPLATE, [deleting], None, CONFIG,
                            NOW + dt.timedelta(seconds=1))
    assert waits.status["phase"] == "Stopping"
    assert waits.requeue_after == 30 + STUCK_TERMINATING_SECONDS - 1, "looked at again when it would be lost"
    lost_at = NOW + dt.timedelta(seconds=30 + STUCK_TERMINATING_SECONDS)
    off = decide_live_job(live_job(stopping, generation=2, online=False), TEMPLATE, [deleting], None, CONFIG, lost_at)
    assert off.status["phase"] == "Offline"
    finished = decide_live_job(live_job(stopping, generation=2, schedule={"finishDateTime": NOW.isoformat()}),
                               TEMPLATE, [deleting], None, CONFIG, lost_at)
    assert finished.status["phase"] == "Completed"
    # Switched on again: the next attempt starts under a fresh name, whether or not the old object goes,
    # after Offline, as after any stop: the stream did stop.
    again = decide_live_job(live_job(stopping, generation=3), TEMPLATE, [deleting], None, CONFIG, lost_at)
    assert again.status["phase"] == "Offline" and again.create_pod_attempt is None and again.requeue_after == 0
    assert events_announced(LiveJobPhase.STOPPING, again.phase_changes, True) == [("stopped", LiveJobPhase.OFFLINE)]
    started = decide_live_job(live_job(again.status, generation=3), TEMPLATE, [deleting], None, CONFIG, lost_at)
    assert started.create_pod_attempt == 2 and started.status["restarts"] == live.get("restarts", 0)


def test_single_input_class_passes_the_source_through() -> None:
    standard = build_encoder_pod(live_job(), TEMPLATE.template, CONFIG, 1)
    single = build_encoder_pod(live_job(input={"serverType": "RTMP", "inputClass": "Single"}), TEMPLATE.template,
                               CONFIG, 1)

    def job_config(pod_body: dict[str, Any]) -> dict[str, Any]:
        env = {e["name"]: e for e in pod_body["spec"]["containers"][0]["env"]}
        return dict(json.loads(env["ONAIR_JOB_CONFIG"]["value"]))

    assert [r["name"] for r in job_config(standard)["template"]["renditions"]] == ["720p", "360p"]
    assert job_config(single)["template"] is None


def test_a_pod_made_to_close_the_playlists_says_so_to_the_encoder_and_in_its_labels() -> None:
    def told(pod_body: dict[str, Any]) -> bool:
        env = {e["name"]: e for e in pod_body["spec"]["containers"][0]["env"]}
        return load_job_config({"ONAIR_JOB_CONFIG": env["ONAIR_JOB_CONFIG"]["value"],
                                "ONAIR_STREAM_KEY": "k" * 16}).finish_only

    closer = build_encoder_pod(live_job(), TEMPLATE.template, CONFIG, 2, finish_only=True)
    encoder = build_encoder_pod(live_job(), TEMPLATE.template, CONFIG, 2)
    assert told(closer) and closer["metadata"]["labels"][LABEL_FINISH_ONLY] == "true"
    assert not told(encoder) and LABEL_FINISH_ONLY not in encoder["metadata"]["labels"]
    assert pod_state(closer).finish_only and not pod_state(encoder).finish_only


def test_a_later_recorder_goes_on_with_the_progress_of_a_range_with_no_start() -> None:
    """Progress of a timeRange with an end only runs from the first recorder's start, not the current one's."""
    end = NOW + dt.timedelta(hours=1)
    job = record_job({"phase": "Started", "startedAt": (NOW - dt.timedelta(hours=1)).isoformat(), "attempt": 1},
                     timeRange={"end": end.isoformat()})
    env = {e["name"]: e.get("value") for e in build_encoder_pod(job, None, CONFIG, 2)["spec"]["containers"][0]["env"]}
    config = load_job_config({"ONAIR_JOB_CONFIG": env["ONAIR_JOB_CONFIG"], "ONAIR_LISTEN_HOST": "127.0.0.9"})
    assert config.first_started_at == NOW - dt.timedelta(hours=1)
    encoder = Encoder(config, Ports(), Path("/nonexistent"), None, 10**6)  # type: ignore[arg-type]
    encoder.status.finish_at = end
    assert encoder._progress(NOW) == 0.5  # half of the two hours, though this recorder has just started


def test_a_recorder_that_joins_mp4s_at_its_end_gets_the_longer_grace_period_and_is_told_it() -> None:
    def grace(job: LiveJob | RecordJob, config: OperatorConfig = CONFIG) -> tuple[int, str]:
        spec = build_encoder_pod(job, TEMPLATE.template, config, 1)["spec"]
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        return spec["terminationGracePeriodSeconds"], env["ONAIR_TERMINATION_GRACE_SECONDS"]

    assert grace(live_job()) == (30, "30")
    assert grace(record_job()) == (30, "30")  # HLS: the stop uploads the last segments only
    mp4 = record_job(output={"bucket": "media", "format": "mp4"})
    assert grace(mp4) == (600, "600")
    longer = CONFIG.model_copy(update={"encoder_termination_grace_seconds": 900})
    assert grace(mp4, longer) == (900, "900") and grace(live_job(), longer) == (900, "900")


def record_job(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> RecordJob:
    body: dict[str, Any] = {
        "apiVersion": "onair.dev/v1alpha1", "kind": "RecordJob",
        "metadata": {"name": "rec", "namespace": "ns", "uid": "uid-r", "generation": generation},
        "spec": {"source": {"streamUrl": "rtmp://origin/live/x"}, "output": {"bucket": "media"}, **spec},
    }
    if status is not None:
        body["status"] = status
    return RecordJob.model_validate(body)


def test_a_pause_while_a_following_recording_has_no_recorder_is_dated_when_it_was_asked_for() -> None:
    """A recording that follows its LiveJob, paused and resumed during a retry's back-off (no recorder
    to date it): the operator dates the pause, so that the next recorder leaves out that stretch and
    not everything from the start of the range."""
    follow = {"source": {"liveJobRef": "news"},
              "timeRange": {"start": (NOW - dt.timedelta(minutes=10)).isoformat(),
                            "end": (NOW + dt.timedelta(hours=1)).isoformat()}}
    started = decide_record_job(record_job(**follow), live_job(), [], None, CONFIG, NOW)
    assert started.create_pod_attempt == 1 and started.status["startedAt"]
    died_at = NOW + dt.timedelta(minutes=1)
    evicted = [pod(naming.pod_name("rec", "recorder", "uid-r", 1), "Failed", ready=False, exit_code=3,
                   finished_at=died_at)]
    assert CONFIG.restart_backoff_seconds >= 2  # all that follows happens within the back-off
    paused_at, resumed_at = died_at + dt.timedelta(seconds=0.5), died_at + dt.timedelta(seconds=1.5)
    # The dead recorder's Pod is still there, in its back-off, and its last report with it (no pause).
    last_words = {"state": "live", "recording": {"paused": False, "pausedRanges": []}}
    paused = decide_record_job(record_job(started.status, **follow, paused=True), live_job(), evicted, last_words,
                               CONFIG, paused_at)
    again = decide_record_job(record_job(paused.status, **follow, paused=True), live_job(), evicted, last_words,
                              CONFIG, paused_at + dt.timedelta(seconds=0.5))
    assert paused.create_pod_attempt is None and again.create_pod_attempt is None
    assert again.status["pausedRanges"] == paused.status["pausedRanges"]  # dated once
    assert [(r.start, r.end) for r in RecordJobStatus.model_validate(paused.status).paused_ranges] == [
        (paused_at, None)]
    resumed = decide_record_job(record_job(paused.status, **follow), live_job(), evicted, last_words, CONFIG,
                                resumed_at)
    assert [(r.start, r.end) for r in RecordJobStatus.model_validate(resumed.status).paused_ranges] == [
        (paused_at, resumed_at)]
    # The next recorder is made with them (its back-off over).
    retried = decide_record_job(record_job(resumed.status, **follow), live_job(), evicted, last_words, CONFIG,
                                resumed_at + dt.timedelta(minutes=10))
    assert retried.create_pod_attempt == 2
    assert len(RecordJobStatus.model_validate(retried.status).paused_ranges) == 1
    # Created paused, its first recorder is paused from the range's start (the recorder dates that).
    created_paused = decide_record_job(record_job(**follow, paused=True), live_job(), [], None, CONFIG, NOW)
    assert created_paused.create_pod_attempt == 1 and created_paused.status["pausedRanges"] == []
    # As many pauses as a recorder notes, and no more: the status stays valid.
    full = {**resumed.status, "pausedRanges": [{"start": NOW.isoformat(), "end": NOW.isoformat()}] * MAX_PAUSED_RANGES}
    at_limit = decide_record_job(record_job(full, **follow, paused=True), live_job(), evicted, last_words, CONFIG,
                                 resumed_at)
    assert len(RecordJobStatus.model_validate(at_limit.status).paused_ranges) == MAX_PAUSED_RANGES


def test_a_stream_recording_whose_source_sends_nothing_is_not_ready_and_says_why() -> None:
    """The recorder runs and is ready, but nothing comes from its streamUrl (down, a wrong URL): the
    job does not read "Ready: recording" for its whole range; it says what the recorder says, and is
    ready again once media comes."""
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    waiting = {"state": "waiting", "message": "could not reach rtmp://origin/live/x: connection refused"}
    silent = decide_record_job(record_job(status), None, [pod(name)], waiting, CONFIG, NOW).status
    conditions = {condition["type"]: condition for condition in silent["conditions"]}
    assert silent["phase"] == "Started"
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "SourceUnreachable")
    assert "connection refused" in conditions["Ready"]["message"]
    assert (conditions["SourceAvailable"]["status"], conditions["SourceAvailable"]["reason"]) == (
        "False", "SourceUnreachable")
    live = decide_record_job(record_job(silent), None, [pod(name)], {"state": "live"}, CONFIG, NOW).status
    conditions = {condition["type"]: condition for condition in live["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("True", "Recording")
    assert conditions["SourceAvailable"]["status"] == "True"
    # A recorder not read yet is taken to record, as before: no false alarm at an operator's start.
    unread = decide_record_job(record_job(status), None, [pod(name)], None, CONFIG, NOW).status
    assert {c["type"]: c for c in unread["conditions"]}["Ready"]["status"] == "True"
    # Nor while a recorder that has just started connects (its container started at 11:59:00): the
    # silence is looked at again once it has had the time.
    connecting = decide_record_job(record_job(status), None, [pod(name)], waiting, CONFIG,
                                   dt.datetime(2026, 11, 23, 11, 59, 5, tzinfo=dt.UTC))
    assert {c["type"]: c for c in connecting.status["conditions"]}["Ready"]["status"] == "True"
    assert connecting.requeue_after is not None and connecting.requeue_after <= 15


def test_a_record_job_retried_or_re_armed_names_its_new_pod_and_forgets_the_old_error() -> None:
    first, second = (naming.pod_name("rec", "recorder", "uid-r", attempt) for attempt in (1, 2))
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    crashed = [pod(first, "Failed", ready=False, exit_code=1, finished_at=NOW - dt.timedelta(minutes=1))]
    retry = decide_record_job(record_job(status), None, crashed, None, CONFIG, NOW)
    assert retry.create_pod_attempt == 2 and retry.status["resourceName"] == second
    refused = decide_record_job(record_job(status), None, [pod(first, "Failed", ready=False, exit_code=2)], None,
                                CONFIG, NOW).status
    assert refused["phase"] == "Failed" and refused["errorMessage"] and refused["finishedAt"]
    body = record_job(refused).model_dump(mode="json", by_alias=True, exclude_none=True)
    body["metadata"]["generation"] = 2
    again = decide_record_job(RecordJob.model_validate(body), None, [], None, CONFIG, NOW).status
    assert again["phase"] != "Failed" and "errorMessage" not in again and "finishedAt" not in again


def test_a_new_attempts_pod_whose_status_write_was_lost_is_the_current_one_not_a_stale_one() -> None:
    """The Pod of a new attempt is created before its number is written into the status: a write
    lost between the two (a conflict, an operator restart) must not get that Pod deleted."""
    first, second = (naming.pod_name("rec", "recorder", "uid-r", attempt) for attempt in (1, 2))
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    crashed = pod(first, "Failed", ready=False, exit_code=1, finished_at=NOW - dt.timedelta(minutes=1))
    retry = decide_record_job(record_job(status), None, [crashed], None, CONFIG, NOW)
    assert retry.create_pod_attempt == 2 and retry.status["attempt"] == 2
    # The status write of `retry` failed: the job still says attempt 1, and both Pods are there.
    again = decide_record_job(record_job(status), None, [crashed, pod(second)], {"recording": {"paused": False}},
                              CONFIG, NOW + dt.timedelta(seconds=1))
    assert second not in again.delete_pods and again.create_pod_attempt is None
    assert again.status["attempt"] == 2 and again.status["resourceName"] == second
    assert again.status["phase"] == "Started"
    # A LiveJob switched on again while its stopped encoder went: the next encoder's Pod is made in
    # the same reconcile that numbers it.
    live = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    live = decide_live_job(live_job(live), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG, NOW).status
    stopping = decide_live_job(live_job(live, generation=2, online=False), TEMPLATE, [pod(current_pod_name())],
                               {"state": "live"}, CONFIG, NOW).status
    on_again = decide_live_job(live_job(stopping, generation=3), TEMPLATE, [], None, CONFIG, NOW)
    assert on_again.create_pod_attempt == 2
    lost_write = decide_live_job(live_job(stopping, generation=3), TEMPLATE, [pod(current_pod_name(2), ready=False)],
                                 None, CONFIG, NOW + dt.timedelta(seconds=1))
    assert lost_write.delete_pods == [] and lost_write.status["attempt"] == 2
    assert lost_write.status["phase"] == "Provisioning" and lost_write.status.get("restarts", 0) == 0


def test_a_recorder_waiting_for_its_bucket_is_not_ready_and_says_why() -> None:
    first = naming.pod_name("rec", "recorder", "uid-r", 1)
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    denied = {"state": "waiting", "storage": {"available": False, "reason": "AccessDenied",
                                              "message": "bucket 'media' refused the credentials (InvalidAccessKeyId)"}}
    waiting = decide_record_job(record_job(status), None, [pod(first, ready=False)], denied, CONFIG, NOW).status
    conditions = {c["type"]: c for c in waiting["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] == "WaitingForStorage"
    assert conditions["StorageAvailable"]["status"] == "False"
    assert conditions["StorageAvailable"]["reason"] == "AccessDenied"
    assert "InvalidAccessKeyId" in conditions["Ready"]["message"]
    recording = decide_record_job(record_job(waiting), None, [pod(first)], {"state": "live"}, CONFIG, NOW).status
    conditions = {c["type"]: c for c in recording["conditions"]}
    assert recording["phase"] == "Started" and conditions["Ready"]["status"] == "True"
    assert conditions["StorageAvailable"]["status"] == "True"


def test_a_record_job_naming_a_missing_template_waits_for_it_instead_of_copying() -> None:
    missing = TemplateLookup(None, ConditionReason.TEMPLATE_NOT_FOUND, "no JobTemplate with id 999 in ns")
    waiting = decide_record_job(record_job(jobTemplateId=999), None, [], None, CONFIG, NOW, missing)
    assert waiting.create_pod_attempt is None and waiting.status["phase"] == "Initial"
    assert waiting.status["timings"][-1]["reason"] == "TemplateNotFound"
    assert waiting.requeue_after is not None
    found = decide_record_job(record_job(waiting.status, jobTemplateId=999), None, [], None, CONFIG, NOW, TEMPLATE)
    assert found.create_pod_attempt == 1 and found.status["phase"] == "Started"

def test_a_record_job_status_from_before_attempts_finds_its_recorder_by_its_retries() -> None:
    status = {**decide_record_job(record_job(), None, [], None, CONFIG, NOW).status, "retries": 2}
    status.pop("attempt")
    third = naming.pod_name("rec", "recorder", "uid-r", 3)
    recording = decide_record_job(record_job(status), None, [pod(third)], {"recording": {"paused": False}}, CONFIG,
                                  NOW)
    assert recording.delete_pods == [] and recording.create_pod_attempt is None
    assert recording.status["attempt"] == 3 and recording.status["resourceName"] == third


def test_a_record_job_whose_recorder_refused_its_spec_records_again_once_the_spec_is_fixed() -> None:
    """The refused recorder's Pod is kept while the job is Failed (its logs say why): the fixed spec
    gets a new recorder, not that Pod's verdict again."""
    first, second = (naming.pod_name("rec", "recorder", "uid-r", attempt) for attempt in (1, 2))
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    refused = [pod(first, "Failed", ready=False, exit_code=2)]
    failed = decide_record_job(record_job(status), None, refused, None, CONFIG, NOW).status
    assert failed["phase"] == "Failed"
    assert decide_record_job(record_job(failed), None, refused, None, CONFIG, NOW).delete_pods == []
    fixed = decide_record_job(record_job(failed, generation=2), None, refused, None, CONFIG,
                              NOW + dt.timedelta(minutes=1))
    assert fixed.status["phase"] == "Started" and "errorMessage" not in fixed.status
    assert fixed.phase_changes == [RecordJobPhase.INITIAL, RecordJobPhase.STARTED]
    assert fixed.create_pod_attempt == 2 and fixed.status["resourceName"] == second
    assert fixed.status["retries"] == 0  # a fixed spec gets the restart allowance of a new job
    assert fixed.delete_pods == [first]
    # The next observation: the old Pod going, the new one recording.
    pods = [pod(first, "Failed", ready=False, exit_code=2, deleting=True), pod(second)]
    recording = decide_record_job(record_job(fixed.status, generation=2), None, pods,
                                  {"recording": {"paused": False}}, CONFIG, NOW + dt.timedelta(minutes=1, seconds=5))
    assert recording.status["phase"] == "Started" and not recording.phase_changes
    assert recording.create_pod_attempt is None and recording.delete_pods == []


def test_a_recording_rescheduled_into_the_future_stops_its_recorder_and_starts_anew_then() -> None:
    first, second = (naming.pod_name("rec", "recorder", "uid-r", attempt) for attempt in (1, 2))
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    for paused in (False, True):
        running = decide_record_job(record_job(status, paused=paused), None, [pod(first)],
                                    {"recording": {"paused": paused}}, CONFIG, NOW).status
        assert running["phase"] == ("Paused" if paused else "Started")
        window = {"start": (NOW + dt.timedelta(minutes=1)).isoformat()}
        later = decide_record_job(record_job(running, generation=2, paused=paused, timeRange=window), None,
                                  [pod(first)], {"recording": {"paused": paused}}, CONFIG,
                                  NOW + dt.timedelta(seconds=1))
        assert later.phase_changes == [RecordJobPhase.INITIAL] and announced(running["phase"], later) == []
        assert [reason for _, reason, _ in later.events] == ["Initial"]
        assert later.delete_pods == [first]  # no recording while the status says Initial
        assert later.requeue_after == pytest.approx(59)
    # The new start comes while the old recorder is still in its grace period: the new one waits for it.
    window = {"start": (NOW + dt.timedelta(minutes=1)).isoformat()}
    going = [pod(first, deleting=True, killed_by=NOW + dt.timedelta(minutes=1, seconds=20))]
    waiting = decide_record_job(record_job(later.status, generation=2, timeRange=window), None, going, None, CONFIG,
                                NOW + dt.timedelta(minutes=1))
    assert waiting.create_pod_attempt is None and waiting.status["phase"] == "Initial"
    assert waiting.requeue_after is not None and waiting.requeue_after <= 5
    started = decide_record_job(record_job(waiting.status, generation=2, timeRange=window), None, [], None, CONFIG,
                                NOW + dt.timedelta(minutes=1, seconds=5))
    assert started.status["phase"] == "Started" and started.create_pod_attempt == 2
    assert started.status["resourceName"] == second


def test_a_recorder_retry_waits_for_an_older_recorder_still_terminating() -> None:
    first, second = (naming.pod_name("rec", "recorder", "uid-r", attempt) for attempt in (1, 2))
    status = {**decide_record_job(record_job(), None, [], None, CONFIG, NOW).status, "retries": 1, "attempt": 2}
    crashed = pod(second, "Failed", ready=False, exit_code=1, finished_at=NOW - dt.timedelta(minutes=1))
    waiting = decide_record_job(record_job(status), None, [pod(first, deleting=True), crashed], None, CONFIG, NOW)
    assert waiting.create_pod_attempt is None and waiting.status["retries"] == 1
    assert waiting.status["phase"] == "Started" and waiting.requeue_after is not None
    retried = decide_record_job(record_job(waiting.status), None, [crashed], None, CONFIG, NOW)
    assert retried.create_pod_attempt == 3 and retried.status["retries"] == 2  # the death counted once


@pytest.mark.parametrize(("output_type", "url_start", "master_at_completion"), [
    ("s3", "https://oss-cn-hangzhou.aliyuncs.com/imsbucket1/rec/x.ts", False),
    ("oss", "https://imsbucket1.oss-cn-hangzhou.aliyuncs.com/rec/x.ts", False),
    ("vod", "https://oss-cn-hangzhou.aliyuncs.com/imsbucket1/rec/x.ts", True),
])
def test_the_output_type_reaches_the_recorder(output_type: str, url_start: str, master_at_completion: bool) -> None:
    job = record_job(output={"type": output_type, "bucket": "imsbucket1",
                             "endpoint": "https://oss-cn-hangzhou.aliyuncs.com", "region": "cn-hangzhou"})
    env = {e["name"]: e for e in build_encoder_pod(job, None, CONFIG, 1)["spec"]["containers"][0]["env"]}
    config = load_job_config({"ONAIR_JOB_CONFIG": env["ONAIR_JOB_CONFIG"]["value"]})
    store = S3Store(config.storage.endpoint, config.storage.bucket, config.storage.region,
                    config.storage.addressing_style, aws_access_key_id="a", aws_secret_access_key="b")
    url = store.client.generate_presigned_url("get_object", Params={"Bucket": "imsbucket1", "Key": config.key("x.ts")})
    assert url.startswith(url_start)
    assert config.outputs.master_at_completion is master_at_completion


def encoder_config_of(job: LiveJob | RecordJob, config: OperatorConfig = CONFIG) -> Any:
    """The encoder's configuration as it reads what the operator gives its Pod (ConfigError when refused)."""
    env = {e["name"]: e.get("value") for e in build_encoder_pod(job, None, config, 1)["spec"]["containers"][0]["env"]}
    return load_job_config({"ONAIR_JOB_CONFIG": env["ONAIR_JOB_CONFIG"], "ONAIR_STREAM_KEY": "k" * 16})


@pytest.mark.parametrize("endpoint", [None, "http://s3.local:8333", "http://S3.Local.:8333/", "http://s3.local:8333/x"])
def test_the_installation_s_own_store_is_not_limited_however_a_job_spells_it(endpoint: str | None) -> None:
    local = OperatorConfig(**{**CONFIG.model_dump(), "s3_endpoint": "http://s3.local:8333"})
    destination = {"bucket": "media", **({"endpoint": endpoint} if endpoint else {})}
    assert encoder_config_of(live_job(destination=destination), local).storage_policy is None


@pytest.mark.parametrize(("job", "message"), [
    (live_job(destination={"bucket": "media", "endpoint": "http://10.0.0.9:8333"}),
     "spec.destination.endpoint: 10.0.0.9 is no public address"),
    (live_job(destination={"bucket": "media", "endpoint": "http://s3.local:9000"}),  # another port: another server
     None),
    (record_job(output={"bucket": "media", "endpoint": "http://[::ffff:169.254.169.254]"}),
     "spec.output.endpoint: ::ffff:169.254.169.254 is no public address"),
])
def test_a_store_a_job_names_is_held_to_public_addresses_and_the_networks_allowed(
        job: LiveJob | RecordJob, message: str | None) -> None:
    if message is None:  # a name: checked when the encoder connects
        config = encoder_config_of(job)
        assert config.storage_policy is not None and not config.storage_policy.allows("10.0.0.9")
    else:
        with pytest.raises(ConfigError, match=rf"^{re.escape(message)}: .*encoder\.storageAllowedNetworks"):
            encoder_config_of(job)
    allowing = OperatorConfig(**{**CONFIG.model_dump(), "storage_allowed_networks": ["10.0.0.0/8", "::ffff:0:0/96"]})
    policy = encoder_config_of(job, allowing).storage_policy
    assert policy is not None and policy.allows("10.0.0.9") and not policy.allows("192.168.0.1")


@pytest.mark.parametrize(("output_type", "master_url", "listed_while_recording"), [
    ("s3", "https://oss-cn-hangzhou.aliyuncs.com/imsbucket1/rec/master.m3u8", True),
    ("oss", "https://imsbucket1.oss-cn-hangzhou.aliyuncs.com/rec/master.m3u8", True),
    ("vod", "https://oss-cn-hangzhou.aliyuncs.com/imsbucket1/rec/master.m3u8", False),
])
def test_the_recording_is_listed_where_and_when_its_store_serves_it(
    output_type: str, master_url: str, listed_while_recording: bool
) -> None:
    output = {"type": output_type, "bucket": "imsbucket1", "endpoint": "https://oss-cn-hangzhou.aliyuncs.com"}
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    report = {"masterPlaylistKey": "rec/master.m3u8", "mediaPlaylistKeys": {"source": "rec/source/index.m3u8"},
              "recording": {"paused": False}}
    started = decide_record_job(record_job(output=output), None, [], None, CONFIG, NOW).status
    recording = decide_record_job(record_job(started, output=output), None, [pod(name)], report, CONFIG, NOW).status
    assert bool(recording.get("files")) is listed_while_recording
    done = decide_record_job(record_job(recording, output=output), None,
                             [pod(name, "Succeeded", ready=False, exit_code=0)],
                             {**report, "recording": {"paused": False, "progress": 1.0}}, CONFIG, NOW).status
    assert done["phase"] == "Completed"
    assert done["files"][0]["url"] == done["playbackUrl"] == master_url
    assert done["files"][1]["url"] == master_url.replace("master.m3u8", "source/index.m3u8")


def test_an_oss_recording_on_the_default_endpoint_is_listed_virtual_hosted() -> None:
    output = {"type": "oss", "bucket": "imsbucket1"}
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    report = {"masterPlaylistKey": "rec/master.m3u8", "recording": {"paused": False}}
    started = decide_record_job(record_job(output=output), None, [], None, CONFIG, NOW).status
    status = decide_record_job(record_job(started, output=output), None, [pod(name)], report, CONFIG, NOW).status
    assert status["playbackUrl"] == "http://imsbucket1.s3.local:8333/rec/master.m3u8"


def test_record_job_pauses_resumes_and_completes() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW)
    assert started.create_pod_attempt == 1 and started.status["phase"] == "Started"
    running = [pod(name)]
    pause = decide_record_job(record_job(started.status, paused=True), None, running,
                              {"recording": {"paused": False}}, CONFIG, NOW)
    assert pause.encoder_command == "pause"
    paused = decide_record_job(record_job(started.status, paused=True), None, running,
                               {"recording": {"paused": True}}, CONFIG, NOW)
    assert paused.status["phase"] == "Paused" and paused.encoder_command is None
    resume = decide_record_job(record_job(paused.status), None, running, {"recording": {"paused": True}}, CONFIG, NOW)
    assert resume.encoder_command == "resume"
    done = decide_record_job(record_job(paused.status), None, [pod(name, "Succeeded", ready=False, exit_code=0)],
                             {"recording": {"paused": False, "progress": 1.0}}, CONFIG, NOW)
    assert done.status["phase"] == "Completed" and done.status["progress"] == 1.0


def test_a_paused_recording_stopped_is_finished_without_a_resume_first() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    paused = decide_record_job(record_job(started, paused=True), None, [pod(name)], {"recording": {"paused": True}},
                               CONFIG, NOW).status
    # The gateway's stop: paused back to false and the end moved to now.
    stop = decide_record_job(record_job(paused, timeRange={"end": NOW.isoformat()}), None, [pod(name)],
                             {"recording": {"paused": True}}, CONFIG, NOW + dt.timedelta(seconds=1))
    assert stop.encoder_command == "finish" and not stop.delete_pods


def test_a_recording_created_paused_whose_range_ends_unrecorded_fails() -> None:
    window = {"end": (NOW + dt.timedelta(minutes=1)).isoformat()}
    waiting = decide_record_job(record_job(paused=True, timeRange=window), None, [], None, CONFIG, NOW)
    assert waiting.status["phase"] == "Paused" and waiting.create_pod_attempt is None
    assert waiting.requeue_after == 60  # nothing else looks at a job nobody touches: its own timer, at the end
    over = decide_record_job(record_job(waiting.status, paused=True, timeRange=window), None, [], None, CONFIG,
                             NOW + dt.timedelta(minutes=2))
    assert over.status["phase"] == "Failed" and "nothing was recorded" in over.status["errorMessage"]
    assert not over.status.get("files") and over.status.get("progress") != 1.0


def test_a_stream_recording_created_paused_still_waits_when_it_reads_its_own_paused_back() -> None:
    window = {"end": (NOW + dt.timedelta(hours=1)).isoformat()}
    waiting = decide_record_job(record_job(paused=True, timeRange=window), None, [], None, CONFIG, NOW)
    # The watch event of that write: the same job, now Paused, no recorder.
    again = decide_record_job(record_job(waiting.status, paused=True, timeRange=window), None, [], None, CONFIG,
                              NOW + dt.timedelta(seconds=1))
    assert again.status["phase"] == "Paused" and again.create_pod_attempt is None
    assert again.status.get("startedAt") is None
    assert again.requeue_after == 3599  # the timer for the end of the range stays set


def test_a_completed_recording_observes_a_later_spec_change_and_stays_completed() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    done = decide_record_job(record_job(started), None, [pod(name, "Succeeded", ready=False, exit_code=0)], None,
                             CONFIG, NOW).status
    assert done["phase"] == "Completed" and done["observedGeneration"] == 1
    edited = decide_record_job(record_job(done, generation=2, notifyUrl="https://hooks.example.com/x"), None, [],
                               None, CONFIG, NOW + dt.timedelta(minutes=1))
    assert edited.status["phase"] == "Completed" and edited.status["observedGeneration"] == 2
    assert edited.create_pod_attempt is None and edited.status["finishedAt"] == done["finishedAt"]


@pytest.mark.parametrize("kind", ["LiveJob", "RecordJob"])
def test_a_pods_long_last_words_are_clipped_to_what_the_status_takes(kind: str) -> None:
    """An encoder may leave up to 4 KiB at its terminationMessagePath: the message built around it still
    fits the CRD's limit, or every later status write would be refused."""
    last_words = "x" * 4090
    if kind == "LiveJob":
        first = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW)
        running = decide_live_job(live_job(first.status), TEMPLATE, [pod(current_pod_name())], {"state": "live"},
                                  CONFIG, NOW).status
        died = [pod(current_pod_name(), "Failed", ready=False, exit_code=1, message=last_words)]
        status = decide_live_job(live_job(running), TEMPLATE, died, None, CONFIG, NOW).status
        assert last_words[:100] in status["message"]
        LiveJobStatus.model_validate(status)
    else:
        started = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
        died = [pod(naming.pod_name("rec", "recorder", "uid-r", 1), "Failed", ready=False, exit_code=2,
                    message=last_words)]
        status = decide_record_job(record_job(started), None, died, None, CONFIG, NOW).status
        assert status["phase"] == "Failed" and last_words[:100] in status["errorMessage"]
        RecordJobStatus.model_validate(status)


def test_a_recorder_of_a_live_job_that_died_waits_for_its_live_job_before_the_retry() -> None:
    follow = {"source": {"liveJobRef": "news"},
              "timeRange": {"start": (NOW - dt.timedelta(minutes=10)).isoformat(),
                            "end": (NOW + dt.timedelta(hours=1)).isoformat()}}
    started = decide_record_job(record_job(**follow), live_job(), [], None, CONFIG, NOW)
    assert started.create_pod_attempt == 1
    evicted = pod(naming.pod_name("rec", "recorder", "uid-r", 1), "Failed", ready=False, exit_code=3,
                  finished_at=NOW + dt.timedelta(minutes=1))
    # The LiveJob is not in the cache (deleted, or an operator that has just started): no recorder
    # that the encoder would refuse, no failure; the retry comes once the LiveJob is there.
    waiting = decide_record_job(record_job(started.status, **follow), None, [evicted], None, CONFIG,
                                NOW + dt.timedelta(minutes=2))
    assert waiting.create_pod_attempt is None and waiting.status["phase"] == "Started"
    conditions = {condition["type"]: condition for condition in waiting.status["conditions"]}
    assert "waits for LiveJob news" in conditions["Ready"]["message"] and waiting.requeue_after
    assert conditions["SourceAvailable"]["reason"] == "LiveJobNotFound"
    retried = decide_record_job(record_job(waiting.status, **follow), live_job(), [evicted], None, CONFIG,
                                NOW + dt.timedelta(minutes=3))
    assert retried.create_pod_attempt == 2 and retried.status["phase"] == "Started"
    conditions = {condition["type"]: condition for condition in retried.status["conditions"]}
    assert conditions["SourceAvailable"]["status"] == "True"  # back, and the retry made from it


def test_a_clip_whose_live_job_is_missing_waits_for_it_only_while_its_range_can_still_be_streamed() -> None:
    """A clip applied before its LiveJob waits for it; once the clip's range is over and the LiveJob has
    been missing for the provisioning timeout, no LiveJob made now could stream that range: Failed,
    not Initial for ever."""
    timeout = dt.timedelta(seconds=CONFIG.provisioning_timeout_seconds)
    ahead = {"source": {"liveJobRef": "news"},
             "timeRange": {"start": (NOW + dt.timedelta(hours=1)).isoformat(),
                           "end": (NOW + dt.timedelta(hours=2)).isoformat()}}
    waiting = decide_record_job(record_job(**ahead), None, [], None, CONFIG, NOW)
    later = decide_record_job(record_job(waiting.status, **ahead), None, [], None, CONFIG, NOW + timeout * 2)
    assert waiting.status["phase"] == later.status["phase"] == "Initial" and later.requeue_after
    past = {"source": {"liveJobRef": "news"},
            "timeRange": {"start": (NOW - dt.timedelta(hours=2)).isoformat(),
                          "end": (NOW - dt.timedelta(hours=1)).isoformat()}}
    waiting = decide_record_job(record_job(**past), None, [], None, CONFIG, NOW)
    assert waiting.status["phase"] == "Initial"  # the LiveJob may be on its way (applied after the clip)
    still = decide_record_job(record_job(waiting.status, **past), None, [], None, CONFIG,
                              NOW + timeout - dt.timedelta(seconds=1))
    assert still.status["phase"] == "Initial"
    failed = decide_record_job(record_job(still.status, **past), None, [], None, CONFIG, NOW + timeout)
    assert failed.status["phase"] == "Failed" and "LiveJob news has been gone" in failed.status["errorMessage"]
    assert failed.create_pod_attempt is None


def test_a_recording_whose_live_job_stays_gone_fails_instead_of_waiting_for_ever() -> None:
    """Deleted while its recorder was away (evicted, or its Pod deleted): waited for as long as an
    operator's start or a re-apply takes, then Failed with the reason, not Started for ever."""
    follow = {"source": {"liveJobRef": "news"}}
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    status = decide_record_job(record_job(**follow), live_job(), [], None, CONFIG, NOW).status
    status = decide_record_job(record_job(status, **follow), live_job(), [pod(name)], None, CONFIG, NOW).status
    evicted = [pod(name, "Failed", ready=False, exit_code=3, finished_at=NOW + dt.timedelta(minutes=1))]
    gone_at = NOW + dt.timedelta(minutes=2)
    waiting = decide_record_job(record_job(status, **follow), None, evicted, None, CONFIG, gone_at)
    assert waiting.status["phase"] == "Started"
    timeout = dt.timedelta(seconds=CONFIG.provisioning_timeout_seconds)
    still = decide_record_job(record_job(waiting.status, **follow), None, evicted, None, CONFIG,
                              gone_at + timeout - dt.timedelta(seconds=1))
    assert still.status["phase"] == "Started"
    failed = decide_record_job(record_job(still.status, **follow), None, evicted, None, CONFIG, gone_at + timeout)
    assert failed.status["phase"] == "Failed" and failed.create_pod_attempt is None
    assert "LiveJob news has been gone" in failed.status["errorMessage"]
    # The same with no Pod left to judge (it vanished), and the deadline counts from when the LiveJob went.
    vanished = decide_record_job(record_job(status, **follow), None, [], None, CONFIG, gone_at)
    assert vanished.status["phase"] == "Started"
    waited = decide_record_job(record_job(vanished.status, **follow), None, [], None, CONFIG, gone_at + timeout)
    assert waited.status["phase"] == "Failed" and "has been gone" in waited.status["errorMessage"]
    # A recording not started yet waits for its LiveJob however long (it may be applied after it).
    new = decide_record_job(record_job(**follow), None, [], None, CONFIG, NOW)
    later = decide_record_job(record_job(new.status, **follow), None, [], None, CONFIG, NOW + 10 * timeout)
    assert later.status["phase"] == "Initial"


def test_the_end_of_a_recording_finishes_the_recorder_which_exits_by_itself_and_says_how_it_went() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW)
    end = NOW - dt.timedelta(seconds=1)
    ended = record_job(started.status, timeRange={"end": end.isoformat()})
    decision = decide_record_job(ended, None, [pod(name)], {"recording": {"paused": False}}, CONFIG, NOW)
    # Not deleted: a Pod deleted at once is gone before its exit code is read, and the job would be
    # Completed whatever the recorder said.
    assert decision.encoder_command == "finish" and not decision.delete_pods and decision.requeue_after
    assert "finishes its files" in decision.status["conditions"][0]["message"]
    # Its code says how the finish went: 3, its uploads not done, is continued by another attempt; 2, an
    # MP4 it could not write, fails the job; 0 completes it.
    for code, phase, attempt in ((EXIT_INTERRUPTED, "Started", 2), (EXIT_BAD_CONFIG, "Failed", 1), (0, "Completed", 1)):
        exited = pod(name, "Failed" if code else "Succeeded", ready=False, exit_code=code, finished_at=NOW)
        judged = decide_record_job(ended, None, [exited], {"recording": {"paused": False}}, CONFIG,
                                   NOW + dt.timedelta(seconds=5))
        assert (judged.status["phase"], judged.status["attempt"]) == (phase, attempt), code
    # Still running long after its grace period: stopped, /finish first (a bare SIGTERM is an interruption).
    late = end + dt.timedelta(seconds=termination_grace_seconds(ended, CONFIG) + 31)
    stopped = decide_record_job(ended, None, [pod(name)], {"recording": {"paused": False}}, CONFIG, late)
    assert stopped.delete_pods == [name] and stopped.finish_before_delete
    # An attempt made that late (after one that exited 3) gets its own grace period from its creation,
    # starting or not: it is there to finish the files.
    retry = naming.pod_name("rec", "recorder", "uid-r", 2)
    for ready in (False, True):
        made_late = pod(retry, ready=ready)
        made_late["metadata"]["creationTimestamp"] = late.isoformat().replace("+00:00", "Z")
        kept = decide_record_job(ended, None, [made_late], {"recording": {"paused": False}}, CONFIG,
                                 late + dt.timedelta(seconds=2))
        assert not kept.delete_pods and kept.status["phase"] == "Started", ready
        assert kept.encoder_command == ("finish" if ready else None)


def test_an_interrupted_recorder_is_continued_not_completed() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW)
    evicted = pod(name, "Failed", ready=False, exit_code=EXIT_INTERRUPTED, finished_at=NOW - dt.timedelta(minutes=1))
    decision = decide_record_job(record_job(started.status), None, [evicted], None, CONFIG, NOW)
    assert decision.status["phase"] == "Started" and decision.status["retries"] == 1
    assert decision.create_pod_attempt == 2 and decision.delete_pods == [name]


@pytest.mark.parametrize("paused", [False, True])
def test_a_recorder_that_exits_3_at_the_end_and_loses_its_pod_in_the_back_off_is_finished_not_completed(
        paused: bool) -> None:
    """Exit 3 at the end of the range says the files are not finished. Its Pod removed while the retry
    waits (a drain, kubectl delete) leaves no exit code to read: the job is finished by another
    recorder, not read as Completed; and one that is never up fails once its deadline has passed."""
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    end = NOW - dt.timedelta(seconds=1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW - dt.timedelta(minutes=5))
    recording = decide_record_job(record_job(started.status), None, [pod(name)], {"recording": {"paused": paused}},
                                  CONFIG, NOW - dt.timedelta(minutes=4))
    phase = "Paused" if paused else "Started"
    assert recording.status["phase"] == phase

    def ended(status: dict[str, Any]) -> RecordJob:
        return record_job(status, timeRange={"end": end.isoformat()}, paused=paused)

    exited = pod(name, "Failed", ready=False, exit_code=EXIT_INTERRUPTED, finished_at=NOW)
    backing_off = decide_record_job(ended(recording.status), None, [exited], {"recording": {"paused": paused}},
                                    CONFIG, NOW + dt.timedelta(seconds=0.5))
    assert backing_off.requeue_after and backing_off.create_pod_attempt is None
    after = decide_record_job(ended(backing_off.status), None, [], None, CONFIG, NOW + dt.timedelta(seconds=1))
    # The same phase: a recorder that finishes the files is neither a resume nor a pause.
    assert after.status["phase"] == phase and after.create_pod_attempt is not None and not after.phase_changes
    assert "finish the recording" in after.status["conditions"][0]["message"]
    # That recorder is seen, not up yet, and its Pod removed too: still not finished.
    starting = pod(name, "Pending", ready=False)
    seen = decide_record_job(ended(after.status), None, [starting], None, CONFIG, NOW + dt.timedelta(seconds=2))
    again = decide_record_job(ended(seen.status), None, [], None, CONFIG, NOW + dt.timedelta(seconds=3))
    assert again.status["phase"] == phase and again.create_pod_attempt is not None
    # None can be made (a quota refuses it) or comes up for its grace period and the provisioning timeout:
    # Failed, saying so, rather than waiting for ever.
    deadline = end + dt.timedelta(seconds=termination_grace_seconds(ended(again.status), CONFIG) + FINISH_SLACK_SECONDS
                                  + CONFIG.provisioning_timeout_seconds)
    refused = Decision(status=again.status)
    mark_pod_refused(ended(again.status), refused, name, "exceeded quota", NOW + dt.timedelta(seconds=3))
    before = decide_record_job(ended(refused.status), None, [], None, CONFIG, deadline - dt.timedelta(seconds=1))
    assert before.status["phase"] == phase and before.create_pod_attempt is not None
    failed = decide_record_job(ended(refused.status), None, [], None, CONFIG, deadline)
    assert failed.status["phase"] == "Failed" and failed.create_pod_attempt is None
    assert "no recorder finished the files" in failed.status["errorMessage"]
    assert "exceeded quota" in failed.status["errorMessage"]
    # A recorder that was up at the end, and whose Pod is gone, stopped there: Completed.
    stopped = decide_record_job(ended(recording.status), None, [], None, CONFIG, NOW)
    assert stopped.status["phase"] == "Completed"


def test_a_recorder_stopped_before_it_was_ever_up_is_not_read_as_completed_when_its_pod_goes() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW - dt.timedelta(minutes=5))
    starting = pod(name, "Pending", ready=False)
    waiting = decide_record_job(record_job(started.status), None, [starting], None, CONFIG,
                                NOW - dt.timedelta(minutes=4))
    stop = {"end": (NOW - dt.timedelta(seconds=1)).isoformat()}
    stopped = decide_record_job(record_job(waiting.status, timeRange=stop), None, [starting], None, CONFIG, NOW)
    assert stopped.status["conditions"][0]["reason"] == "EncoderStarting"
    gone = decide_record_job(record_job(stopped.status, timeRange=stop), None, [], None, CONFIG,
                             NOW + dt.timedelta(seconds=1))
    assert gone.status["phase"] == "Started" and gone.create_pod_attempt == 1


def test_a_past_range_on_a_stream_url_fails_instead_of_completing_empty() -> None:
    past = {"start": (NOW - dt.timedelta(hours=2)).isoformat(), "end": (NOW - dt.timedelta(hours=1)).isoformat()}
    decision = decide_record_job(record_job(timeRange=past), None, [], None, CONFIG, NOW)
    assert decision.status["phase"] == "Failed" and decision.create_pod_attempt is None
    assert "liveJobRef" in decision.status["errorMessage"]


def test_recorder_gets_only_a_control_key() -> None:
    job = record_job()
    secret = build_job_secret(job, CONFIG.stream_key_seed)
    assert secret["metadata"]["name"] == naming.control_key_secret_name("rec", "uid-r")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-r"
    assert secret["stringData"] == {"controlKey": derive_control_key(CONFIG.stream_key_seed, "ns", "rec", "uid-r")}
    env = {e["name"]: e for e in build_encoder_pod(job, None, CONFIG, 1)["spec"]["containers"][0]["env"]}
    assert env["ONAIR_CONTROL_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert "ONAIR_STREAM_KEY" not in env


def test_record_job_of_a_missing_live_job_waits() -> None:
    decision = decide_record_job(record_job(source={"liveJobRef": "gone"}), None, [], None, CONFIG, NOW)
    assert decision.status["phase"] == "Initial"
    assert decision.create_pod_attempt is None


def test_a_recorder_whose_live_job_is_deleted_under_it_runs_on_and_completes() -> None:
    recorder = naming.pod_name("rec", "recorder", "uid-r", 1)
    status = decide_record_job(record_job(source={"liveJobRef": "news"}), live_job(), [], None, CONFIG, NOW).status
    status = decide_record_job(record_job(status, source={"liveJobRef": "news"}), live_job(), [pod(recorder)], None,
                               CONFIG, NOW).status
    gone = decide_record_job(record_job(status, source={"liveJobRef": "news"}), None, [pod(recorder)], None,
                             CONFIG, NOW)
    assert gone.status["phase"] == "Started" and not gone.phase_changes and not gone.events
    done = [pod(recorder, "Succeeded", ready=False, exit_code=0)]
    completed = decide_record_job(record_job(gone.status, source={"liveJobRef": "news"}), None, done, None,
                                  CONFIG, NOW)
    assert completed.status["phase"] == "Completed"


def test_a_cut_that_completes_tells_in_its_status_what_its_recorder_said_last() -> None:
    """The recorder's termination message: how many segments, and where the clip begins when older ones
    had left the live window. A recording of a stream keeps its own words."""
    recorder = naming.pod_name("rec", "recorder", "uid-r", 1)
    said = ("clip of 7 segments written; it begins at 2026-11-23T11:58:30+00:00, not at 2026-11-23T11:50:00+00:00: "
            "the older segments had left the LiveJob's live window (recording: true keeps them all)")
    cut = {"source": {"liveJobRef": "news"}, "timeRange": {"start": (NOW - dt.timedelta(minutes=10)).isoformat(),
                                                           "end": (NOW - dt.timedelta(minutes=1)).isoformat()}}
    status = decide_record_job(record_job(**cut), live_job(), [], None, CONFIG, NOW).status
    done = decide_record_job(record_job(status, **cut), live_job(),
                             [pod(recorder, "Succeeded", ready=False, exit_code=0, message=said)], None, CONFIG, NOW)
    ready = {c["type"]: c for c in done.status["conditions"]}["Ready"]
    assert done.status["phase"] == "Completed" and ready["message"] == f"recording complete: {said}"
    assert done.status["timings"][-1]["comment"] == ready["message"]

    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    stream = decide_record_job(record_job(status), None,
                               [pod(recorder, "Succeeded", ready=False, exit_code=0, message="stopped")], None,
                               CONFIG, NOW)
    assert stream.status["phase"] == "Completed" and stream.status["timings"][-1]["comment"] == "recording complete"


def test_a_recording_that_follows_its_live_job_is_paused_and_a_new_recorder_continues_its_pauses() -> None:
    recorder = naming.pod_name("rec", "recorder", "uid-r", 1)
    source = live_job()
    follow = {"source": {"liveJobRef": "news"}, "timeRange": {"end": (NOW + dt.timedelta(hours=1)).isoformat()}}
    status = decide_record_job(record_job(**follow), source, [], None, CONFIG, NOW).status
    waiting = {"state": "waiting", "recording": {"paused": False, "pausedRanges": []}}
    status = decide_record_job(record_job(status, **follow), source, [pod(recorder)], waiting, CONFIG, NOW).status
    paused = decide_record_job(record_job(status, paused=True, **follow), source, [pod(recorder)], waiting, CONFIG,
                               NOW)
    assert paused.encoder_command == "pause"
    ranges = [{"start": "2026-11-23T12:00:01.250Z", "end": "2026-11-23T12:00:09.500Z"},
              {"start": "2026-11-23T12:00:20Z", "end": None}]
    reported = {"state": "waiting", "recording": {"paused": True, "pausedRanges": ranges}}
    now_paused = decide_record_job(record_job(paused.status, paused=True, **follow), source, [pod(recorder)],
                                   reported, CONFIG, NOW)
    assert now_paused.status["phase"] == "Paused" and now_paused.encoder_command is None
    assert [r.get("end") for r in now_paused.status["pausedRanges"]] == ["2026-11-23T12:00:09.500000Z", None]
    # The recorder Pod of a retry is told them, and leaves them out too.
    job = record_job(now_paused.status, paused=True, **follow)
    env = {e["name"]: e for e in build_encoder_pod(job, None, CONFIG, 2, clip_request(job, source))["spec"][
        "containers"][0]["env"]}
    told = load_job_config({"ONAIR_JOB_CONFIG": env["ONAIR_JOB_CONFIG"]["value"]}).paused_ranges
    assert [(r.start, r.end) for r in told] == [(NOW + dt.timedelta(seconds=1.25), NOW + dt.timedelta(seconds=9.5)),
                                                (NOW + dt.timedelta(seconds=20), None)]
    # A range that ended while the recorder still follows the stream to it can be paused too; one
    # already being cut cannot.
    past = {"source": {"liveJobRef": "news"}, "timeRange": {"end": (NOW - dt.timedelta(seconds=5)).isoformat()}}
    assert decide_record_job(record_job(status, paused=True, **past), source, [pod(recorder)], waiting, CONFIG,
                             NOW).encoder_command == "pause"
    cutting = {"state": "live", "recording": {"paused": False}}
    assert decide_record_job(record_job(status, paused=True, **past), source, [pod(recorder)], cutting, CONFIG,
                             NOW).encoder_command is None


def test_a_recording_that_follows_its_live_job_created_paused_gets_its_recorder_at_once() -> None:
    """The recorder notes the pause from the start of the range: a recorder made at the resume would
    cut the whole range, the paused part too."""
    follow = {"source": {"liveJobRef": "news"}, "timeRange": {"start": NOW.isoformat()}, "paused": True}
    decision = decide_record_job(record_job(**follow), live_job(), [], None, CONFIG, NOW)
    assert decision.create_pod_attempt == 1
    env = {e["name"]: e for e in build_encoder_pod(record_job(**follow), None, CONFIG, 1, clip_request(
        record_job(**follow), live_job()))["spec"]["containers"][0]["env"]}
    assert load_job_config({"ONAIR_JOB_CONFIG": env["ONAIR_JOB_CONFIG"]["value"]}).start_paused
    stream = decide_record_job(record_job(paused=True), None, [], None, CONFIG, NOW)
    assert stream.create_pod_attempt is None and stream.status["phase"] == "Paused"


def test_stopping_a_recording_that_follows_its_live_job_moves_its_end_and_nothing_else_does() -> None:
    recorder = naming.pod_name("rec", "recorder", "uid-r", 1)
    source = live_job()
    status = decide_record_job(record_job(source={"liveJobRef": "news"}), source, [], None, CONFIG, NOW).status

    def made_from(generation: int) -> dict[str, Any]:
        running = pod(recorder)
        running["metadata"]["labels"] = {"onair.dev/spec-generation": str(generation)}
        return running

    def spec(generation: int, **changes: Any) -> RecordJob:
        body = record_job(status, source={"liveJobRef": "news"}, **changes).model_dump(
            mode="json", by_alias=True, exclude_none=True)
        body["metadata"]["generation"] = generation
        return RecordJob.model_validate(body)

    following = {"state": "waiting", "recording": {"paused": False}, "finishAt": None}  # no end: until stopped
    status = decide_record_job(spec(1), source, [made_from(1)], following, CONFIG, NOW).status
    assert status["phase"] == "Started"
    # The gateway's stop moves the end to now: the clip cuts there.
    stopped = decide_record_job(spec(2, timeRange={"end": NOW.isoformat()}), source, [made_from(1)], following,
                                CONFIG, NOW + dt.timedelta(seconds=1))
    assert stopped.encoder_command == "finish-at?" + urlencode({"at": NOW.isoformat()}) and not stopped.delete_pods
    assert stopped.requeue_after is None  # its exit moves the job on, not a timer re-run at once
    held = {**following, "finishAt": NOW.isoformat()}
    assert decide_record_job(spec(2, timeRange={"end": NOW.isoformat()}), source, [made_from(1)], held, CONFIG,
                             NOW + dt.timedelta(seconds=2)).encoder_command is None
    # A pause and a resume since the recorder was made (a new generation) leave its end alone: not cut short.
    paused_and_resumed = decide_record_job(spec(3), source, [made_from(1)], following, CONFIG,
                                           NOW + dt.timedelta(seconds=3))
    assert paused_and_resumed.encoder_command is None


def test_template_gone_while_live_keeps_the_running_encoder() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    running = [pod(current_pod_name())]
    report = {"state": "live", "renditions": [{"name": "720p", "segmentsWritten": 3, "status": "Running"}]}
    live = decide_live_job(live_job(status), TEMPLATE, running, report, CONFIG, NOW).status
    assert live["phase"] == "Live"
    for gone in (TemplateLookup(None, ConditionReason.TEMPLATE_NOT_FOUND, "no JobTemplate with id 1"),
                 TemplateLookup(None, ConditionReason.TEMPLATE_AMBIGUOUS, "2 JobTemplates in ns have id 1")):
        later = decide_live_job(live_job(live), gone, running, report, CONFIG, NOW + dt.timedelta(minutes=1))
        assert later.status["phase"] == "Live"
        assert later.delete_pods == [] and later.create_pod_attempt is None
        assert later.status["resourceName"] == current_pod_name()
        assert [t["phase"] for t in later.status["timings"]] == [t["phase"] for t in live["timings"]]
        assert later.status["urls"]["outputManifests"] == live["urls"]["outputManifests"]
        resolved = next(c for c in later.status["conditions"] if c["type"] == "TemplateResolved")
        assert resolved["status"] == "False" and resolved["reason"] == str(gone.reason)
        assert "running encoder keeps" in resolved["message"]


def test_template_gone_when_the_encoder_must_be_replaced_waits_in_provisioning() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], None, CONFIG, NOW).status
    gone = TemplateLookup(None, ConditionReason.TEMPLATE_NOT_FOUND, "no JobTemplate with id 1")
    crashed = [pod(current_pod_name(), "Failed", ready=False, exit_code=137, finished_at=NOW)]
    died = decide_live_job(live_job(status), gone, crashed, None, CONFIG, NOW)
    assert died.status["phase"] == "Provisioning" and died.status["attempt"] == 2
    waiting = decide_live_job(live_job(died.status), gone, [], None, CONFIG, NOW + dt.timedelta(minutes=1))
    assert waiting.status["phase"] == "Provisioning"
    assert waiting.create_pod_attempt is None
    assert "no JobTemplate with id 1" in waiting.status["message"]
    back = decide_live_job(live_job(waiting.status), TEMPLATE, [], None, CONFIG, NOW + dt.timedelta(minutes=2))
    assert back.create_pod_attempt == 2
    assert "Failed" not in [t["phase"] for t in back.status["timings"]]


def evicted(name: str, started: dt.datetime, died: dt.datetime) -> dict[str, Any]:
    """A Pod the kubelet evicted: Failed, its container terminated (137) after running since `started`."""
    body = pod(name, "Failed", ready=False, exit_code=137, finished_at=died)
    body["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"] = started.strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    return body


def run_until_death(status: dict[str, Any], start: dt.datetime, runs_for: dt.timedelta,
                    dead_pod: bool = True) -> tuple[dict[str, Any], dt.datetime]:
    """Create the next encoder, let it run for `runs_for`, then let it die (evicted, or vanished)."""
    job = live_job(status)
    created = decide_live_job(job, TEMPLATE, [], None, CONFIG, start)
    assert created.create_pod_attempt is not None, created.status
    name = current_pod_name(created.create_pod_attempt)
    up = decide_live_job(live_job(created.status), TEMPLATE, [pod(name)], {"state": "live"}, CONFIG, start)
    assert up.status["phase"] == "Live"
    died_at = start + runs_for
    pods = [evicted(name, start, died_at)] if dead_pod else []
    died = decide_live_job(live_job(up.status), TEMPLATE, pods, None, CONFIG, died_at)
    return died.status, died_at + dt.timedelta(minutes=2)  # after the back-off


@pytest.mark.parametrize("dead_pod", [True, False], ids=["evicted", "vanished"])
def test_a_24_7_channel_evicted_now_and_then_never_runs_out_of_restarts(dead_pod: bool) -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status["attempt"] = 0  # run_until_death creates attempt 1
    moment = NOW
    for _ in range(10):  # CONFIG allows 2 deaths in a row; ten evictions, days apart
        status, moment = run_until_death(status, moment, dt.timedelta(days=3), dead_pod)
        assert status["phase"] == "Provisioning"
        assert status["consecutiveFailures"] == 1
        # The back-off starts over too: the next encoder comes after the first step (2s), not 2**n.
        waiting = decide_live_job(live_job(status), TEMPLATE, [], None, CONFIG,
                                  dt.datetime.fromisoformat(status["lastRestartTime"]) + dt.timedelta(seconds=2.5))
        assert waiting.create_pod_attempt is not None
    assert status["restarts"] == 10  # the lifetime count stays visible


def test_deaths_in_a_row_still_end_failed_after_a_healthy_run() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status["attempt"] = 0
    status, moment = run_until_death(status, NOW, dt.timedelta(hours=5))
    assert (status["restarts"], status["consecutiveFailures"]) == (1, 1)
    status, moment = run_until_death(status, moment, dt.timedelta(seconds=30))
    assert (status["restarts"], status["consecutiveFailures"]) == (2, 2)
    status, moment = run_until_death(status, moment, dt.timedelta(minutes=9))  # under the healthy run (10 min)
    assert status["phase"] == "Failed"
    assert "3 times in a row" in status["message"]
    rearmed = decide_live_job(live_job(status, generation=2), TEMPLATE, [], None, CONFIG, moment)
    assert rearmed.status["phase"] == "Provisioning" and rearmed.status["consecutiveFailures"] == 0


def stuck_pod(name: str, reason: str, message: str, created: dt.datetime = NOW) -> dict[str, Any]:
    """A Pod that never starts, as the kubelet (or the scheduler, for Unschedulable) reports it."""
    body = pod(name, "Pending", ready=False)
    body["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    if reason == "Unschedulable":
        body["spec"] = {}
        body["status"] = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}
    else:
        body["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": reason, "message": message}}
    return body


@pytest.mark.parametrize(("reason", "message"), [
    ("ImagePullBackOff", 'Back-off pulling image "registry.local/onair:9.9"'),
    ("CreateContainerConfigError", 'secret "onair-s3-credentials" not found'),
    ("Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
])
def test_a_pod_that_cannot_start_fails_the_job_after_the_provisioning_timeout(reason: str, message: str) -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    stuck = [stuck_pod(current_pod_name(), reason, message)]
    early = decide_live_job(live_job(status), TEMPLATE, stuck, None, CONFIG, NOW + dt.timedelta(minutes=1))
    assert early.status["phase"] == "Provisioning" and early.delete_pods == []
    assert early.requeue_after == pytest.approx(240)  # woken when the 5 minutes are over
    late = decide_live_job(live_job(early.status), TEMPLATE, stuck, None, CONFIG, NOW + dt.timedelta(minutes=5))
    assert late.status["phase"] == "Failed"
    assert late.status["timings"][-1]["reason"] == reason
    assert reason in late.status["message"] and message in late.status["message"]
    running = next(c for c in late.status["conditions"] if c["type"] == "EncoderRunning")
    assert (running["status"], running["reason"]) == ("False", "EncoderStartFailed")
    assert ("Warning", reason, late.status["message"]) in late.events
    assert late.delete_pods == [current_pod_name()]
    # A spec change tries again, with a new Pod (the stuck one may still be going).
    again = decide_live_job(live_job(late.status, generation=2), TEMPLATE, [], None, CONFIG, NOW)
    assert again.status["phase"] == "Provisioning" and again.create_pod_attempt == 2


def test_an_invalid_image_name_fails_at_once_and_a_slow_start_does_not() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    invalid = [stuck_pod(current_pod_name(), "InvalidImageName", 'Failed to apply default image tag "Bad:Image"')]
    failed = decide_live_job(live_job(status), TEMPLATE, invalid, None, CONFIG, NOW + dt.timedelta(seconds=2))
    assert failed.status["phase"] == "Failed"
    assert "InvalidImageName" in failed.status["message"]
    slow = [stuck_pod(current_pod_name(), "ContainerCreating", "")]
    waiting = decide_live_job(live_job(status), TEMPLATE, slow, None, CONFIG, NOW + dt.timedelta(hours=1))
    assert waiting.status["phase"] == "Provisioning"


def test_a_recorder_that_cannot_start_fails_the_record_job_too() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    stuck = [stuck_pod(name, "ErrImagePull", 'pull access denied for "registry.local/onair"')]
    early = decide_record_job(record_job(started), None, stuck, None, CONFIG, NOW + dt.timedelta(minutes=1))
    assert early.status["phase"] == "Started" and early.delete_pods == []
    assert early.requeue_after == pytest.approx(240)  # woken when the 5 minutes are over
    late = decide_record_job(record_job(early.status), None, stuck, None, CONFIG, NOW + dt.timedelta(minutes=5))
    assert late.status["phase"] == "Failed" and "ErrImagePull" in late.status["errorMessage"]
    assert late.delete_pods == [name] and ("Warning", "ErrImagePull", late.status["errorMessage"]) in late.events
    invalid = [stuck_pod(name, "InvalidImageName", 'Failed to apply default image tag "Bad:Image"')]
    at_once = decide_record_job(record_job(started), None, invalid, None, CONFIG, NOW + dt.timedelta(seconds=2))
    assert at_once.status["phase"] == "Failed"


def test_a_long_recording_evicted_more_often_than_max_restarts_goes_on() -> None:
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    status = {**status, "retries": CONFIG.max_restarts, "consecutiveFailures": CONFIG.max_restarts,
              "attempt": CONFIG.max_restarts + 1}
    name = naming.pod_name("rec", "recorder", "uid-r", CONFIG.max_restarts + 1)
    evicted = pod(name, "Failed", ready=False, exit_code=EXIT_INTERRUPTED, finished_at=NOW - dt.timedelta(minutes=1))
    evicted["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"] = "2026-11-23T06:00:00Z"
    after_hours = decide_record_job(record_job(status), None, [evicted], None, CONFIG, NOW)
    assert after_hours.status["phase"] == "Started" and after_hours.create_pod_attempt == CONFIG.max_restarts + 2
    crashed = pod(name, "Failed", ready=False, exit_code=1, finished_at=NOW - dt.timedelta(minutes=1))
    crash_loop = decide_record_job(record_job(status), None, [crashed], None, CONFIG, NOW)
    assert crash_loop.status["phase"] == "Failed"  # a recorder that dies at once is not retried for ever


def test_a_job_re_created_with_the_same_name_never_shares_the_old_jobs_secret() -> None:
    """The old job's Secret may still exist (garbage collection takes a while): the new job's name differs."""
    old, new = live_job(), live_job()
    new = new.model_copy(update={"metadata": new.metadata.model_copy(update={"uid": "uid-2"})})
    old_secret = build_job_secret(old, CONFIG.stream_key_seed)["metadata"]["name"]
    new_secret = build_job_secret(new, CONFIG.stream_key_seed)
    assert new_secret["metadata"]["name"] != old_secret
    assert new_secret["metadata"]["ownerReferences"][0]["uid"] == "uid-2"
    # The new job's status and its encoder name its own Secret.
    status = decide_live_job(new, TEMPLATE, [], None, CONFIG, NOW).status
    assert status["streamKeySecret"] == new_secret["metadata"]["name"]
    env = {e["name"]: e for e in build_encoder_pod(new, TEMPLATE.template, CONFIG, 1)["spec"]["containers"][0]["env"]}
    assert env["ONAIR_STREAM_KEY"]["valueFrom"]["secretKeyRef"]["name"] == new_secret["metadata"]["name"]
    assert env["ONAIR_CONTROL_KEY"]["valueFrom"]["secretKeyRef"]["name"] == new_secret["metadata"]["name"]
    recorder = record_job()
    recreated = recorder.model_copy(update={"metadata": recorder.metadata.model_copy(update={"uid": "uid-r2"})})
    assert (build_job_secret(recorder, CONFIG.stream_key_seed)["metadata"]["name"]
            != build_job_secret(recreated, CONFIG.stream_key_seed)["metadata"]["name"])


def recorder_run(status: dict[str, Any], start: dt.datetime,
                 runs_for: dt.timedelta) -> tuple[dict[str, Any], dt.datetime]:
    """The RecordJob's next recorder: made at `start` (after any back-off), records for `runs_for`, is evicted."""
    made = decide_record_job(record_job(status), None, [], None, CONFIG, start)
    assert made.create_pod_attempt is not None, made.status
    name = naming.pod_name("rec", "recorder", "uid-r", made.create_pod_attempt)
    died_at = start + runs_for
    dead = evicted(name, start, died_at)
    retried = decide_record_job(record_job(made.status), None, [dead], None, CONFIG, died_at + dt.timedelta(minutes=5))
    return retried.status, died_at + dt.timedelta(minutes=5)


def test_a_recorder_crash_loop_after_a_long_healthy_recording_gets_its_retries_again() -> None:
    """Deaths in a row count, as for a LiveJob: a day of evictions does not use up the retries of
    the next crash loop, nor grow its back-off."""
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    status["attempt"] = 0  # recorder_run makes attempt 1
    moment = NOW
    for _ in range(5):  # evicted after hours of recording, more often than max_restarts (2)
        status, moment = recorder_run(status, moment, dt.timedelta(hours=4))
        assert status["phase"] == "Started" and status["consecutiveFailures"] == 1
    assert status["retries"] == 5
    name = naming.pod_name("rec", "recorder", "uid-r", status["attempt"])
    crashed = evicted(name, moment, moment + dt.timedelta(seconds=5))
    early = decide_record_job(record_job(status), None, [crashed], None, CONFIG, moment + dt.timedelta(seconds=8))
    assert early.create_pod_attempt is None and early.requeue_after == pytest.approx(1)
    # The second death in a row waits 4s (2s, doubled once), not 2s doubled for every retry so far.
    first = decide_record_job(record_job(status), None, [crashed], None, CONFIG, moment + dt.timedelta(seconds=9))
    assert first.status["phase"] == "Started" and first.create_pod_attempt == status["attempt"] + 1
    status = first.status
    name = naming.pod_name("rec", "recorder", "uid-r", status["attempt"])
    crashed = evicted(name, moment, moment + dt.timedelta(seconds=10))
    failed = decide_record_job(record_job(status), None, [crashed], None, CONFIG, moment + dt.timedelta(minutes=1))
    assert failed.status["phase"] == "Failed" and failed.status["consecutiveFailures"] == CONFIG.max_restarts


def test_a_recorder_left_terminating_on_a_lost_node_is_replaced_after_its_grace_period() -> None:
    first = naming.pod_name("rec", "recorder", "uid-r", 1)
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    status = decide_record_job(record_job(status), None, [pod(first)], {"recording": {"paused": False}}, CONFIG,
                               NOW).status
    lost = [pod(first, deleting=True, killed_by=NOW + dt.timedelta(seconds=30))]
    in_grace = decide_record_job(record_job(status), None, lost, None, CONFIG, NOW + dt.timedelta(seconds=10))
    assert in_grace.create_pod_attempt is None and in_grace.status["phase"] == "Started"
    # Looked at again once it would count as lost, whether or not an event comes.
    assert in_grace.requeue_after == pytest.approx(50)
    replaced = decide_record_job(record_job(in_grace.status), None, lost, None, CONFIG, NOW + dt.timedelta(minutes=2))
    assert replaced.create_pod_attempt == 2 and replaced.status["retries"] == 1
    assert first not in replaced.delete_pods  # deleted already; its object goes with its node


def test_a_paused_recording_whose_recorder_is_not_read_yet_stays_paused_and_announces_nothing() -> None:
    """An operator that has just started has not read the recorder: no resume that never happened."""
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    paused = decide_record_job(record_job(started, paused=True), None, [pod(name)], {"recording": {"paused": True}},
                               CONFIG, NOW).status
    unread = decide_record_job(record_job(paused, paused=True), None, [pod(name)], None, CONFIG,
                               NOW + dt.timedelta(seconds=5))
    assert unread.status["phase"] == "Paused" and unread.phase_changes == [] and unread.encoder_command is None


def test_a_record_job_is_ready_only_once_its_recorder_is() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)

    def ready(status: dict[str, Any]) -> tuple[str, str]:
        condition = next(c for c in status["conditions"] if c["type"] == "Ready")
        return condition["status"], condition["reason"]

    creating = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    assert ready(creating) == ("False", "EncoderStarting")
    pulling = decide_record_job(record_job(creating), None, [stuck_pod(name, "ContainerCreating", "")], None, CONFIG,
                                NOW).status
    assert ready(pulling) == ("False", "EncoderStarting") and "waiting for Pod" in next(
        c for c in pulling["conditions"] if c["type"] == "Ready")["message"]
    recording = decide_record_job(record_job(pulling), None, [pod(name)], {"recording": {"paused": False}}, CONFIG,
                                  NOW).status
    assert ready(recording) == ("True", "Recording")


def test_a_record_job_created_paused_announces_its_first_recording_as_started_not_resumed() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    waiting = decide_record_job(record_job(paused=True), None, [], None, CONFIG, NOW).status
    assert waiting["phase"] == "Paused" and not waiting.get("startedAt")
    resumed = decide_record_job(record_job(waiting), None, [], None, CONFIG, NOW + dt.timedelta(minutes=1))
    assert announced("Paused", resumed, recorded_before=bool(waiting.get("startedAt"))) == ["record_started"]
    # Paused and resumed after it recorded: a resume.
    paused = decide_record_job(record_job(resumed.status, paused=True), None, [pod(name)],
                               {"recording": {"paused": True}}, CONFIG, NOW + dt.timedelta(minutes=2))
    again = decide_record_job(record_job(paused.status), None, [pod(name)], {"recording": {"paused": False}}, CONFIG,
                              NOW + dt.timedelta(minutes=3))
    assert announced("Paused", again, recorded_before=bool(paused.status.get("startedAt"))) == ["resumed"]


def test_a_finished_mp4_recording_lists_every_file_its_recorder_reported() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    output = {"bucket": "media", "type": "vod", "format": "mp4"}
    started = decide_record_job(record_job(output=output), None, [], None, CONFIG, NOW).status
    report = {"masterPlaylistKey": "rec/master.m3u8", "mediaPlaylistKeys": {"720p": "rec/720p/index.m3u8"},
              "recording": {"paused": False, "progress": 0.97}}
    recording = decide_record_job(record_job(started, output=output), None, [pod(name)], report, CONFIG, NOW).status
    assert not recording.get("files")  # a vod asset's playlists are written at the end
    done = decide_record_job(record_job(recording, output=output), None,
                             [pod(name, "Succeeded", ready=False, exit_code=0)], report, CONFIG, NOW).status
    assert done["phase"] == "Completed" and done["progress"] == 1.0
    assert [(f["name"], f["format"]) for f in done["files"]] == [("master", "hls"), ("720p", "hls"), ("720p", "mp4")]


def test_a_completed_live_job_edited_after_its_finish_time_stays_completed() -> None:
    over = {"finishDateTime": (NOW - dt.timedelta(minutes=1)).isoformat()}
    completed = decide_live_job(live_job(schedule=over), TEMPLATE, [], None, CONFIG, NOW).status
    assert completed["phase"] == "Completed"
    edited = decide_live_job(live_job(completed, generation=2, schedule=over, description="the final"), TEMPLATE, [],
                             None, CONFIG, NOW + dt.timedelta(hours=1))
    assert edited.phase_changes == [] and edited.status["finishedAt"] == completed["finishedAt"]
    assert edited.status["observedGeneration"] == 2
    # Moving the finish time on runs it again.
    later = {"finishDateTime": (NOW + dt.timedelta(hours=2)).isoformat()}
    rerun = decide_live_job(live_job(completed, generation=3, schedule=later), TEMPLATE, [], None, CONFIG,
                            NOW + dt.timedelta(hours=1))
    assert rerun.create_pod_attempt is not None and rerun.status["phase"] == "Provisioning"


def test_a_switched_off_job_no_longer_says_its_encoder_is_scheduled() -> None:
    status = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW).status
    status = decide_live_job(live_job(status), TEMPLATE, [pod(current_pod_name())], {"state": "live"}, CONFIG,
                             NOW).status
    stopping = decide_live_job(live_job(status, generation=2, online=False), TEMPLATE, [pod(current_pod_name())],
                               {"state": "live"}, CONFIG, NOW).status
    offline = decide_live_job(live_job(stopping, generation=2, online=False), TEMPLATE, [], None, CONFIG, NOW).status
    assert offline["phase"] == "Offline"
    scheduled = next(c for c in offline["conditions"] if c["type"] == "Scheduled")
    assert scheduled["status"] == "False"


def test_a_job_created_switched_off_has_its_stream_key_secret_made_at_once() -> None:
    """So the publisher can be set up with the key before the job is switched on."""
    offline = decide_live_job(live_job(online=False), TEMPLATE, [], None, CONFIG, NOW)
    assert offline.status["phase"] == "Offline" and offline.ensure_children
    assert offline.status["streamKeySecret"] == naming.stream_key_secret_name("news", "uid-1")
    later = {"startDateTime": (NOW + dt.timedelta(hours=1)).isoformat()}
    assert decide_live_job(live_job(schedule=later), TEMPLATE, [], None, CONFIG, NOW).ensure_children


def test_a_pod_the_api_server_refuses_is_said_in_the_status() -> None:
    decided = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW)
    why = 'pods "x" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=4, limited: pods=4'
    phase = decided.status["phase"]
    mark_pod_refused(live_job(), decided, current_pod_name(), why, NOW)
    refused = decided.status
    conditions = {c["type"]: c for c in refused["conditions"]}
    for type_ in ("Ready", "EncoderRunning"):
        assert (conditions[type_]["status"], conditions[type_]["reason"]) == ("False", "PodRefused")
        assert "exceeded quota" in conditions[type_]["message"]
    assert "exceeded quota" in refused["message"] and refused["phase"] == phase


def test_a_record_job_whose_first_pod_is_refused_has_not_started() -> None:
    """No recorder runs: the job is not Started, and record_started is not announced, until its Pod is made."""
    for status in (None, {"phase": "Initial"}):
        decided = decide_record_job(record_job(status, notifyUrl="https://hooks.example.com/r"), None, [], None,
                                    CONFIG, NOW)
        assert decided.status["phase"] == "Started" and decided.create_pod_attempt == 1
        mark_pod_refused(record_job(status), decided, "rec-recorder-1", "exceeded quota: no-pods", NOW)
        assert decided.status["phase"] == "Initial" and "startedAt" not in decided.status
        assert "Started" not in [t["phase"] for t in decided.status.get("timings", [])]
        assert events_announced(None, decided.phase_changes, False) == []
        ready = {c["type"]: c for c in decided.status["conditions"]}["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "PodRefused")
    # One that recorded before (a retry after a crash) stays Started: it did record.
    started = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    crashed = [pod(naming.pod_name("rec", "recorder", "uid-r", 1), "Failed", ready=False, exit_code=1,
                   finished_at=NOW - dt.timedelta(minutes=1))]
    retry = decide_record_job(record_job(started), None, crashed, None, CONFIG, NOW)
    mark_pod_refused(record_job(started), retry, "rec-recorder-2", "exceeded quota: no-pods", NOW)
    assert retry.status["phase"] == "Started" and retry.status["startedAt"] == started["startedAt"]


def test_encoder_pods_take_the_configured_scratch_size_and_extra_environment() -> None:
    config = CONFIG.model_copy(update={"encoder_work_dir_size": "20Gi",
                                       "encoder_env": [{"name": "ONAIR_SPOOL_MAX_BYTES", "value": "8000000000"}]})
    pod_body = build_encoder_pod(live_job(), TEMPLATE.template, config, 1)
    assert pod_body["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "20Gi"
    env = {e["name"]: e for e in pod_body["spec"]["containers"][0]["env"]}
    assert env["ONAIR_SPOOL_MAX_BYTES"]["value"] == "8000000000"
    with pytest.raises(ValidationError, match="ONAIR_JOB_CONFIG is set by the operator"):
        OperatorConfig.from_env({"ONAIR_STREAM_KEY_SEED": CONFIG.stream_key_seed,
                                 "ONAIR_ENCODER_ENV": '[{"name": "ONAIR_JOB_CONFIG", "value": "{}"}]'})


def test_the_operator_sets_only_the_encoder_variables_it_reserves() -> None:
    """The chart refuses these names in encoder.extraEnv: the list must hold every one the builder sets."""
    srt = live_job(input={"serverType": "SRT", "srtPassphraseSecretRef": {"name": "pass", "key": "p"}})
    nvenc = TEMPLATE.template.model_copy(update={"hardware_acceleration": HardwareAcceleration.NVENC}) \
        if TEMPLATE.template else None
    names = set()
    for job, template in ((live_job(), TEMPLATE.template), (srt, nvenc), (record_job(), None)):
        names |= {e["name"] for e in build_encoder_pod(job, template, CONFIG, 1)["spec"]["containers"][0]["env"]}
    assert names == ENCODER_ENV_SET_BY_OPERATOR


def test_a_clip_into_another_bucket_of_its_live_jobs_store_is_made_and_onto_another_store_refused() -> None:
    """A clip copies the LiveJob's segments within one store, with its output's credentials."""
    follow = {"source": {"liveJobRef": "news"}, "timeRange": {"start": NOW.isoformat()}}
    clips = decide_record_job(record_job(**follow, output={"bucket": "clips"}), live_job(), [], None, CONFIG, NOW)
    assert clips.create_pod_attempt == 1
    assert clip_request(record_job(**follow, output={"bucket": "clips"}), live_job())["sourceBucket"] == "media"
    elsewhere = record_job(**follow, output={"bucket": "clips", "endpoint": "https://s3.other.example",
                                             "credentialsSecret": "other-keys"})
    refused = decide_record_job(elsewhere, live_job(), [], None, CONFIG, NOW)
    assert refused.create_pod_attempt is None and refused.status["phase"] == "Failed"
    message = refused.status["errorMessage"]
    assert message.startswith("output: ") and "endpoint 'https://s3.other.example'" in message
    assert "credentialsSecret 'other-keys'" in message


def test_a_recorder_pod_that_vanished_while_recording_is_a_death_counted_and_replaced() -> None:
    """kubectl delete, or a drain that removed the Pod before its exit code was read: as a LiveJob counts
    its vanished encoder, a recording counts its recorder, so that something deleting it again and again
    ends the job instead of going on unseen."""
    first, second = (naming.pod_name("rec", "recorder", "uid-r", attempt) for attempt in (1, 2))
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    # Made, then seen recording: Ready since NOW.
    status = decide_record_job(record_job(status), None, [pod(first)], {"recording": {"paused": False}}, CONFIG,
                               NOW).status
    vanished = decide_record_job(record_job(status), None, [], None, CONFIG, NOW + dt.timedelta(seconds=20))
    assert vanished.status["phase"] == "Started" and vanished.status["retries"] == 1
    assert vanished.create_pod_attempt == 2 and vanished.status["resourceName"] == second
    assert ("Warning", "RecorderRestarted", "recorder disappeared; retry 1") in vanished.events
    # The replacement's Pod not seen yet: it is being made, not another death.
    again = decide_record_job(record_job(vanished.status), None, [], None, CONFIG, NOW + dt.timedelta(seconds=21))
    assert again.status["retries"] == 1 and again.status["resourceName"] == second
    # Deleted as soon as it records, again and again: the job fails instead of recording nothing for ever.
    status, moment = vanished.status, NOW + dt.timedelta(seconds=21)
    for attempt in range(2, 2 + CONFIG.max_restarts):
        name = naming.pod_name("rec", "recorder", "uid-r", attempt)
        status = decide_record_job(record_job(status), None, [pod(name)], {"recording": {"paused": False}}, CONFIG,
                                   moment).status
        status = decide_record_job(record_job(status), None, [], None, CONFIG, moment + dt.timedelta(seconds=5)).status
        moment += dt.timedelta(seconds=10)
    assert status["phase"] == "Failed" and "disappeared" in status["errorMessage"]


def test_a_vanished_recorder_whose_retry_must_wait_is_counted_once_and_made_once_it_can_be() -> None:
    first, second = (naming.pod_name("rec", "recorder", "uid-r", attempt) for attempt in (1, 2))
    missing = TemplateLookup(None, ConditionReason.TEMPLATE_NOT_FOUND, "no JobTemplate with id 9 in ns")
    status = decide_record_job(record_job(jobTemplateId=9), None, [], None, CONFIG, NOW, TEMPLATE).status
    status = decide_record_job(record_job(status, jobTemplateId=9), None, [pod(first)],
                               {"recording": {"paused": False}}, CONFIG, NOW, TEMPLATE).status
    waits = decide_record_job(record_job(status, jobTemplateId=9), None, [], None, CONFIG, NOW, missing)
    assert waits.create_pod_attempt is None and waits.status["retries"] == 1
    assert waits.status["resourceName"] == second
    still = decide_record_job(record_job(waits.status, jobTemplateId=9), None, [], None, CONFIG, NOW, missing)
    assert still.create_pod_attempt is None and still.status["retries"] == 1
    made = decide_record_job(record_job(still.status, jobTemplateId=9), None, [], None, CONFIG, NOW, TEMPLATE)
    assert made.create_pod_attempt == 2 and made.status["retries"] == 1


def test_a_stream_recording_paused_when_its_recorder_vanished_is_not_a_death() -> None:
    """Paused before the recorder took the pause: its recorder is made again, paused, as for any paused
    recording that lost its Pod, and nothing is counted."""
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    status = decide_record_job(record_job(status), None, [pod(name)], {"recording": {"paused": False}}, CONFIG,
                               NOW).status
    paused = decide_record_job(record_job(status, generation=2, paused=True), None, [], None, CONFIG, NOW)
    assert paused.create_pod_attempt == 1 and paused.status.get("retries", 0) == 0
    assert paused.status["phase"] == "Paused" and not [e for e in paused.events if e[1] == "RecorderRestarted"]


def test_a_recorder_pod_that_vanished_after_a_healthy_run_is_replaced_however_often() -> None:
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    status = decide_record_job(record_job(), None, [], None, CONFIG, NOW).status
    status = {**status, "consecutiveFailures": CONFIG.max_restarts}
    status = decide_record_job(record_job(status), None, [pod(name)], {"recording": {"paused": False}}, CONFIG,
                               NOW).status
    later = NOW + dt.timedelta(seconds=CONFIG.healthy_run_seconds + 1)
    replaced = decide_record_job(record_job(status), None, [], None, CONFIG, later)
    assert replaced.status["phase"] == "Started" and replaced.create_pod_attempt == 2
    assert replaced.status["consecutiveFailures"] == 1


def test_a_recorders_start_lost_with_its_status_write_is_dated_by_its_pod() -> None:
    """The reconcile that made the Pod dated the start; that write lost, the next one finds the Pod."""
    name = naming.pod_name("rec", "recorder", "uid-r", 1)
    made = pod(name)
    made["metadata"]["creationTimestamp"] = "2026-11-23T11:59:30Z"
    found = decide_record_job(record_job(), None, [made], {"recording": {"paused": False}}, CONFIG,
                              NOW + dt.timedelta(seconds=5))
    assert found.status["phase"] == "Started" and found.status["startedAt"] == "2026-11-23T11:59:30Z"
    # So a Pod gone at the end is a recording that ended, not one that never began.
    end = NOW + dt.timedelta(minutes=1)
    ended = decide_record_job(record_job(found.status, timeRange={"end": end.isoformat()}), None, [], None, CONFIG,
                              end + dt.timedelta(seconds=1))
    assert ended.status["phase"] == "Completed"


def test_the_networks_an_installation_lets_jobs_pull_from_reach_the_encoder() -> None:
    job = live_job(input={"serverType": "HLS", "url": "http://origin.internal/live.m3u8"})

    def told(config: OperatorConfig) -> AddressPolicy:
        container = build_encoder_pod(job, TEMPLATE.template, config, 1)["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        return load_job_config({"ONAIR_JOB_CONFIG": env["ONAIR_JOB_CONFIG"]["value"]}).pull_policy

    assert told(CONFIG) == AddressPolicy(), "public addresses only"
    allowing = OperatorConfig.from_env({"ONAIR_PULL_ALLOWED_NETWORKS": '["10.20.0.5/16", "fd00::/8"]',
                                        "ONAIR_STREAM_KEY_SEED": "unit-test-stream-key-seed-0123456789"})
    policy = told(allowing)
    assert policy.allows("10.20.3.4") and policy.allows("fd00::7") and not policy.allows("169.254.169.254")


def test_an_encoder_pod_that_vanished_while_provisioning_is_a_death_counted_once_it_was_seen_bound() -> None:
    """A Pod force-deleted (or gone with its node) before it was ready: once the job saw it bound, its
    going is a death like a running encoder's, so that something deleting it again and again ends the
    job Failed instead of a Pod made under the same name forever. Before it was seen, it may only not
    have reached the cache yet: it is made again under its name, uncounted."""
    created = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW)
    assert created.create_pod_attempt == 1 and created.status["phase"] == "Provisioning"
    not_seen_yet = decide_live_job(live_job(created.status), TEMPLATE, [], None, CONFIG, NOW + dt.timedelta(seconds=1))
    assert not_seen_yet.create_pod_attempt == 1 and not_seen_yet.status["restarts"] == 0

    status, moment = created.status, NOW
    for death in range(1, CONFIG.max_restarts + 2):
        name = current_pod_name(status["attempt"])
        starting = stuck_pod(name, "ContainerCreating", "pulling the image", created=moment)
        bound = decide_live_job(live_job(status), TEMPLATE, [starting], None, CONFIG, moment)
        assert bound.status["phase"] == "Provisioning"
        moment += dt.timedelta(seconds=5)
        gone = decide_live_job(live_job(bound.status), TEMPLATE, [], None, CONFIG, moment)
        status = gone.status
        if death > CONFIG.max_restarts:
            break
        assert status["phase"] == "Provisioning" and status["restarts"] == death
        assert status["attempt"] == death + 1 and gone.create_pod_attempt is None  # after the back-off
        assert ("Warning", "EncoderRestarted") == gone.events[0][:2] and f"{name} disappeared" in gone.events[0][2]
        # Seen once, counted once: the next reconcile, before the back-off ends, counts nothing more.
        again = decide_live_job(live_job(status), TEMPLATE, [], None, CONFIG, moment + dt.timedelta(seconds=1))
        assert again.status["restarts"] == death and again.create_pod_attempt is None
        moment = dt.datetime.fromisoformat(status["lastRestartTime"]) + dt.timedelta(minutes=5)
        made = decide_live_job(live_job(status), TEMPLATE, [], None, CONFIG, moment)
        assert made.create_pod_attempt == death + 1
        status = made.status
    assert status["phase"] == "Failed" and "disappeared" in status["message"]


def test_an_encoder_pod_gone_before_it_was_ready_as_the_job_is_switched_off_leaves_no_playlists_to_close() -> None:
    """Bound, pulling its image, and gone as the job is switched off: it wrote nothing, so no Pod is
    made to close playlists; the job goes Offline."""
    created = decide_live_job(live_job(), TEMPLATE, [], None, CONFIG, NOW)
    starting = stuck_pod(current_pod_name(created.status["attempt"]), "ContainerCreating", "pulling the image")
    bound = decide_live_job(live_job(created.status), TEMPLATE, [starting], None, CONFIG, NOW)
    off = decide_live_job(live_job(bound.status, online=False), TEMPLATE, [], None, CONFIG,
                          NOW + dt.timedelta(seconds=5))
    assert off.status["phase"] == "Offline" and off.create_pod_attempt is None
    assert not off.status.get("playlistsLeftOpen")
