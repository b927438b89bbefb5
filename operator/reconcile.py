"""Decisions, not actions: from what is observed (the job, its Pods, the encoder's report, the time)
to what should exist and what the status says. Pure, so every transition is unit-testable; the
controller applies the decision to the API.

Level-based: the same observation always gives the same decision, so reconciling twice is harmless
and a restarted operator picks up where the last one stopped.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from onair.exitcodes import EXIT_BAD_CONFIG, EXIT_OK, FINISHED_MESSAGE
from onair.models import (
    MAX_MESSAGE_LENGTH,
    MAX_PAUSED_RANGES,
    PASSTHROUGH_RENDITION,
    Condition,
    EncoderHealth,
    InputClass,
    InputStatistics,
    JobTemplateSpec,
    LiveJob,
    LiveJobStatus,
    LiveJobTiming,
    LiveJobUrls,
    PausedRange,
    RecordedFile,
    RecordingFormat,
    RecordJob,
    RecordJobStatus,
    RecordJobTiming,
    RenditionOutput,
    StorageType,
    append_timing,
    find_condition,
    set_condition,
)
from onair.operator import naming
from onair.operator.builders import (
    ENCODER_ROLE,
    RECORDER_ROLE,
    preview_key,
    storage_prefix,
    termination_grace_seconds,
)
from onair.operator.config import OperatorConfig
from onair.operator.pods import PodState, pod_state
from onair.operator.services import ServiceEndpoint
from onair.phases import (
    LIVE_JOB_TERMINAL_PHASES,
    LIVE_JOB_TRANSITIONS,
    RECORD_JOB_TERMINAL_PHASES,
    RECORD_JOB_TRANSITIONS,
    ConditionReason,
    ConditionStatus,
    ConditionType,
    LiveJobPhase,
    OutputStatus,
    RecordJobPhase,
)
from onair.streamkeys import PREVIEW_PATH
from onair.urls import url_host

TEMPLATE_RETRY_SECONDS = 10.0
# A Pod's deletion wakes its job anyway; this is in case that event is missed.
TERMINATING_POD_RETRY_SECONDS = 5.0
# A recorder told /finish at the end of its range exits by itself within its grace period: looked at
# this often meanwhile, and stopped if it is still running this long after the grace period.
FINISH_CHECK_SECONDS = 5.0
# How long a stream recorder, once running, may take to get media from its source before the job says
# that nothing comes (a pull's connect and first segment).
SOURCE_CONNECT_SECONDS = 20.0
# Past a finishing Pod's grace period, how long before it is taken not to have ended by itself: the
# kubelet's report of its end reaches the operator some seconds later.
FINISH_SLACK_SECONDS = 30
# After a Pod's deletionTimestamp (the end of its grace period), how long its object may remain before
# it is taken for one on a lost node, no longer waited for.
STUCK_TERMINATING_SECONDS = 30.0
# Why a Pod may never start. They may clear without a spec change (an image pushed late, a registry
# back, a Secret created, a node added), so they fail the job only after provisioning_timeout_seconds...
START_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "CreateContainerConfigError",
                          "CreateContainerError", "RunContainerError", "Unschedulable"})
# ...except a malformed image reference, which only a change of the operator's configuration can mend.
START_ERRORS_AT_ONCE = frozenset({"InvalidImageName"})
# Phases in which the job's encoder is up (ready).
RUNNING_PHASES = frozenset({LiveJobPhase.WAITING_FOR_INPUT, LiveJobPhase.LIVE, LiveJobPhase.RECONNECTING})

Phase = LiveJobPhase | RecordJobPhase


@dataclass(frozen=True)
class TemplateLookup:
    template: JobTemplateSpec | None
    reason: ConditionReason = ConditionReason.TEMPLATE_FOUND
    message: str = ""


@dataclass
class Decision:
    """What the controller must do for one job, in this order."""

    status: dict[str, Any]
    ensure_children: bool = False  # the job's Secret must exist
    # A LiveJob's ingest Service must exist: once its encoder is ready, so that the Service's
    # Endpoints and EndpointSlice are written once, with the ready Pod, rather than empty first.
    ensure_service: bool = False
    create_pod_attempt: int | None = None
    delete_pods: list[str] = field(default_factory=list)
    encoder_command: str | None = None  # "pause", "resume", "finish" or "finish-at?...", sent to the current Pod
    finish_only: bool = False  # the Pod created only closes the playlists a dead encoder left open
    # The job ends (switched off, schedule over): the encoder closes its playlists (ENDLIST) before it goes.
    finish_before_delete: bool = False
    requeue_after: float | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    phase_changes: list[Phase] = field(default_factory=list)


def phase_path(current: Phase | None, target: Phase, switched_off: bool = False) -> list[Phase]:
    """The phases to pass through from `current` to `target` along the state machine (shortest),
    excluding `current`. The first phase of a new job is its initial one (Pending, Initial).

    Never through a terminal phase: each phase passed gets a timing, an Event and a webhook, and a
    job that goes on did not complete or fail. Through Offline (switched off: a `stopped` webhook)
    only when the job was `switched_off`, or no other way is as short: a job whose stop was called off
    (its start moved back, its finish later) was never switched off."""
    graph: Mapping[Phase, frozenset[Phase]] = (
        LIVE_JOB_TRANSITIONS if isinstance(target, LiveJobPhase) else RECORD_JOB_TRANSITIONS  # type: ignore[assignment]
    )
    terminal: frozenset[Phase] = (
        LIVE_JOB_TERMINAL_PHASES if isinstance(target, LiveJobPhase) else RECORD_JOB_TERMINAL_PHASES
    )
    initial: Phase = LiveJobPhase.PENDING if isinstance(target, LiveJobPhase) else RecordJobPhase.INITIAL
    prefix: list[Phase] = []
    if current is None:
        current = initial
        prefix = [initial]
    if current == target:
        return prefix
    queue: deque[list[Phase]] = deque([[current]])
    seen = {current}
    while queue:
        path = queue.popleft()
        for nxt in sorted(graph[path[-1]], key=lambda phase: ((phase == LiveJobPhase.OFFLINE) != switched_off, phase)):
            if nxt in seen:
                continue
            if nxt == target:
                return prefix + path[1:] + [nxt]
            seen.add(nxt)
            if nxt not in terminal:
                queue.append([*path, nxt])
    raise ValueError(f"no transition from {current} to {target}")


def _condition(type_: ConditionType, ok: bool | None, reason: ConditionReason, message: str, now: dt.datetime,
               generation: int | None) -> Condition:
    status = ConditionStatus.UNKNOWN if ok is None else (ConditionStatus.TRUE if ok else ConditionStatus.FALSE)
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=now,
                     observed_generation=generation)


def _backoff(config: OperatorConfig, restarts: int) -> float:
    return float(min(config.restart_backoff_seconds * 2**restarts, config.restart_backoff_max_seconds))


def _seconds_until(moment: dt.datetime | None, now: dt.datetime) -> float | None:
    return None if moment is None else max(0.0, (moment - now).total_seconds())


def _earliest(*delays: float | None) -> float | None:
    present = [d for d in delays if d is not None]
    return min(present) if present else None


def record_attempt(status: RecordJobStatus | None) -> int:
    """The number the RecordJob's current recorder Pod is named after. Statuses written before
    `attempt` existed named it after the retries."""
    if status is None:
        return 1
    return status.attempt or status.retries + 1


def _finish_time_command(report: dict[str, Any] | None, finish: dt.datetime | None) -> str | None:
    """The command that moves a running encoder's end to the spec's finish time, or None when it holds
    that one already (to the second, as it reports it) or does not say (an encoder from before
    /finish-at). The encoder ends the job at its end by itself: an end moved later must reach it."""
    if not report or "finishAt" not in report:
        return None
    held = dt.datetime.fromisoformat(report["finishAt"]) if report["finishAt"] else None
    if held == (finish.replace(microsecond=0) if finish else None):
        return None
    return "finish-at?" + urlencode({"at": finish.isoformat() if finish else ""})


def _pods_still_going(pods: list[dict[str, Any]], now: dt.datetime, deleting: list[str] | None = None) -> list[str]:
    """The Pods being deleted (or about to be, `deleting`) whose containers may still run: the next
    attempt's Pod waits for them, or two would serve the Service and write the same playlists. Not
    for ever: past its grace period the kubelet has killed it, and a Pod object still there then is on a
    node that is gone (a kubelet that never reports back)."""
    going = []
    for state in map(pod_state, pods):
        if state.finished or not (state.terminating or state.name in (deleting or ())):
            continue
        if not _lost_with_its_node(state, now):
            going.append(state.name)
    return going


def _lost_with_its_node(pod: PodState, now: dt.datetime) -> bool:
    """A Pod being deleted that is still there well past its grace period: the kubelet that would
    report its end is gone with its node, and what the Pod ran has ended."""
    return pod.terminating and not pod.finished and pod.killed_by is not None and \
        now >= pod.killed_by + dt.timedelta(seconds=STUCK_TERMINATING_SECONDS)


def _judge_lost(pod: PodState | None, now: dt.datetime) -> tuple[PodState | None, bool, float | None]:
    """The current Pod as the job should see it: one lost with its node counts as ended (what it ran
    has, and a stop or a replacement waits for it no longer). Also whether it is lost, and in how many
    seconds a Pod still being deleted would count as lost (its job is looked at again then, event or not)."""
    if pod is not None and _lost_with_its_node(pod, now):
        return replace(pod, finished=True, ready=False, running=False), True, None
    if pod is not None and pod.terminating and not pod.finished and pod.killed_by is not None:
        return pod, False, _seconds_until(pod.killed_by + dt.timedelta(seconds=STUCK_TERMINATING_SECONDS), now)
    return pod, False, None


def _with_a_pod_made_ahead(pods: list[dict[str, Any]], job: LiveJob | RecordJob, role: str, attempt: int) -> int:
    """`attempt`, or the next one when its Pod exists already. A reconcile that moves on to a new
    attempt creates its Pod before it writes the new number into the status: a write lost between the
    two (a conflict with another write, an operator restart) leaves that Pod, which is the job's
    current one, not a stale one to delete."""
    following = naming.pod_name(str(job.metadata.name), role, str(job.metadata.uid), attempt + 1)
    made_ahead = any(p["metadata"]["name"] == following and not p["metadata"].get("deletionTimestamp") for p in pods)
    return attempt + 1 if made_ahead else attempt


def _pods_of_attempt(pods: list[dict[str, Any]], name: str) -> tuple[PodState | None, list[str]]:
    current = next((pod_state(p) for p in pods if p["metadata"]["name"] == name), None)
    stale = [p["metadata"]["name"] for p in pods
             if p["metadata"]["name"] != name and not p["metadata"].get("deletionTimestamp")]
    return current, stale


# --- LiveJob -------------------------------------------------------------------------------------


def live_job_urls(job: LiveJob, config: OperatorConfig, pod: PodState | None,
                  template: JobTemplateSpec | None, report: dict[str, Any] | None,
                  endpoint: ServiceEndpoint | None = None) -> LiveJobUrls:
    """`endpoint`: how the job's Service is reached from outside. A load balancer's address, once it
    has one, is the host (on the Service's ports); a NodePort Service's node ports go with ingest_host,
    the name that reaches the nodes."""
    service = naming.service_name(str(job.metadata.name), str(job.metadata.uid))
    ports = {"rtmp": config.rtmp_port, "srt": config.srt_port, "preview": config.preview_port}
    if config.ingest_address == "pod-ip":
        host = pod.ip if pod is not None and pod.ip else None
    elif config.service_type == "LoadBalancer" and endpoint is not None and endpoint.load_balancer:
        host = url_host(endpoint.load_balancer)
    else:
        host = config.ingest_host or f"{service}.{job.metadata.namespace}.svc"
        if config.service_type == "NodePort" and config.ingest_host and endpoint is not None:
            ports.update(endpoint.node_ports)
    server_type = job.spec.input.server_type.value
    rtmp = f"rtmp://{host}:{ports['rtmp']}/live/" if host and server_type == "RTMP" else None
    # Like the RTMP server URL, up to the stream key, which the publisher appends (it is in the job's
    # Secret, never in status): as the SRT passphrase, which never travels in the clear (a streamid
    # does), unless the job names another passphrase: then the key goes in the streamid.
    key_option = "streamid" if job.spec.input.srt_passphrase_secret_ref is not None else "passphrase"
    srt = f"srt://{host}:{ports['srt']}?{key_option}=" if host and server_type == "SRT" else None
    ingest = job.spec.input.url if server_type == "HLS" else (rtmp or srt)
    preview = None
    preview_path = f"{PREVIEW_PATH}/{preview_key(job, config.stream_key_seed)}"
    if config.preview_base_url:
        preview = config.preview_base_url.rstrip("/") + preview_path  # the gateway finds the encoder Pod
    # A NodePort Service made before the preview existed has no node port for it: no URL then.
    elif host and (endpoint is None or not endpoint.node_ports or "preview" in endpoint.node_ports):
        preview = f"ws://{host}:{ports['preview']}{preview_path}"
    location = job.spec.destination
    storage_base = (config.s3_public_base_url or location.endpoint or config.s3_endpoint).rstrip("/")
    prefix = storage_prefix(job)
    master_key = (report or {}).get("masterPlaylistKey") or f"{prefix}/master.m3u8"
    media_keys: dict[str, str] = dict((report or {}).get("mediaPlaylistKeys") or {})
    if job.spec.input.input_class == InputClass.SINGLE:
        renditions = [PASSTHROUGH_RENDITION]  # the source passes through: the template's ladder is not made
    else:
        renditions = [rendition.name for rendition in template.renditions] if template else []
    for rendition_name in renditions:
        media_keys.setdefault(rendition_name, f"{prefix}/{rendition_name}/index.m3u8")
    bucket_base = f"{storage_base}/{location.bucket}" if storage_base else ""
    cdn_base = (location.cdn_base_url or config.cdn_base_url).rstrip("/")
    use_cdn = location.cdn_distribution and bool(cdn_base)
    play_base = cdn_base if use_cdn else bucket_base
    return LiveJobUrls(
        ingest=ingest,
        rtmp_server=rtmp,
        srt_url=srt,
        web_socket_connection=preview,
        cdn=f"{cdn_base}/{master_key}" if use_cdn else None,
        storage_master_file=f"{bucket_base}/{master_key}" if bucket_base else None,
        output_manifests={name: f"{play_base}/{key}" for name, key in media_keys.items()} if play_base else {},
    )


def _report_outputs(report: dict[str, Any] | None, pod: PodState | None) -> list[RenditionOutput]:
    outputs = []
    for rendition in (report or {}).get("renditions") or []:
        status = rendition.get("status") or OutputStatus.RUNNING
        outputs.append(RenditionOutput(
            name=rendition["name"],
            status=status if status in OutputStatus.__members__.values() else OutputStatus.RUNNING,
            progress=rendition.get("progress"),
            segments_written=rendition.get("segmentsWritten") or 0,
            last_segment_time=rendition.get("lastSegmentTime"),
            encoder_id=pod.name if pod else None,
        ))
    return outputs


def _report_health(report: dict[str, Any]) -> EncoderHealth:
    upload = report.get("upload") or {}
    return EncoderHealth(
        dropped_frames=int(report.get("droppedFrames") or 0),
        last_upload_latency_ms=upload.get("lastLatencyMs"),
        upload_latency_p99_ms=upload.get("p99LatencyMs"),
        upload_failures=int(upload.get("failures") or 0),
        spool_bytes=int(upload.get("spoolBytes") or 0),
    )


def _report_statistics(report: dict[str, Any] | None) -> InputStatistics | None:
    statistics = ((report or {}).get("ingest") or {}).get("statistics")
    if not statistics:
        return None
    known = InputStatistics.model_fields.keys() | {f.alias for f in InputStatistics.model_fields.values() if f.alias}
    return InputStatistics.model_validate({k: v for k, v in statistics.items() if k in known and v is not None})


def decide_live_job(
    job: LiveJob,
    template: TemplateLookup,
    pods: list[dict[str, Any]],
    report: dict[str, Any] | None,
    config: OperatorConfig,
    now: dt.datetime,
    endpoint: ServiceEndpoint | None = None,
) -> Decision:
    old = job.status or LiveJobStatus()
    status = old.model_copy(deep=True)
    generation = job.metadata.generation
    decision = Decision(status={})
    new_generation = status.observed_generation != generation
    schedule = job.spec.schedule
    start = schedule.start_date_time if schedule else None
    finish = schedule.finish_date_time if schedule else None

    # A finished job stays finished until its spec changes, and a change that leaves its finish time
    # in the past (a description, online toggled) does not run it again only to complete it again.
    if status.phase in LIVE_JOB_TERMINAL_PHASES and (not new_generation or (finish is not None and now >= finish)):
        decision.delete_pods = [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]
        status.observed_generation = generation
        decision.status = _dump(status)
        return decision
    if status.phase in LIVE_JOB_TERMINAL_PHASES:
        status.consecutive_failures = 0  # status.restarts stays the lifetime count
        status.finished_at = None  # the last run's; this one has not finished
        # A fresh Pod name: the last attempt's Pod may still be going, and must not count as a death.
        status.attempt = max(status.attempt, 1) + 1
        _enter(status, LiveJobPhase.PENDING, now, "SpecChanged", "spec changed: the job runs again", decision)

    attempt = _with_a_pod_made_ahead(pods, job, ENCODER_ROLE, max(status.attempt, 1))
    made_ahead = attempt > max(status.attempt, 1)  # the next encoder, not the one a stop was for
    current_name = _encoder_pod_name(job, attempt)
    pod, stale = _pods_of_attempt(pods, current_name)
    if (pod is not None and status.phase in (None, LiveJobPhase.PENDING, LiveJobPhase.OFFLINE)
            and pod.spec_generation is not None and pod.spec_generation != generation):
        # The spec changed after this Pod was made and before Provisioning was written (the phase
        # from which the CRD refuses such changes; the controller may hold that write a few
        # seconds): it runs the old spec. Nothing was published yet: the next attempt replaces it.
        attempt += 1
        status.attempt = attempt
        current_name = _encoder_pod_name(job, attempt)
        pod, stale = _pods_of_attempt(pods, current_name)
    decision.delete_pods = stale
    pod, lost, lost_check = _judge_lost(pod, now)
    conditions = status.conditions

    def set_cond(type_: ConditionType, ok: bool | None, reason: ConditionReason, message: str = "") -> None:
        nonlocal conditions
        conditions = set_condition(conditions, _condition(type_, ok, reason, message, now, generation))

    target: LiveJobPhase
    reason: str
    comment: str
    pod_gone_or_going = pod is None or pod.terminating or pod.finished
    passthrough = job.spec.input.input_class == InputClass.SINGLE  # its encoder uses no template
    if template.template is None:
        # Only a Pod about to be created needs the template: a running encoder keeps the configuration
        # it was started with, and the condition warns that the next one could not start.
        warning = template.message if pod_gone_or_going else (
            f"{template.message}; the running encoder keeps its configuration, a replacement would wait")
        if passthrough:
            warning = f"{template.message} (not needed while inputClass is Single: the source passes through)"
        set_cond(ConditionType.TEMPLATE_RESOLVED, False, template.reason, warning)
    else:
        set_cond(ConditionType.TEMPLATE_RESOLVED, True, ConditionReason.TEMPLATE_FOUND,
                 f"JobTemplate {template.template.id} ({template.template.name})")

    # An earlier attempt's encoder still in its grace period (evicted, the job now in a restart's
    # back-off): the job has not stopped before it has.
    earlier_going = _pods_still_going(pods, now, decision.delete_pods) if status.phase in (
        LiveJobPhase.PROVISIONING, LiveJobPhase.STOPPING) else []
    # A job that ends (switched off, its schedule over) while the playlists a dead encoder left open
    # have no encoder yet: one closes them before the job reads Offline or Completed.
    finish_passed = finish is not None and now >= finish
    ending = finish_passed or not job.spec.online
    # The job's encoder Pod went before it was seen going (deleted, its node gone): it died. Still
    # Provisioning, only once it was seen bound: before, it may not have reached the cache yet, and one
    # that goes unseen that early is made again under its name, having started nothing.
    gone = pod is None and status.resource_name == current_name
    vanished_running = gone and status.phase in RUNNING_PHASES
    vanished = vanished_running or (gone and status.phase == LiveJobPhase.PROVISIONING
                                    and _seen_bound(status.conditions, current_name))
    closer_until = _closing_deadline(pod, status, job, config, now)
    if ending:
        # An encoder gone before it was ready left no playlists open.
        status.playlists_left_open = _playlists_left_open(status, pod, vanished_running, finish_passed, closer_until)
    closes = closer_until is not None or (
        (pod is None or pod.finished) and bool(status.playlists_left_open) and not earlier_going
        and (template.template is not None or passthrough))
    if finish_passed:
        if not pod_gone_or_going and pod is not None and closer_until is None:
            decision.delete_pods.append(pod.name)
            decision.finish_before_delete = True
        target, reason, comment = LiveJobPhase.STOPPING, "ScheduleFinished", "finishDateTime reached"
        if (pod is None or pod.finished) and not closes:
            if earlier_going:
                comment += _until_ended(earlier_going)
                decision.requeue_after = TERMINATING_POD_RETRY_SECONDS
            else:
                target = LiveJobPhase.COMPLETED
                status.finished_at = status.finished_at if status.phase == LiveJobPhase.COMPLETED else now
        set_cond(ConditionType.SCHEDULED, False, ConditionReason.COMPLETED, "the schedule is over")
    elif not job.spec.online or (start is not None and now < start):
        switched_off = not job.spec.online
        waits_for_earlier = False
        if pod is not None and not pod.finished:
            if not pod.terminating and (closer_until is None or not switched_off):
                decision.delete_pods.append(pod.name)
                decision.finish_before_delete = switched_off
            target = LiveJobPhase.STOPPING
        elif switched_off and earlier_going:
            target, waits_for_earlier = LiveJobPhase.STOPPING, True
        elif switched_off and closes:
            target = LiveJobPhase.STOPPING
        elif switched_off:
            target = LiveJobPhase.OFFLINE
        else:
            target = LiveJobPhase.PENDING
        reason = str(ConditionReason.SWITCHED_OFF) if switched_off else "WaitingForStartTime"
        comment = "spec.online is false" if switched_off else f"starts at {start.isoformat() if start else ''}"
        if not switched_off:
            set_cond(ConditionType.SCHEDULED, False, ConditionReason.WAITING_FOR_START_TIME, comment)
        # Switched off, the finish time is still due: the job completes then, not on some later event.
        decision.requeue_after = _earliest(None if switched_off else _seconds_until(start, now),
                                           _seconds_until(finish, now))
        if waits_for_earlier:
            comment += _until_ended(earlier_going)
            decision.requeue_after = _earliest(decision.requeue_after, TERMINATING_POD_RETRY_SECONDS)
        if target in (LiveJobPhase.OFFLINE, LiveJobPhase.PENDING):
            if pod is not None and pod.finished:
                decision.delete_pods.append(pod.name)
            # Switching on again starts a new attempt, with a fresh Pod name.
            if status.resource_name == current_name:
                status.attempt = attempt + 1
    elif pod is not None and ((status.phase == LiveJobPhase.STOPPING and not made_ahead) or pod.finish_only):
        # Switched on again while the encoder it stopped still flushes (its deletion may not have
        # reached the cache yet), or one closes the playlists (the status write that said so may have
        # been lost): a stop is not a death. The next encoder starts once this one is gone (two would
        # race on the same playlists).
        status.attempt = attempt
        target, reason = LiveJobPhase.STOPPING, "SwitchedOn"
        comment = f"spec.online is true again: waiting for Pod {pod.name} to finish before starting anew"
        if lost:
            # Its object may never go: the next attempt, with a fresh Pod name, starts at once, from
            # Offline, as after any stop (the encoder was told to finish: its stream ended).
            target, comment = LiveJobPhase.OFFLINE, f"spec.online is true again; Pod {pod.name} is lost with its node"
            status.attempt = attempt + 1
            decision.requeue_after = 0.0
        elif not pod.terminating:
            decision.delete_pods.append(pod.name)
    elif pod is not None and (pod.terminating or pod.finished):
        # The current encoder died (crash, eviction, deletion): count it once, move to the next attempt.
        if pod.exit_code == EXIT_BAD_CONFIG:
            target, reason = LiveJobPhase.FAILED, str(ConditionReason.SPEC_INVALID)
            comment = f"the encoder refused its configuration: {pod.exit_message or 'exit code 2'}"
            set_cond(ConditionType.ENCODER_RUNNING, False, ConditionReason.SPEC_INVALID, comment)
            status.finished_at = now
        else:
            target, reason, comment = _encoder_died(status, config, current_name, _death(pod),
                                                    pod.started_at or _encoder_up_since(status),
                                                    pod.finished_at or now, decision)
            set_cond(ConditionType.ENCODER_RUNNING, False, ConditionReason(reason), comment)
            if status.phase == LiveJobPhase.FAILED or target == LiveJobPhase.FAILED:
                status.finished_at = now
        if not pod.terminating:
            decision.delete_pods.append(pod.name)
    elif vanished:
        target, reason, comment = _encoder_died(status, config, current_name, "disappeared",
                                                _encoder_up_since(status), now, decision)
        set_cond(ConditionType.ENCODER_RUNNING, False, ConditionReason(reason), comment)
    elif pod is None and template.template is None and not passthrough:
        # A Pod must be created and cannot be: a new job waits in Pending, a restarting one in Provisioning.
        starting = status.phase in (None, LiveJobPhase.PENDING, LiveJobPhase.OFFLINE)
        target = LiveJobPhase.PENDING if starting else LiveJobPhase.PROVISIONING
        reason, comment = str(template.reason), template.message
        if not starting:
            status.attempt = attempt
            set_cond(ConditionType.ENCODER_RUNNING, False, ConditionReason.ENCODER_STARTING,
                     f"waiting for the JobTemplate: {template.message}")
        decision.requeue_after = TEMPLATE_RETRY_SECONDS
    elif pod is None:
        if status.phase == LiveJobPhase.STOPPING and status.resource_name == current_name:
            # The encoder a stop ended is gone and the job is on again: a new attempt, a fresh Pod name.
            attempt += 1
            current_name = _encoder_pod_name(job, attempt)
        backoff_ends = None
        if status.last_restart_time is not None and status.consecutive_failures:
            backoff_ends = status.last_restart_time + dt.timedelta(
                seconds=_backoff(config, status.consecutive_failures - 1))
        status.attempt = attempt
        target = LiveJobPhase.PROVISIONING
        still_going = _pods_still_going(pods, now, decision.delete_pods)
        if backoff_ends is not None and now < backoff_ends:
            # The time it is due, not the seconds left: a comment that changed on every reconcile would
            # write the status again on each watch event of the last write.
            due = backoff_ends.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            reason, comment = str(ConditionReason.ENCODER_CRASHED), (
                f"restarting the encoder (attempt {attempt}) at {due}")
            decision.requeue_after = (backoff_ends - now).total_seconds()
        elif still_going:
            reason = "WaitingForPreviousPod"
            comment = f"waiting for Pod {', '.join(still_going)} to terminate before starting {current_name}"
            decision.requeue_after = TERMINATING_POD_RETRY_SECONDS
        else:
            # The comment the new Pod's first observation gives too (see the branch below).
            reason, comment = "CreatingEncoder", f"waiting for Pod {current_name}"
            decision.create_pod_attempt = attempt
            decision.ensure_children = True
            set_cond(ConditionType.ENCODER_RUNNING, False, ConditionReason.ENCODER_STARTING, comment)
            # What the new Pod's first watch event will show too: that event then needs no status write.
            set_cond(ConditionType.SCHEDULED, None, ConditionReason.SCHEDULING, _scheduling(current_name))
    else:
        decision.ensure_children = status.phase in (None, LiveJobPhase.PENDING, LiveJobPhase.OFFLINE)
        status.attempt = attempt
        if pod.scheduled:
            set_cond(ConditionType.SCHEDULED, True, ConditionReason.POD_SCHEDULED, _bound(pod.name))
        elif pod.scheduled is False:
            set_cond(ConditionType.SCHEDULED, False, ConditionReason.UNSCHEDULABLE,
                     pod.unschedulable_message or "the scheduler found no node")
        else:
            set_cond(ConditionType.SCHEDULED, None, ConditionReason.SCHEDULING, _scheduling(pod.name))
        stuck = None if pod.ready or pod.terminating else _start_error(pod)
        start_deadline = None
        if stuck is not None and pod.created_at is not None:
            start_deadline = pod.created_at + dt.timedelta(seconds=config.provisioning_timeout_seconds)
        if stuck is not None and (stuck[0] in START_ERRORS_AT_ONCE or (start_deadline and now >= start_deadline)):
            target, reason = LiveJobPhase.FAILED, stuck[0]
            waited = "" if stuck[0] in START_ERRORS_AT_ONCE else \
                f" for {config.provisioning_timeout_seconds:.0f}s"
            comment = f"encoder Pod {pod.name} could not start{waited}: {stuck[0]}: {stuck[1]}"
            set_cond(ConditionType.ENCODER_RUNNING, False, ConditionReason.ENCODER_START_FAILED, comment)
            decision.events.append(("Warning", stuck[0], comment))
            decision.delete_pods.append(pod.name)
            status.finished_at = now
            start_deadline = None
        elif not pod.ready and pod.running and status.phase in RUNNING_PHASES:
            # A running encoder failing its readiness check for a while (a slow health check under load,
            # its node NotReady) has not restarted: the job keeps its phase, its timings and webhooks.
            target, reason = status.phase, str(ConditionReason.ENCODER_UNRESPONSIVE)
            comment = f"Pod {pod.name} runs but fails its readiness check"
            set_cond(ConditionType.ENCODER_RUNNING, False, ConditionReason.ENCODER_UNRESPONSIVE, comment)
        elif not pod.ready and (storage := _storage_problem(report)) is not None:
            # The encoder runs but is not ready: it takes no input before it has read its stored playlists.
            target, reason = LiveJobPhase.PROVISIONING, str(ConditionReason.WAITING_FOR_STORAGE)
            comment = f"the encoder waits for its bucket before it takes input: {storage[1]}"
            set_cond(ConditionType.ENCODER_RUNNING, True, ConditionReason.WAITING_FOR_STORAGE, comment)
            set_cond(ConditionType.STORAGE_AVAILABLE, False, storage[0], storage[1])
        elif not pod.ready:
            target, reason = LiveJobPhase.PROVISIONING, str(ConditionReason.ENCODER_STARTING)
            comment = f"waiting for Pod {pod.name}" + (f" ({pod.waiting_reason})" if pod.waiting_reason else "")
            set_cond(ConditionType.ENCODER_RUNNING, False, ConditionReason.ENCODER_STARTING, comment)
        else:
            # Made as the job starts running, and again whenever status names none: the API server
            # refused it (see forget_refused_child), whichever operator reconciles the job next.
            decision.ensure_service = status.phase not in RUNNING_PHASES or status.service_name is None
            set_cond(ConditionType.ENCODER_RUNNING, True, ConditionReason.ENCODER_STARTED, f"Pod {pod.name} is ready")
            state = (report or {}).get("state")
            # The encoder says what it waits for or what is wrong with its input ("the source playlist
            # ... has ended", "the input has no video stream ..."), which the job shows.
            said = str((report or {}).get("message") or "")
            if state not in ("live", "reconnecting", "waiting"):
                # Not read yet (an operator that has just started) or on its way out (the Pod's end
                # decides what follows): the phase the job has stands, with no false started or live.
                state, said = {LiveJobPhase.LIVE: "live", LiveJobPhase.RECONNECTING: "reconnecting"}.get(
                    status.phase or LiveJobPhase.PENDING, "waiting"), ""
            ingest = (report or {}).get("ingest") or {}
            if state == "live":
                target, reason = LiveJobPhase.LIVE, str(ConditionReason.PUBLISHER_CONNECTED)
                comment = said or "input connected"
                set_cond(ConditionType.INPUT_CONNECTED, True, ConditionReason.PUBLISHER_CONNECTED, comment)
            elif state == "reconnecting":
                target, reason = LiveJobPhase.RECONNECTING, str(ConditionReason.PUBLISHER_DISCONNECTED)
                comment = said or "input dropped; waiting for the publisher to come back"
                set_cond(ConditionType.INPUT_CONNECTED, False, ConditionReason.PUBLISHER_DISCONNECTED, comment)
            else:
                target, reason = LiveJobPhase.WAITING_FOR_INPUT, str(ConditionReason.WAITING_FOR_PUBLISHER)
                comment = said or "the encoder listens; no input yet"
                set_cond(ConditionType.INPUT_CONNECTED, False, ConditionReason.WAITING_FOR_PUBLISHER, comment)
            if target == LiveJobPhase.LIVE and status.phase != LiveJobPhase.LIVE:
                status.started_at = now
            if ingest.get("statistics"):
                status.statistics = _report_statistics(report)
            upload = (report or {}).get("upload") or {}
            if upload.get("spoolFull"):
                set_cond(ConditionType.STORAGE_AVAILABLE, False, ConditionReason.BUCKET_UNREACHABLE,
                         "uploads are failing and the local spool is full")
            elif report is not None:
                set_cond(ConditionType.STORAGE_AVAILABLE, True, ConditionReason.BUCKET_REACHABLE, "")
            outputs = _report_outputs(report, pod)
            if outputs:
                status.outputs = outputs
            if report is not None:
                status.encoder = _report_health(report)
            decision.encoder_command = _finish_time_command(report, finish)
        decision.requeue_after = _earliest(_seconds_until(finish, now), _seconds_until(start_deadline, now))

    if ending and closes and target == LiveJobPhase.STOPPING:
        if closer_until is not None and pod is not None:
            # Told to finish (one made for that finishes by itself, and is told too: an encoder image older
            # than the operator knows no finishOnly): the encoder ends once it has read and closed them,
            # however long the store takes, until closer_until. POST /finish does not end that wait.
            status.attempt = attempt  # also when the status write that named it was lost
            decision.encoder_command = "finish"
            comment += f"; Pod {pod.name} closes the playlists an encoder that died left open"
            decision.requeue_after = _earliest(decision.requeue_after, _seconds_until(closer_until, now))
        else:
            if pod is not None or status.phase in RUNNING_PHASES:  # this attempt's name is the dead encoder's
                attempt += 1
                current_name = _encoder_pod_name(job, attempt)
                if pod is not None and not pod.terminating:
                    decision.delete_pods.append(pod.name)
            status.attempt = attempt
            decision.create_pod_attempt, decision.finish_only = attempt, True
            status.playlists_left_open = None  # made once: a closer lost meanwhile leaves them as they are
            comment += f"; Pod {current_name} is made to close the playlists an encoder that died left open"
    if target not in (LiveJobPhase.PROVISIONING, LiveJobPhase.STOPPING):
        status.playlists_left_open = None  # an encoder took them over, or closed them, or none can
    if target not in RUNNING_PHASES and reason != ConditionReason.WAITING_FOR_STORAGE:
        # No encoder takes input now: what the last one reported must not still read as true, nor, once
        # the job is off or over, what its last restart planned (a Failed job keeps why it failed).
        off = target in (LiveJobPhase.OFFLINE, LiveJobPhase.COMPLETED)
        no_input = f"no encoder takes input ({target})"
        for type_ in (ConditionType.ENCODER_RUNNING, ConditionType.INPUT_CONNECTED):
            held = find_condition(conditions, type_)
            if held is not None and (held.status == "True" or (off and held.message != no_input)):
                set_cond(type_, False, ConditionReason.ENCODER_STOPPED, no_input)
        scheduled = find_condition(conditions, ConditionType.SCHEDULED)
        stopped = target in (LiveJobPhase.OFFLINE, LiveJobPhase.COMPLETED, LiveJobPhase.FAILED)
        # Between two encoders (a back-off, a wait for the template) the Pod it was bound with is gone.
        if scheduled is not None and ((stopped and scheduled.status != "False")
                                      or (scheduled.status == "True" and (pod is None or pod.finished))):
            set_cond(ConditionType.SCHEDULED, False, ConditionReason.ENCODER_STOPPED, f"no encoder Pod ({target})")
        if stopped:
            ended = OutputStatus.FAILED if target == LiveJobPhase.FAILED else OutputStatus.COMPLETED
            status.outputs = [output.model_copy(update={"status": ended})
                              if output.status in (OutputStatus.RUNNING, OutputStatus.STALLED, OutputStatus.PENDING)
                              else output for output in status.outputs]
    if target in (LiveJobPhase.OFFLINE, LiveJobPhase.PENDING) or status.stream_key_secret is None:
        # status.streamKeySecret names it: it exists before the job first runs, so that the publisher
        # can be set up with the key while the job waits for its start time or to be switched on. None:
        # not made yet, or refused (see forget_refused_child).
        decision.ensure_children = True
    if config.service_type != "ClusterIP" and decision.ensure_children:
        # A node port or a load balancer comes with the Service: made with the Secret, before the job
        # first runs, the ingest URL a publisher is set up with is the one it keeps (and a cloud's load
        # balancer, minutes in the making, is on its way). A ClusterIP Service waits for the ready
        # encoder, so that its endpoints are written once.
        decision.ensure_service = True
    if target in (LiveJobPhase.OFFLINE, LiveJobPhase.PENDING, LiveJobPhase.COMPLETED):
        status.resource_name = None  # no encoder Pod while the job does not run
        status.encoder = None
    elif status.attempt:
        status.resource_name = _encoder_pod_name(job, status.attempt)
    if status.service_name or decision.ensure_service:  # named once it is made, or being made
        status.service_name = naming.service_name(str(job.metadata.name), str(job.metadata.uid))
    status.stream_key_secret = naming.stream_key_secret_name(str(job.metadata.name), str(job.metadata.uid))
    urls = live_job_urls(job, config, pod, template.template, report, endpoint)
    if template.template is None and status.urls is not None and not passthrough:
        # The renditions a running encoder was started with still play from where they did.
        urls = urls.model_copy(update={"output_manifests": {**status.urls.output_manifests,
                                                            **urls.output_manifests}})
    status.urls = urls
    # Live, with an encoder that fails its readiness check, takes no publisher: its Service has no endpoint.
    unresponsive = reason == ConditionReason.ENCODER_UNRESPONSIVE
    ready = target == LiveJobPhase.LIVE and not unresponsive
    ready_reason = ConditionReason.LIVE if ready else (
        ConditionReason.ENCODER_UNRESPONSIVE if unresponsive else ConditionReason.NOT_LIVE)
    conditions = set_condition(conditions, _condition(ConditionType.READY, ready, ready_reason, comment, now,
                                                      generation))
    status.conditions = sorted(conditions, key=lambda c: c.type)
    status.observed_generation = generation
    not_yet_provisioning = status.phase in (None, LiveJobPhase.PENDING, LiveJobPhase.OFFLINE)
    if pod is not None and pod.created_at is not None and not_yet_provisioning and target not in (
            LiveJobPhase.PENDING, LiveJobPhase.OFFLINE):
        # Provisioning is written after the Pod was created (the controller holds that write a few
        # seconds, and the Pod may be ready, or failed, by then): the timings still say when it began.
        _enter(status, LiveJobPhase.PROVISIONING, min(pod.created_at, now), "CreatingEncoder",
               f"waiting for Pod {pod.name}", decision)
    _enter(status, target, now, reason, comment, decision)
    status.message = _clipped(comment)
    decision.requeue_after = _earliest(decision.requeue_after, lost_check)
    decision.status = _dump(status)
    return decision


def mark_pod_refused(job: LiveJob | RecordJob, decision: Decision, pod_name: str, why: str,
                       now: dt.datetime) -> None:
    """The decision for a job whose new Pod the API server refused (a ResourceQuota, an admission
    policy): Ready (and a LiveJob's EncoderRunning and message) say why while the creation is retried.
    A RecordJob that had not started stays Initial: nothing records, so nothing is announced."""
    status: LiveJobStatus | RecordJobStatus = (
        LiveJobStatus.model_validate(decision.status) if isinstance(job, LiveJob)
        else RecordJobStatus.model_validate(decision.status))
    message = f"Pod {pod_name} was refused: {why}"[:1024]
    if isinstance(status, RecordJobStatus) and status.phase == RecordJobPhase.STARTED:
        before = job.status if isinstance(job.status, RecordJobStatus) else RecordJobStatus()
        if before.phase in (None, RecordJobPhase.INITIAL):
            status.phase, status.timings, status.started_at = before.phase, before.timings, before.started_at
            decision.phase_changes = [p for p in decision.phase_changes if p != RecordJobPhase.STARTED]
            decision.events = [e for e in decision.events if e[1] != RecordJobPhase.STARTED]
            _enter(status, RecordJobPhase.INITIAL, now, ConditionReason.POD_REFUSED, message, decision)
    kinds = (ConditionType.READY, ConditionType.ENCODER_RUNNING) if isinstance(job, LiveJob) else (ConditionType.READY,)
    conditions = status.conditions
    for type_ in kinds:
        conditions = set_condition(conditions, _condition(type_, False, ConditionReason.POD_REFUSED, message, now,
                                                          job.metadata.generation))
    status.conditions = sorted(conditions, key=lambda c: c.type)
    if isinstance(status, LiveJobStatus):
        status.message = message
        if decision.finish_only:
            status.playlists_left_open = True  # still: the closer is made at the next try
    decision.status = _dump(status)


def forget_refused_child(decision: Decision, status_field: str) -> None:
    """A LiveJob's Secret or Service that the API server refused (a ResourceQuota, an admission policy)
    is not named in status (streamKeySecret, serviceName) until it is made. What the operator remembers
    is lost with it; the status is not: whichever operator reconciles the job next (after a restart, or
    another replica) makes the child again."""
    decision.status.pop(status_field, None)


def _storage_problem(report: dict[str, Any] | None) -> tuple[ConditionReason, str] | None:
    """Why the encoder cannot use its bucket, when it says so: (StorageAvailable reason, message). A
    reason this operator does not know (another encoder version) reads as unreachable."""
    storage = (report or {}).get("storage") or {}
    if storage.get("available") is not False:
        return None
    try:
        reason = ConditionReason(str(storage.get("reason")))
    except ValueError:
        reason = ConditionReason.BUCKET_UNREACHABLE
    return reason, str(storage.get("message") or "the store does not answer")


def _encoder_pod_name(job: LiveJob, attempt: int) -> str:
    return naming.pod_name(str(job.metadata.name), ENCODER_ROLE, str(job.metadata.uid), attempt)


def _playlists_left_open(status: LiveJobStatus, pod: PodState | None, vanished: bool, finish_passed: bool,
                         closer_until: dt.datetime | None) -> bool | None:
    """status.playlistsLeftOpen as a job ends (switched off, its schedule over), from how its encoder
    went or what it did."""
    if pod is None:
        # Vanished unseen before the job's end: a bare SIGTERM, or none (a SIGTERM after it finishes).
        return True if vanished and not finish_passed else status.playlists_left_open
    if pod.finish_only:
        return status.playlists_left_open
    if pod.finished and pod.exit_code not in (EXIT_OK, None):  # None: lost with its node, told to finish
        return True  # it crashed, also while it flushed after POST /finish
    if status.phase in RUNNING_PHASES and not finish_passed and (pod.terminating or pod.finished):
        return True  # it went unbidden (an eviction): a bare SIGTERM
    if pod.ready or (pod.finished and pod.termination_message == FINISHED_MESSAGE):
        return None  # it has read them (it is stopped as any is), or closed them
    if status.playlists_left_open and closer_until is None and not (pod.terminating or pod.finished):
        return None  # a replacement that cannot come up: stopped, and no closer is made after it
    return status.playlists_left_open


def finish_allowance(job: LiveJob | RecordJob, config: OperatorConfig) -> dt.timedelta:
    """How long a Pod made to finish a job's files may take: to be made and come up (the provisioning
    timeout), its grace period, and a margin for the operator to see it end."""
    return dt.timedelta(seconds=config.provisioning_timeout_seconds + termination_grace_seconds(job, config)
                        + FINISH_SLACK_SECONDS)


def _closing_deadline(pod: PodState | None, status: LiveJobStatus, job: LiveJob, config: OperatorConfig,
                      now: dt.datetime) -> dt.datetime | None:
    """Until when the job's Pod may take to close the playlists a dead encoder left open, when it is to:
    one made for that, or the dead one's replacement that has not read them yet (not ready; a ready
    one is told to finish as it is stopped, as any is). None when it is no such Pod, or is given up on:
    it cannot start (no node, no image), or has had its finish_allowance."""
    if pod is None or pod.finished or pod.terminating or (pod.ready and not pod.finish_only):
        return None
    if not (pod.finish_only or status.playlists_left_open) or _start_error(pod):
        return None
    deadline = (pod.created_at or now) + finish_allowance(job, config)
    return deadline if now < deadline else None


def _start_error(pod: PodState) -> tuple[str, str] | None:
    """Why the Pod cannot start, when it says so: (Kubernetes reason, message)."""
    if pod.scheduled is False:
        return "Unschedulable", pod.unschedulable_message or "the scheduler found no node"
    if pod.waiting_reason in START_ERRORS or pod.waiting_reason in START_ERRORS_AT_ONCE:
        return pod.waiting_reason, pod.waiting_message or pod.waiting_reason
    return None


def _ahead_of(reported: list[PausedRange], held: list[PausedRange]) -> bool:
    """Whether a recorder's pause ranges say more than those the status holds: more of them, or the
    same with the last one closed there and still open here."""
    if len(reported) != len(held):
        return len(reported) > len(held)
    return bool(held) and held[-1].end is None and reported[-1].end is not None


def _live_job_gone_too_long(conditions: list[Condition], config: OperatorConfig, now: dt.datetime) -> bool:
    """Whether a recording's LiveJob has been missing (SourceAvailable False, LiveJobNotFound) for the
    provisioning timeout: longer than an operator's start or a re-apply of the LiveJob takes."""
    source = find_condition(conditions, ConditionType.SOURCE_AVAILABLE)
    return (source is not None and source.status == "False" and source.reason == ConditionReason.LIVE_JOB_NOT_FOUND
            and (now - source.last_transition_time).total_seconds() >= config.provisioning_timeout_seconds)


def _live_job_gone_message(job: RecordJob, config: OperatorConfig) -> str:
    return (f"LiveJob {job.spec.source.live_job_ref} has been gone for {config.provisioning_timeout_seconds:.0f}s: "
            "there is nothing to record from")


def _ran_healthy(pod: PodState | None, recording_since: dt.datetime | None, config: OperatorConfig,
                 now: dt.datetime) -> bool:
    """A recorder that ran for the healthy-run time before it died made progress: it is retried even
    past max_restarts (a day-long recording may be evicted more often than that). For a Pod that
    vanished, the time it was seen recording from is all there is."""
    started_at = pod.started_at if pod is not None else recording_since
    died_at = (pod.finished_at if pod is not None else None) or now
    return started_at is not None and (died_at - started_at).total_seconds() >= config.healthy_run_seconds


def _until_ended(going: list[str]) -> str:
    return f"; waiting for Pod {', '.join(going)} to end"


def _scheduling(pod_name: str) -> str:
    return f"Pod {pod_name} waits for the scheduler"


def _bound(pod_name: str) -> str:
    return f"Pod {pod_name} is bound"


def _seen_bound(conditions: list[Condition], pod_name: str) -> bool:
    """Whether the job's status says that this Pod was bound to a node (a Pod of an earlier attempt may
    still be named there)."""
    scheduled = find_condition(conditions, ConditionType.SCHEDULED)
    return scheduled is not None and scheduled.status == "True" and scheduled.message == _bound(pod_name)


def _encoder_up_since(status: LiveJobStatus) -> dt.datetime | None:
    """When the current encoder came up, from the timings (for a Pod that is gone): the first running
    phase since the job last provisioned."""
    since = None
    for timing in reversed(status.timings):
        if timing.phase not in RUNNING_PHASES:
            break
        since = timing.time
    return since


def _encoder_died(status: LiveJobStatus, config: OperatorConfig, pod_name: str, how: str,
                  started_at: dt.datetime | None, died_at: dt.datetime,
                  decision: Decision) -> tuple[LiveJobPhase, str, str]:
    """Count the death and move to the next attempt, or fail when the encoder died too often in a row.

    Only deaths in a row count: an encoder that ran for `healthy_run_seconds` before it died was
    healthy, so a 24/7 channel whose Pod is evicted now and then never runs out of restarts."""
    if started_at is not None and (died_at - started_at).total_seconds() >= config.healthy_run_seconds:
        status.consecutive_failures = 0
    if status.consecutive_failures >= config.max_restarts:
        return (LiveJobPhase.FAILED, str(ConditionReason.RETRIES_EXHAUSTED),
                f"the encoder failed {status.consecutive_failures + 1} times in a row; last: {pod_name} {how}")
    status.restarts += 1
    status.consecutive_failures += 1
    status.playlists_left_open = True  # the dead encoder wrote no ENDLIST
    status.attempt = max(status.attempt, 1) + 1
    status.last_restart_time = died_at
    delay = _backoff(config, status.consecutive_failures - 1)
    decision.requeue_after = max(0.0, delay)
    message = f"encoder {pod_name} {how}; attempt {status.attempt} starts after {delay:.1f}s"
    decision.events.append(("Warning", "EncoderRestarted", message))
    return LiveJobPhase.PROVISIONING, str(ConditionReason.ENCODER_CRASHED), message


def _death(pod: PodState | None) -> str:
    if pod is None:
        return "disappeared"
    if pod.exit_code is not None:
        return f"exited with code {pod.exit_code}" + (f" ({pod.exit_message})" if pod.exit_message else "")
    return "is being deleted"


def _enter(status: LiveJobStatus | RecordJobStatus, target: Phase, now: dt.datetime, reason: str, comment: str,
           decision: Decision) -> None:
    """Move the phase to `target`, recording every phase passed through in the timings."""
    current = status.phase
    # Stopping because it was switched off (and switched on again before its encoder was gone): the
    # stream ended, so it passes through Offline on its way to the next run.
    switched_off = (isinstance(status, LiveJobStatus) and current == LiveJobPhase.STOPPING and bool(status.timings)
                    and status.timings[-1].reason == ConditionReason.SWITCHED_OFF)
    for phase in phase_path(current, target, switched_off):
        if isinstance(status, LiveJobStatus):
            assert isinstance(phase, LiveJobPhase)
            status.timings = append_timing(status.timings, LiveJobTiming(
                time=now, phase=phase, reason=_reason(reason), comment=comment[:1024]))
        else:
            assert isinstance(phase, RecordJobPhase)
            status.timings = append_timing(status.timings, RecordJobTiming(
                time=now, phase=phase, reason=_reason(reason), comment=comment[:1024]))
        decision.phase_changes.append(phase)
        decision.events.append(("Warning" if phase in ("Failed", "Reconnecting") else "Normal", str(phase), comment))
        status.phase = phase


def _reason(reason: str) -> str | None:
    return reason if reason and reason[0].isalpha() else None


def _clipped(message: str) -> str:
    """A status message the CRD takes: what a Pod or the bucket says may be long."""
    return message if len(message) <= MAX_MESSAGE_LENGTH else message[:MAX_MESSAGE_LENGTH - 1] + "…"


def _dump(status: LiveJobStatus | RecordJobStatus) -> dict[str, Any]:
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not dumped.get("pendingWebhooks"):
        dumped.pop("pendingWebhooks", None)  # what the operator removes once none is left
    return dumped


# The status fields that move all the time while a job runs, by kind: fields of the status, and
# fields of the items of one of its lists. Written on every change, a thousand live jobs would
# patch their status hundreds of times a second.
PROGRESS_FIELDS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "LiveJob": (("encoder", "statistics"), "outputs", ("progress", "segmentsWritten", "lastSegmentTime")),
    "RecordJob": (("progress", "recordedSeconds"), "files", ("sizeBytes", "durationSeconds")),
}


def progress_only(kind: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the status `new` differs from `old` only in how far the job got: the progress fields
    moved, and none of them appeared or went away (a first segment or first statistics count as news)."""
    return _without_progress(kind, old) == _without_progress(kind, new)


def _without_progress(kind: str, status: dict[str, Any]) -> dict[str, Any]:
    """`status` with each progress field that is there replaced by True."""
    fields, list_name, item_fields = PROGRESS_FIELDS[kind]

    def trim(values: dict[str, Any], progress: tuple[str, ...]) -> dict[str, Any]:
        return {name: True if name in progress else value for name, value in values.items()}

    trimmed = trim(status, fields)
    items = status.get(list_name)
    if isinstance(items, list):
        trimmed[list_name] = [trim(item, item_fields) if isinstance(item, dict) else item for item in items]
    return trimmed


# --- RecordJob -----------------------------------------------------------------------------------


def recorded_files(job: RecordJob, report: dict[str, Any], config: OperatorConfig) -> list[RecordedFile]:
    """The recording's playlists (and MP4s), from the keys the recorder reports."""
    location = job.spec.output
    oss_endpoint = (location.endpoint or config.s3_endpoint).rstrip("/")
    if location.type == StorageType.OSS and oss_endpoint:
        # Virtual-hosted, as the recorder writes it and OSS serves it: https://<bucket>.<endpoint host>/<key>.
        scheme, _, host = oss_endpoint.partition("://")
        bucket_base = f"{scheme}://{location.bucket}.{host}"
    else:
        base = (config.s3_public_base_url or location.endpoint or config.s3_endpoint).rstrip("/")
        bucket_base = f"{base}/{location.bucket}" if base else ""

    def url(key: str) -> str | None:
        return f"{bucket_base}/{key}" if bucket_base else None

    files = [RecordedFile(name="master", key=report["masterPlaylistKey"], url=url(report["masterPlaylistKey"]),
                          format=RecordingFormat.HLS)]
    for name, key in sorted((report.get("mediaPlaylistKeys") or {}).items()):
        files.append(RecordedFile(name=name, key=key, url=url(key), format=RecordingFormat.HLS))
        if location.format == RecordingFormat.MP4:
            mp4 = f"{key.rsplit('/', 2)[0]}/{name}.mp4"
            files.append(RecordedFile(name=name, key=mp4, url=url(mp4), format=RecordingFormat.MP4))
    return files[:32]


def _on_another_store(job: RecordJob, source: LiveJob, config: OperatorConfig) -> str | None:
    """How a clip's output differs from its LiveJob's store (endpoint, region, credentials), if it does:
    the buckets may differ, the store may not."""
    output, live = job.spec.output, source.spec.destination
    differences = [
        f"{field} {mine or default!r}, not {theirs or default!r}"
        for field, mine, theirs, default in (
            ("endpoint", output.endpoint, live.endpoint, config.s3_endpoint),
            ("region", output.region, live.region, config.s3_region),
            ("credentialsSecret", output.credentials_secret, live.credentials_secret, config.s3_credentials_secret))
        if (mine or default) != (theirs or default)]
    return "; ".join(differences) or None


def clip_request(job: RecordJob, source: LiveJob | None) -> dict[str, Any] | None:
    """A liveJobRef source is read from the LiveJob's stored segments (past range, or following live)."""
    if job.spec.source.live_job_ref is None or source is None:
        return None
    time_range = job.spec.time_range
    return {
        "sourcePrefix": storage_prefix(source),
        "sourceBucket": source.spec.destination.bucket,
        "start": time_range.start.isoformat() if time_range and time_range.start else None,
        "end": time_range.end.isoformat() if time_range and time_range.end else None,
    }


def decide_record_job(
    job: RecordJob,
    source: LiveJob | None,
    pods: list[dict[str, Any]],
    report: dict[str, Any] | None,
    config: OperatorConfig,
    now: dt.datetime,
    template: TemplateLookup | None = None,
) -> Decision:
    """`template`: the lookup of spec.jobTemplateId (None when the job names none: a copy)."""
    old = job.status or RecordJobStatus()
    status = old.model_copy(deep=True)
    generation = job.metadata.generation
    decision = Decision(status={})
    if status.phase in RECORD_JOB_TERMINAL_PHASES and (
        status.phase == RecordJobPhase.COMPLETED or status.observed_generation == generation
    ):
        decision.delete_pods = [p["metadata"]["name"] for p in pods
                                if not p["metadata"].get("deletionTimestamp") and not pod_state(p).finished]
        status.observed_generation = generation  # seen, if changing nothing: a finished recording stays as it is
        decision.status = _dump(status)
        return decision
    attempt = record_attempt(status)
    if status.phase == RecordJobPhase.FAILED:
        # A new attempt, so a fresh Pod name: the failed run's Pod, kept for its logs, is then deleted
        # as stale instead of being found, and judged, again.
        attempt += 1
        status.retries = status.consecutive_failures = 0
        status.error_message = status.finished_at = None  # the last run's outcome
        _enter(status, RecordJobPhase.INITIAL, now, "SpecChanged", "spec changed: recording again", decision)
    attempt = _with_a_pod_made_ahead(pods, job, RECORDER_ROLE, attempt)
    status.attempt = attempt
    current_name = naming.pod_name(str(job.metadata.name), RECORDER_ROLE, str(job.metadata.uid), attempt)
    pod, stale = _pods_of_attempt(pods, current_name)
    decision.delete_pods = stale
    pod, _, lost_check = _judge_lost(pod, now)
    conditions = status.conditions

    def set_cond(type_: ConditionType, ok: bool | None, reason: ConditionReason, message: str = "") -> None:
        nonlocal conditions
        conditions = set_condition(conditions, _condition(type_, ok, reason, message, now, generation))

    time_range = job.spec.time_range
    start = time_range.start if time_range else None
    end = time_range.end if time_range else None
    ended = end is not None and now >= end
    is_clip = job.spec.source.live_job_ref is not None and ended
    recording = report.get("recording") if report else None
    # Why the recorder Pod cannot start, if it says so, and when that fails the job.
    stuck = _start_error(pod) if pod is not None and not (pod.ready or pod.terminating or pod.finished) else None
    start_deadline = None
    if stuck is not None and pod is not None and pod.created_at is not None:
        start_deadline = pod.created_at + dt.timedelta(seconds=config.provisioning_timeout_seconds)
    ready_before = find_condition(conditions, ConditionType.READY)
    # Since when the current recorder has been recording, as the last reconcile saw it.
    recording_since = ready_before.last_transition_time if ready_before is not None and \
        ready_before.status == "True" and status.resource_name == current_name else None
    # The recorder was recording and its Pod is gone without a word (kubectl delete, a drain that removed
    # it before its exit was read): a death like a crash, counted as one. At the end of the range it
    # was told to finish, and what it wrote is judged as before; a stream recording paused meanwhile gets
    # its recorder again as any paused one that lost its Pod does.
    vanished = pod is None and recording_since is not None and status.phase == RecordJobPhase.STARTED and \
        not ended and not (job.spec.paused and job.spec.source.live_job_ref is None)
    past_end = ended and not is_clip
    # Whether the last reconcile saw this attempt's recorder up (recording, paused or waiting for its
    # source). Past the end, one gone without that (dead and waiting out its back-off, or never up) has
    # not finished the files: another recorder finishes them, instead of the job reading Completed.
    recorder_was_going = ready_before is not None and ready_before.reason in (
        ConditionReason.RECORDING, ConditionReason.PAUSED, ConditionReason.SOURCE_UNREACHABLE)
    # Until when a recorder may still be made to finish them: its grace period, and the provisioning
    # timeout for one that cannot be made (refused, no template) or never comes up.
    finish_deadline = end + finish_allowance(job, config) if end is not None else None
    # A recording past its end whose recorder is gone: completed, failed, or one is made to finish it.
    gone_past_end = pod is None and past_end and status.phase in (RecordJobPhase.STARTED, RecordJobPhase.PAUSED)
    target: RecordJobPhase
    if job.spec.source.live_job_ref is not None and source is None and pod is None and not vanished:
        # Only a recorder about to be made needs the LiveJob (one running reads the bucket, and is
        # judged by its Pod); a job that has started waits in its phase for it.
        target = RecordJobPhase.INITIAL
        if status.phase in (RecordJobPhase.STARTED, RecordJobPhase.PAUSED):
            target = status.phase
        reason = str(ConditionReason.LIVE_JOB_NOT_FOUND)
        comment = f"LiveJob {job.spec.source.live_job_ref} not found"
        set_cond(ConditionType.SOURCE_AVAILABLE, False, ConditionReason.LIVE_JOB_NOT_FOUND, comment)
        decision.requeue_after = TEMPLATE_RETRY_SECONDS
        # One not started yet waits for its LiveJob (applied after it, say), unless its range is over: no
        # LiveJob made now streams that range. Those fail once it has been missing for the provisioning
        # timeout, as one whose LiveJob went while it recorded.
        waits_for_ever = target == RecordJobPhase.INITIAL and not ended
        if not waits_for_ever and _live_job_gone_too_long(conditions, config, now):
            target = RecordJobPhase.FAILED
            comment = _live_job_gone_message(job, config)
            status.error_message = comment
            status.finished_at = now
    elif source is not None and pod is None and status.phase in (None, RecordJobPhase.INITIAL) and \
            (elsewhere := _on_another_store(job, source, config)) is not None:
        # A clip copies the LiveJob's segments within one store, with its own output's credentials.
        target, reason = RecordJobPhase.FAILED, str(ConditionReason.SPEC_INVALID)
        comment = f"output: a clip is written to the store of its LiveJob {source.metadata.name}: {elsewhere}"
        status.error_message = comment
        status.finished_at = now
    elif job.spec.source.stream_url is not None and ended and pod is None and \
            status.phase in (None, RecordJobPhase.INITIAL):
        # Nothing was recorded and the range is over: a stream can only be recorded while it is live.
        target, reason = RecordJobPhase.FAILED, str(ConditionReason.SPEC_INVALID)
        comment = ("timeRange ended before recording began: a streamUrl is recorded live; a past range can "
                   "only be cut from a LiveJob's stored segments (source.liveJobRef)")
        status.error_message = comment
        status.finished_at = now
    elif start is not None and now < start and not is_clip:
        target, reason, comment = RecordJobPhase.INITIAL, "WaitingForStartTime", f"starts at {start.isoformat()}"
        decision.requeue_after = _seconds_until(start, now)
        if pod is not None:
            # Rescheduled while recording: no recorder runs until the new start, and the one made then
            # is a new attempt, so that this one, maybe still going, is never taken for it.
            status.attempt += 1
            if not pod.terminating:
                decision.delete_pods.append(pod.name)
    elif gone_past_end and status.started_at is None:
        # Created paused and never resumed: the range is over with nothing recorded.
        target, reason = RecordJobPhase.FAILED, str(ConditionReason.SPEC_INVALID)
        comment = "timeRange ended while the job was paused from its creation: nothing was recorded"
        status.error_message = comment
        status.finished_at = now
    elif gone_past_end and recorder_was_going:
        # The recorder was stopped at the end of the range: on SIGTERM it closed its files and went.
        target, reason, comment = RecordJobPhase.COMPLETED, str(ConditionReason.COMPLETED), "the time range ended"
        status.finished_at = now
    elif gone_past_end and finish_deadline is not None and now >= finish_deadline:
        target, reason = RecordJobPhase.FAILED, str(ConditionReason.ENCODER_START_FAILED)
        comment = _clipped(f"the time range ended and no recorder finished the files by {finish_deadline.isoformat()}"
                           + (f"; last: {ready_before.message}" if ready_before and ready_before.message else ""))
        status.error_message = comment
        status.finished_at = now
    elif pod is None and not vanished:
        # A recording of a stream waits for its resume with no recorder. One that follows its LiveJob
        # gets its recorder at once: it cuts from what is stored, leaving out what it was paused for.
        waits = job.spec.paused and job.spec.source.live_job_ref is None
        target = RecordJobPhase.PAUSED if waits else RecordJobPhase.STARTED
        if gone_past_end:  # a recorder that only finishes the files: neither a pause nor a resume
            target = status.phase or target
        still_going = _pods_still_going(pods, now, decision.delete_pods)
        never_started = status.phase in (None, RecordJobPhase.INITIAL) or (
            status.phase == RecordJobPhase.PAUSED and status.started_at is None)  # its own Paused read back
        if target == RecordJobPhase.PAUSED and never_started:
            reason, comment = str(ConditionReason.PAUSED), "created paused; set spec.paused to false to record"
            if end is not None:  # still paused then, it fails: nothing else would look at it again
                decision.requeue_after = _seconds_until(end, now)
        elif still_going:
            # Two recorders would write the same files: the new one starts once the old one is gone.
            target = status.phase or RecordJobPhase.INITIAL
            reason = "WaitingForPreviousPod"
            comment = f"waiting for Pod {', '.join(still_going)} to terminate before starting {current_name}"
            decision.requeue_after = TERMINATING_POD_RETRY_SECONDS
        elif template is not None and template.template is None:
            # Recording without the template asked for would be a copy nobody asked for: wait for it.
            target = status.phase or RecordJobPhase.INITIAL
            reason, comment = str(template.reason), template.message
            decision.requeue_after = TEMPLATE_RETRY_SECONDS
        else:
            reason, comment = "CreatingRecorder", f"creating Pod {current_name}"
            if gone_past_end:
                comment += " to finish the recording (the time range ended)"
            decision.create_pod_attempt = attempt
            decision.ensure_children = True
            set_cond(ConditionType.SOURCE_AVAILABLE, True, ConditionReason.SOURCE_REACHABLE, "")
            if status.started_at is None:
                status.started_at = now
    elif pod is not None and pod.finished and pod.exit_code == 0:
        target, reason, comment = RecordJobPhase.COMPLETED, str(ConditionReason.COMPLETED), "recording complete"
        if job.spec.source.live_job_ref is not None and pod.termination_message:
            # The cut's own account: how many segments, and where it begins when older ones had gone.
            comment = f"recording complete: {pod.termination_message}"
        status.finished_at = now
    elif pod is None or pod.finished:  # no Pod here: one that vanished
        # Only deaths in a row count: a recorder that ran for the healthy-run time made progress, so a
        # day-long recording evicted now and then is continued however often that happens.
        exit_code = pod.exit_code if pod is not None else None
        in_a_row = 0 if _ran_healthy(pod, recording_since, config, now) else status.consecutive_failures
        if exit_code == EXIT_BAD_CONFIG or in_a_row >= config.max_restarts:
            target = RecordJobPhase.FAILED
            reason = str(ConditionReason.SPEC_INVALID if exit_code == EXIT_BAD_CONFIG
                         else ConditionReason.RETRIES_EXHAUSTED)
            comment = f"recorder {_death(pod)}"
            status.error_message = _clipped(comment)
            status.finished_at = now
        else:
            target = status.phase or RecordJobPhase.STARTED
            reason, comment = str(ConditionReason.ENCODER_CRASHED), f"recorder {_death(pod)}"

            def count_the_retry() -> None:
                nonlocal comment
                status.retries += 1
                status.consecutive_failures = in_a_row + 1
                status.attempt += 1
                comment += f"; retry {status.retries}"
                decision.events.append(("Warning", "RecorderRestarted", comment))

            if pod is None:
                # Nothing is left to judge again: counted now, and the next attempt is made here, or by the
                # reconcile that finds no Pod once what it waits for below is there. No back-off either:
                # with no Pod to date the death, it would be forgotten on the next reconcile.
                count_the_retry()
            # killed_by: one lost with its node.
            wait = 0.0 if pod is None else (
                (pod.finished_at or pod.killed_by or now) + dt.timedelta(seconds=_backoff(config, in_a_row))
                - now).total_seconds()
            still_going = _pods_still_going(pods, now, decision.delete_pods)
            if wait > 0:
                decision.requeue_after = wait
            elif still_going:
                # Counted when the next recorder is made, so once however long this takes.
                comment += f"; the retry waits for Pod {', '.join(still_going)} to terminate"
                decision.requeue_after = TERMINATING_POD_RETRY_SECONDS
            elif template is not None and template.template is None:
                comment += f"; the retry waits: {template.message}"
                decision.requeue_after = TEMPLATE_RETRY_SECONDS
            elif job.spec.source.live_job_ref is not None and source is None:
                # A recorder of a LiveJob is made from it (its bucket and the clip): without it the
                # retry would be refused as a bad config and fail the job for good.
                comment += f"; the retry waits for LiveJob {job.spec.source.live_job_ref}"
                set_cond(ConditionType.SOURCE_AVAILABLE, False, ConditionReason.LIVE_JOB_NOT_FOUND,
                         f"LiveJob {job.spec.source.live_job_ref} not found")
                decision.requeue_after = TEMPLATE_RETRY_SECONDS
                if _live_job_gone_too_long(conditions, config, now):
                    target, reason = RecordJobPhase.FAILED, str(ConditionReason.LIVE_JOB_NOT_FOUND)
                    comment = f"recorder {_death(pod)}; " + _live_job_gone_message(job, config)
                    status.error_message = _clipped(comment)
                    status.finished_at = now
            else:
                if pod is not None:
                    if not pod.terminating:
                        decision.delete_pods.append(pod.name)
                    count_the_retry()
                decision.create_pod_attempt = status.attempt
                decision.ensure_children = True
                if job.spec.source.live_job_ref is not None:  # made from the LiveJob, which may have been away
                    set_cond(ConditionType.SOURCE_AVAILABLE, True, ConditionReason.SOURCE_REACHABLE, "")
    elif stuck is not None and (stuck[0] in START_ERRORS_AT_ONCE or (start_deadline and now >= start_deadline)):
        # As for a LiveJob's encoder: a recorder that can never start fails the job, with the cause.
        target, reason = RecordJobPhase.FAILED, stuck[0]
        comment = f"recorder Pod {pod.name} could not start: {stuck[0]}: {stuck[1]}"
        status.error_message = _clipped(comment)
        status.finished_at = now
        decision.events.append(("Warning", stuck[0], comment))
        decision.delete_pods.append(pod.name)
    else:
        if status.started_at is None:
            # The write that made the Pod and dated the start was lost (a conflict, an operator restart):
            # the Pod dates it. Without it, a Pod gone at the end would read as "nothing was recorded".
            status.started_at = pod.created_at or now
        # A recorder not read yet (an operator that has just started) is taken to be as the job says
        # it was: not read, a Paused job would announce a resume that never happened.
        paused_now = bool(recording.get("paused")) if recording is not None else status.phase == RecordJobPhase.PAUSED
        ending = pod.ready and past_end
        # A clip's recorder is paused while it follows its LiveJob, waiting for the end of the range:
        # what is stored meanwhile is left out when it cuts. A past range is cut at once.
        following = is_clip and (report or {}).get("state") == "waiting"
        if job.spec.paused != paused_now and pod.ready and (following or not is_clip) and not ending:
            # Not at the end: a stop clears paused, and a resume there would let paused content in
            # while the recorder flushes.
            decision.encoder_command = "pause" if job.spec.paused else "resume"
        elif pod.ready and not pod.terminating and (following or not is_clip) and not ending:
            # The end moved (a stop moves it to now): the recorder ends at the one it holds, and a clip
            # that follows its LiveJob cuts there. Only a change of the end moves it, not any change of
            # the spec (a pause and resume bump the generation too).
            decision.encoder_command = _finish_time_command(report, end)
        # From the end, or from the Pod's creation for an attempt made after it (one that finishes what an
        # earlier attempt could not): each recorder gets its whole grace period to finish.
        finish_by = max(end, pod.created_at or end) + dt.timedelta(
            seconds=termination_grace_seconds(job, config) + FINISH_SLACK_SECONDS) if end is not None else None
        finish_check = None
        if past_end and not pod.terminating and finish_by is not None and now < finish_by:
            # The end of the range (or a stop, which moves the end to now): /finish, and the recorder
            # closes its playlists as VOD (and writes its MP4s) and exits by itself, within its grace
            # period. Its exit code then says how that went (3: to be finished by another attempt; 2: no
            # MP4): a Pod deleted at once is gone before its code is read, and it would count as done.
            if pod.ready:
                decision.encoder_command = "finish"
            finish_check = min(FINISH_CHECK_SECONDS, (finish_by - now).total_seconds())
        elif past_end and pod.running and not pod.terminating:
            # Still running after its grace period: stopped, /finish first (a bare SIGTERM is an interruption).
            # One whose container never started is left to the start deadline (start_deadline).
            decision.finish_before_delete = True
            decision.delete_pods.append(pod.name)
        target = RecordJobPhase.PAUSED if paused_now else RecordJobPhase.STARTED
        reason = str(ConditionReason.PAUSED if paused_now else ConditionReason.RECORDING)
        comment = "paused" if paused_now else ("cutting the clip" if is_clip else "recording")
        storage = None if pod.ready else _storage_problem(report)
        if storage is not None:
            # Not ready: the recorder reads its stored playlists (an earlier attempt's) before it records.
            reason = str(ConditionReason.WAITING_FOR_STORAGE)
            comment = f"the recorder waits for its bucket before it records: {storage[1]}"
            set_cond(ConditionType.STORAGE_AVAILABLE, False, storage[0], storage[1])
        elif not pod.ready and not (pod.terminating and recorder_was_going):
            # Not up (a Pod being stopped says what it was): gone past the end, it has finished nothing.
            reason = str(ConditionReason.ENCODER_STARTING)
            if not pod.terminating:
                comment = f"waiting for Pod {pod.name}" + (f" ({pod.waiting_reason})" if pod.waiting_reason else "")
        elif pod.ready and find_condition(conditions, ConditionType.STORAGE_AVAILABLE) is not None:
            set_cond(ConditionType.STORAGE_AVAILABLE, True, ConditionReason.BUCKET_REACHABLE, "")
        if past_end and not pod.terminating:
            comment = f"the time range ended: recorder Pod {pod.name} finishes its files"
        source_state = (report or {}).get("state")
        silent = job.spec.source.stream_url is not None and pod.ready and not pod.terminating and not paused_now \
            and not past_end and source_state in ("waiting", "reconnecting")
        # A recorder connects to its source once it is ready: only a silence longer than that counts.
        running_for = (now - pod.started_at).total_seconds() if pod.started_at is not None else 0.0
        connect_check = SOURCE_CONNECT_SECONDS - running_for if silent and running_for < SOURCE_CONNECT_SECONDS \
            else None
        if silent and connect_check is None:
            # Ready, and nothing comes from the source (down, a wrong URL): not recording, and it says why.
            reason = str(ConditionReason.SOURCE_UNREACHABLE)
            comment = f"no media from the source: {(report or {}).get('message') or source_state}"
            set_cond(ConditionType.SOURCE_AVAILABLE, False, ConditionReason.SOURCE_UNREACHABLE, comment)
        elif job.spec.source.stream_url is not None and source_state == "live":
            set_cond(ConditionType.SOURCE_AVAILABLE, True, ConditionReason.SOURCE_REACHABLE, "")
        # Past the end, the recorder's own exit (a Pod event) moves the job on, or its deadline to finish.
        upcoming_end = _seconds_until(end, now) if end is not None and end > now else None
        decision.requeue_after = _earliest(upcoming_end, _seconds_until(start_deadline, now), finish_check,
                                           connect_check)
    if recording:
        if recording.get("pausedRanges") is not None:
            reported = [PausedRange.model_validate(paused) for paused in recording["pausedRanges"]]
            # A dead recorder's last report says no more than it knew: not over what was dated since.
            if pod is None or not pod.finished or _ahead_of(reported, status.paused_ranges):
                status.paused_ranges = reported
        if recording.get("progress") is not None:
            status.progress = recording["progress"]
        if recording.get("recordedSeconds") is not None:
            status.recorded_seconds = recording["recordedSeconds"]
    if (pod is None or pod.finished) and job.spec.source.live_job_ref is not None and old.started_at is not None \
            and target not in RECORD_JOB_TERMINAL_PHASES:
        # A recording that follows its LiveJob, paused or resumed while it has no recorder (a retry's
        # back-off): dated here, as the recorder would have, so that the next one leaves out that
        # stretch of the stored stream and no more. Not before its first recorder (one created paused
        # is paused from its start, and that recorder dates it so), and within the recorder's limit.
        ranges = status.paused_ranges
        still_paused = bool(ranges) and ranges[-1].end is None
        if job.spec.paused and not still_paused and len(ranges) < MAX_PAUSED_RANGES:
            status.paused_ranges = [*ranges, PausedRange(start=now)]
        elif not job.spec.paused and still_paused:
            status.paused_ranges = [*ranges[:-1], PausedRange(start=ranges[-1].start, end=now)]
    if target == RecordJobPhase.COMPLETED:
        status.progress = 1.0  # the recorder's last report may be from before its last segment
    # A vod asset's master playlist is written when the recording completes, not before.
    listed = job.spec.output.type != StorageType.VOD or target == RecordJobPhase.COMPLETED
    if listed and report and report.get("masterPlaylistKey"):
        status.files = recorded_files(job, report, config)
    elif target == RecordJobPhase.COMPLETED and not status.files:
        # A short clip can finish before its first report was read: the master's key is known anyway.
        status.files = recorded_files(job, {"masterPlaylistKey": f"{storage_prefix(job)}/master.m3u8"}, config)
    if status.files:
        status.playback_url = status.files[0].url
    # The Pod of the attempt running or about to start (a retry above has moved on to the next one).
    status.resource_name = naming.pod_name(str(job.metadata.name), RECORDER_ROLE, str(job.metadata.uid),
                                           status.attempt)
    # Ready: a recorder records, not one still to be made or starting, nor one that died.
    ready = target == RecordJobPhase.STARTED and pod is not None and pod.ready and not pod.finished and \
        reason != ConditionReason.SOURCE_UNREACHABLE
    if ready:
        ready_reason = ConditionReason.RECORDING
    elif reason in ConditionReason.__members__.values():
        ready_reason = ConditionReason(reason)
    elif target == RecordJobPhase.STARTED:
        ready_reason = ConditionReason.ENCODER_STARTING
    else:
        ready_reason = ConditionReason.NOT_LIVE
    conditions = set_condition(conditions, _condition(ConditionType.READY, ready, ready_reason, comment, now,
                                                      generation))
    status.conditions = sorted(conditions, key=lambda c: c.type)
    status.observed_generation = generation
    _enter(status, target, now, reason, comment, decision)
    decision.requeue_after = _earliest(decision.requeue_after, lost_check)
    decision.status = _dump(status)
    return decision
