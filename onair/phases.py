"""Status vocabulary of the onair custom resources: phases, their state machines, condition types
and reasons.

The operator moves `status.phase` only along the edges listed here (`can_transition`), so the REST
gateway, webhooks and dashboards can rely on the order of events. Condition types and reasons follow
the Kubernetes conventions (CamelCase, one condition per aspect, `Ready` summarises the others).

This module has no dependencies beyond the standard library: the encoder imports it too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class LiveJobPhase(enum.StrEnum):
    """Lifecycle of a LiveJob (`status.phase`)."""

    PENDING = "Pending"
    """Accepted; waiting for `spec.schedule.startDateTime`, the job template, or the first reconcile.
    A running job whose startDateTime is moved into the future comes back here once its encoder is gone."""
    PROVISIONING = "Provisioning"
    """The encoder Pod, ingest Service and stream-key Secret are being created or recreated."""
    WAITING_FOR_INPUT = "WaitingForInput"
    """The encoder runs and listens (RTMP/SRT) or polls (HLS); no media has arrived yet."""
    LIVE = "Live"
    """Media flows in and segments are being written to the bucket."""
    RECONNECTING = "Reconnecting"
    """The input dropped while live; the encoder keeps the playlists and waits for it to come back."""
    STOPPING = "Stopping"
    """The job was switched off or its schedule ended; the encoder flushes and finalises playlists."""
    OFFLINE = "Offline"
    """Switched off (`spec.online: false`); no encoder runs, the stream key and outputs are kept."""
    COMPLETED = "Completed"
    """The schedule's finishDateTime passed and the outputs are final."""
    FAILED = "Failed"
    """The job cannot run (template missing, retries exhausted...); see the conditions."""


class RecordJobPhase(enum.StrEnum):
    """Lifecycle of a RecordJob (`status.phase`).

    initial, started and paused are the states of Alibaba ICE's live record jobs (capitalised here,
    as Kubernetes phases are); Completed and Failed are the terminal outcomes.
    """

    INITIAL = "Initial"
    """Accepted, not started (waiting for `spec.timeRange.start` or the first reconcile); also a
    started job whose `timeRange.start` was moved into the future (its recorder is stopped)."""
    STARTED = "Started"
    """Recording (or cutting a clip from stored segments)."""
    PAUSED = "Paused"
    """`spec.paused` is true; nothing is recorded until it is set back to false."""
    COMPLETED = "Completed"
    """The recording is complete and its files are listed in `status.files`."""
    FAILED = "Failed"
    """The recording failed; `status.errorMessage` says why."""


class OutputStatus(enum.StrEnum):
    """State of one rendition of a running job (`status.outputs[].status`)."""

    PENDING = "Pending"
    RUNNING = "Running"
    STALLED = "Stalled"
    """No segment for more than two segment durations while the input is connected."""
    COMPLETED = "Completed"
    FAILED = "Failed"


class ConditionStatus(enum.StrEnum):
    """`status` of a Kubernetes condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(enum.StrEnum):
    """Condition types the operator maintains. `Ready` summarises the others."""

    READY = "Ready"
    """LiveJob: Live (serving segments). RecordJob: Started and recording."""
    TEMPLATE_RESOLVED = "TemplateResolved"
    """The JobTemplate named by `jobTemplateId` was found and is usable."""
    SCHEDULED = "Scheduled"
    """The encoder Pod is bound to a node (False while Pending/unschedulable or waiting for start)."""
    ENCODER_RUNNING = "EncoderRunning"
    """The encoder process runs and reports its state."""
    INPUT_CONNECTED = "InputConnected"
    """A publisher is connected (RTMP/SRT) or the HLS source answers."""
    STORAGE_AVAILABLE = "StorageAvailable"
    """The destination bucket is reachable with the configured credentials."""
    SOURCE_AVAILABLE = "SourceAvailable"
    """RecordJob: the stream URL answers or the referenced LiveJob exists and has segments."""


class ConditionReason(enum.StrEnum):
    """Machine-readable reasons for conditions (CamelCase, as Kubernetes requires)."""

    # Generic
    RECONCILING = "Reconciling"
    SPEC_INVALID = "SpecInvalid"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    # Ready
    LIVE = "Live"
    NOT_LIVE = "NotLive"
    RECORDING = "Recording"
    PAUSED = "Paused"
    COMPLETED = "Completed"
    FAILED = "Failed"
    SWITCHED_OFF = "SwitchedOff"
    # TemplateResolved
    TEMPLATE_FOUND = "TemplateFound"
    TEMPLATE_NOT_FOUND = "TemplateNotFound"
    TEMPLATE_AMBIGUOUS = "TemplateAmbiguous"
    # Scheduled
    POD_SCHEDULED = "PodScheduled"
    SCHEDULING = "Scheduling"  # Unknown: the Pod exists and the scheduler has not decided yet
    UNSCHEDULABLE = "Unschedulable"
    WAITING_FOR_START_TIME = "WaitingForStartTime"
    # EncoderRunning
    ENCODER_STARTING = "EncoderStarting"
    ENCODER_STARTED = "EncoderStarted"
    ENCODER_CRASHED = "EncoderCrashed"
    ENCODER_STOPPED = "EncoderStopped"
    ENCODER_START_FAILED = "EncoderStartFailed"  # the Pod never started (image, config, no node): Failed
    ENCODER_UNRESPONSIVE = "EncoderUnresponsive"  # running, but failing its readiness check
    # The API server refused the Pod (a ResourceQuota, an admission policy): retried while the job waits.
    POD_REFUSED = "PodRefused"
    # The encoder runs but takes no input until it has read its stored playlists (Provisioning).
    WAITING_FOR_STORAGE = "WaitingForStorage"
    # InputConnected
    WAITING_FOR_PUBLISHER = "WaitingForPublisher"
    PUBLISHER_CONNECTED = "PublisherConnected"
    PUBLISHER_DISCONNECTED = "PublisherDisconnected"
    PUBLISHER_REJECTED = "PublisherRejected"
    SOURCE_UNREACHABLE = "SourceUnreachable"
    # StorageAvailable
    BUCKET_REACHABLE = "BucketReachable"
    BUCKET_UNREACHABLE = "BucketUnreachable"
    BUCKET_NOT_FOUND = "BucketNotFound"
    CREDENTIALS_MISSING = "CredentialsMissing"
    ACCESS_DENIED = "AccessDenied"
    # SourceAvailable (RecordJob)
    SOURCE_REACHABLE = "SourceReachable"
    LIVE_JOB_NOT_FOUND = "LiveJobNotFound"
    SEGMENTS_MISSING = "SegmentsMissing"


# --- LiveJob state machine ---------------------------------------------------------------------

# Phases in which an encoder Pod exists (or is being created) for the job.
LIVE_JOB_ENCODER_PHASES: frozenset[LiveJobPhase] = frozenset(
    {
        LiveJobPhase.PROVISIONING,
        LiveJobPhase.WAITING_FOR_INPUT,
        LiveJobPhase.LIVE,
        LiveJobPhase.RECONNECTING,
        LiveJobPhase.STOPPING,
    }
)

# Terminal for the current generation: only a spec change (new metadata.generation) re-arms the job,
# which is why Completed and Failed may go back to Pending.
LIVE_JOB_TERMINAL_PHASES: frozenset[LiveJobPhase] = frozenset({LiveJobPhase.COMPLETED, LiveJobPhase.FAILED})

_P = LiveJobPhase
LIVE_JOB_TRANSITIONS: Mapping[LiveJobPhase, frozenset[LiveJobPhase]] = {
    # Start time reached and online -> provision; switched off before starting -> Offline;
    # finish time already passed -> Completed; unusable template -> Failed.
    _P.PENDING: frozenset({_P.PROVISIONING, _P.OFFLINE, _P.COMPLETED, _P.FAILED}),
    # Encoder up -> WaitingForInput; switched off / schedule over during start-up -> Stopping.
    # Pending: startDateTime moved into the future while no encoder runs (a restart's back-off, a
    # missing template); an encoder that does run is stopped first (Stopping). With none running,
    # switched off -> Offline and schedule over -> Completed at once.
    _P.PROVISIONING: frozenset({_P.PENDING, _P.WAITING_FOR_INPUT, _P.STOPPING, _P.OFFLINE, _P.COMPLETED,
                                _P.FAILED}),
    # The encoder Pod may be lost in any running phase: back to Provisioning recreates it. Pending as
    # above, when the encoder was already gone as the job was rescheduled.
    _P.WAITING_FOR_INPUT: frozenset({_P.PENDING, _P.LIVE, _P.PROVISIONING, _P.STOPPING, _P.FAILED}),
    _P.LIVE: frozenset({_P.PENDING, _P.RECONNECTING, _P.PROVISIONING, _P.STOPPING, _P.FAILED}),
    # Input back -> Live; reconnect grace period over but still online -> WaitingForInput.
    _P.RECONNECTING: frozenset({_P.PENDING, _P.LIVE, _P.WAITING_FOR_INPUT, _P.PROVISIONING, _P.STOPPING,
                                _P.FAILED}),
    # Switched off -> Offline; schedule finished -> Completed; startDateTime moved into the future
    # -> Pending, to start again then.
    _P.STOPPING: frozenset({_P.PENDING, _P.OFFLINE, _P.COMPLETED, _P.FAILED}),
    # Switched on again -> Provisioning (or Pending when the start time is in the future).
    _P.OFFLINE: frozenset({_P.PENDING, _P.PROVISIONING, _P.COMPLETED, _P.FAILED}),
    _P.COMPLETED: frozenset({_P.PENDING}),
    _P.FAILED: frozenset({_P.PENDING}),
}
del _P


# --- RecordJob state machine -------------------------------------------------------------------

RECORD_JOB_TERMINAL_PHASES: frozenset[RecordJobPhase] = frozenset({RecordJobPhase.COMPLETED, RecordJobPhase.FAILED})

_R = RecordJobPhase
RECORD_JOB_TRANSITIONS: Mapping[RecordJobPhase, frozenset[RecordJobPhase]] = {
    # A RecordJob created with `paused: true` goes straight to Paused.
    _R.INITIAL: frozenset({_R.STARTED, _R.PAUSED, _R.FAILED}),
    # End of timeRange or end of the live source -> Completed. timeRange.start moved into the future
    # -> Initial: the recorder is stopped, and a new one starts then.
    _R.STARTED: frozenset({_R.INITIAL, _R.PAUSED, _R.COMPLETED, _R.FAILED}),
    # The time range may end while paused: what was recorded so far is the result.
    _R.PAUSED: frozenset({_R.INITIAL, _R.STARTED, _R.COMPLETED, _R.FAILED}),
    # A completed recording is an artifact and is never rewritten; a failed one is retried after a
    # spec change (new metadata.generation).
    _R.COMPLETED: frozenset(),
    _R.FAILED: frozenset({_R.INITIAL}),
}
del _R


def can_transition(current: LiveJobPhase | RecordJobPhase | None, target: LiveJobPhase | RecordJobPhase) -> bool:
    """Whether `status.phase` may move from `current` to `target`.

    `current` None means the status has no phase yet: only the initial phase (Pending, Initial) is
    allowed. Staying in the same phase is always allowed, so reconciling twice is harmless.
    Mixing a LiveJob phase with a RecordJob phase is a programming error and raises TypeError.
    """
    if current is None:
        return target in (LiveJobPhase.PENDING, RecordJobPhase.INITIAL)
    if type(current) is not type(target):
        raise TypeError(f"cannot compare {type(current).__name__} with {type(target).__name__}")
    if current == target:
        return True
    if isinstance(current, LiveJobPhase):
        return target in LIVE_JOB_TRANSITIONS[current]
    return target in RECORD_JOB_TRANSITIONS[current]
