"""The onair custom resources (group onair.dev, version v1alpha1) as pydantic models.

This module is the single source of truth: the operator and the REST gateway validate with these
models, and onair.crdgen turns them into the CustomResourceDefinitions in crds/ (`kubectl explain`
shows the field descriptions written here). Every cross-field rule exists twice, once as a pydantic
validator and once as a CEL rule (`CelRule`) for the API server, sharing the same message; the unit
tests hold the two together.

Models use snake_case attributes and camelCase aliases, the Kubernetes JSON names. They accept both
on input and dump camelCase; `OnairModel.to_k8s()` gives the JSON-ready dict to send to the API.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from onair.phases import (
    LIVE_JOB_ENCODER_PHASES,
    ConditionStatus,
    LiveJobPhase,
    OutputStatus,
    RecordJobPhase,
)

GROUP = "onair.dev"
VERSION = "v1alpha1"
ApiVersion = Literal["onair.dev/v1alpha1"]
API_VERSION: Final[ApiVersion] = "onair.dev/v1alpha1"
assert API_VERSION == f"{GROUP}/{VERSION}"

# Bounds shared by the models and the CRD. Every string and list is bounded: the API server
# estimates the cost of CEL rules from these sizes and rejects a CRD whose rules could exceed its
# budget.
MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 253  # a DNS-1123 subdomain, the longest Kubernetes object name
MAX_DESCRIPTION_LENGTH = 1024
MAX_MESSAGE_LENGTH = 4096
MAX_CONDITION_MESSAGE_LENGTH = 32768  # as metav1.Condition
MAX_TIMINGS = 50
MAX_CONDITIONS = 16
MAX_RENDITIONS = 8
MAX_OUTPUTS = 2 * MAX_RENDITIONS  # room for two pipelines' renditions during an encoder hand-over
MAX_RECORDED_FILES = 32
MAX_PAUSED_RANGES = 100
MAX_PENDING_WEBHOOKS = 20

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HTTP_URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"
# RTMP(S) and SRT are pulled as given; over HTTP only HLS playlists can be recorded.
STREAM_URL_PATTERN = r"^((rtmps?|srt)://[^\s/?#]+[^\s]*|https?://[^\s/?#]+[^\s?#]*\.m3u8([?#][^\s]*)?)$"
# S3 bucket naming rules: 3-63 characters, lowercase letters, digits, dots and hyphens, labels
# separated by single dots and starting and ending with a letter or digit.
BUCKET_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# An S3 key prefix made of the characters S3 calls safe, without a leading slash or empty segments.
KEY_PREFIX_PATTERN = r"^([A-Za-z0-9!_.*'()-]+/)*[A-Za-z0-9!_.*'()-]*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
RENDITION_NAME_PATTERN = r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$"
# metav1.Condition's patterns for type and reason.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


# --- CEL rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry of the CRD.

    `field_path` (relative to the node carrying the rule, e.g. ".url") makes the API server report
    the error on that field instead of on the node; `reason` is one of FieldValueInvalid,
    FieldValueRequired, FieldValueForbidden, FieldValueDuplicate. A rule that mentions `oldSelf` is
    a transition rule: it only runs on updates, and the pydantic models cannot check it on a single
    object (see `update_violations`).
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    @property
    def is_transition_rule(self) -> bool:
        return "oldSelf" in self.rule

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry

    def error(self) -> PydanticCustomError:
        """The pydantic error of the validator that mirrors this rule (same message)."""
        return PydanticCustomError("onair_rule", self.message)


CEL_RULES_KEY = "x-kubernetes-validations"


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules; onair.crdgen copies them into the CRD."""
    return {CEL_RULES_KEY: [rule.to_schema() for rule in rules]}


# --- Base classes ------------------------------------------------------------------------------


class OnairModel(BaseModel):
    """Base of every onair model: camelCase JSON names, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        serialize_by_alias=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys, unset optional fields left out (as Kubernetes stores
        them; a null would be pruned by the API server anyway)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(OnairModel):
    """Base of the status models: fields it does not know are ignored, not refused. The status is the
    operator's own record, and one written by a newer operator (a rollback, an old replica during a
    rolling update) must not make this one fail the job as invalid."""

    model_config = ConfigDict(extra="ignore")


def _url_field(description: str, **kwargs: Any) -> Any:
    return Field(description=description, max_length=MAX_URL_LENGTH, pattern=HTTP_URL_PATTERN, **kwargs)


def _name_field(description: str, **kwargs: Any) -> Any:
    return Field(
        description=description,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=DNS_SUBDOMAIN_PATTERN,
        **kwargs,
    )


# --- Spec vocabulary ---------------------------------------------------------------------------


class ServerType(enum.StrEnum):
    """How the stream reaches the encoder."""

    RTMP = "RTMP"
    SRT = "SRT"
    HLS = "HLS"


class InputClass(enum.StrEnum):
    """What the encoder does with the input: pass it through, or encode the template's ladder."""

    SINGLE = "Single"
    STANDARD = "Standard"


class StorageType(enum.StrEnum):
    """Kind of object store a recording is written to."""

    S3 = "s3"
    OSS = "oss"
    VOD = "vod"


class RecordingFormat(enum.StrEnum):
    """Container of a recording."""

    HLS = "hls"
    MP4 = "mp4"


class VideoCodec(enum.StrEnum):
    """Video codec of a rendition."""

    H264 = "H264"
    HEVC = "HEVC"
    VP9 = "VP9"


class VideoProfile(enum.StrEnum):
    """Codec profile of a rendition."""

    BASELINE = "baseline"
    MAIN = "main"
    HIGH = "high"
    MAIN10 = "main10"


class HardwareAcceleration(enum.StrEnum):
    """Where a template's H.264 and HEVC renditions are encoded."""

    NONE = "None"
    NVENC = "NVENC"


class AudioCodec(enum.StrEnum):
    """Audio codec of every rendition."""

    AAC = "AAC"
    OPUS = "OPUS"


# Which profiles each codec accepts; VP9 takes none (libvpx picks profile 0 for 8-bit 4:2:0).
PROFILES_BY_CODEC: Mapping[VideoCodec, frozenset[VideoProfile]] = {
    VideoCodec.H264: frozenset({VideoProfile.BASELINE, VideoProfile.MAIN, VideoProfile.HIGH}),
    VideoCodec.HEVC: frozenset({VideoProfile.MAIN, VideoProfile.MAIN10}),
    VideoCodec.VP9: frozenset(),
}


# --- LiveJob spec ------------------------------------------------------------------------------


class SecretKeyRef(OnairModel):
    """A key of a Secret in the job's namespace."""

    name: str = _name_field("Name of the Secret, in the same namespace as the job.")
    key: str = Field(
        default="passphrase",
        description="Key inside the Secret's data.",
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=SECRET_KEY_PATTERN,
    )


HLS_REQUIRES_URL = CelRule(
    rule="self.serverType != 'HLS' || has(self.url)",
    message="url is required when serverType is HLS: the encoder pulls the stream from it",
    field_path=".url",
    reason="FieldValueRequired",
)
PUSH_FORBIDS_URL = CelRule(
    rule="self.serverType == 'HLS' || !has(self.url)",
    message="url is only allowed when serverType is HLS; RTMP and SRT publishers push to status.urls.ingest",
    field_path=".url",
    reason="FieldValueForbidden",
)
PASSPHRASE_ONLY_FOR_SRT = CelRule(
    rule="self.serverType == 'SRT' || !has(self.srtPassphraseSecretRef)",
    message="srtPassphraseSecretRef is only allowed when serverType is SRT",
    field_path=".srtPassphraseSecretRef",
    reason="FieldValueForbidden",
)
SERVER_TYPE_IMMUTABLE = CelRule(
    rule="self == oldSelf",
    message="serverType is immutable: create a new LiveJob to change the ingest protocol",
)


class LiveJobInput(OnairModel):
    """Where the live stream comes from."""

    model_config = ConfigDict(json_schema_extra=cel_rules(HLS_REQUIRES_URL, PUSH_FORBIDS_URL, PASSPHRASE_ONLY_FOR_SRT))

    server_type: ServerType = Field(
        description=(
            "Ingest protocol. RTMP and SRT: the broadcaster pushes to the URL in status.urls.ingest with "
            "the stream key appended (RTMP: the stream name; SRT: the passphrase, which never travels in "
            "the clear, or, when srtPassphraseSecretRef names another passphrase, the streamid, bare or as "
            "#!::r=<key>,m=publish). HLS: the encoder pulls "
            "the playlist at `url`. Immutable."
        ),
        json_schema_extra=cel_rules(SERVER_TYPE_IMMUTABLE),
    )
    input_class: InputClass = Field(
        default=InputClass.STANDARD,
        description=(
            "Standard: one decode feeds every rendition of the JobTemplate (the ABR ladder). "
            "Single: the source is passed through as one rendition (remuxed to HLS, not transcoded: "
            "H.264 in MPEG-TS segments, HEVC in fMP4 with hvc1, where audio other than AAC, AC-3 "
            "and E-AC-3 is re-encoded to AAC for Apple players)."
        ),
    )
    url: str | None = Field(
        default=None,
        validate_default=True,
        description=(
            "HLS only (required there, forbidden otherwise): http(s) URL of the playlist to pull, "
            "e.g. https://origin.example.com/live/master.m3u8. Loopback, private and link-local addresses "
            "are refused, unless the installation allows their network (encoder.pullAllowedNetworks)."
        ),
        max_length=MAX_URL_LENGTH,
        pattern=HTTP_URL_PATTERN,
    )
    srt_passphrase_secret_ref: SecretKeyRef | None = Field(
        default=None,
        validate_default=True,
        description=(
            "SRT only: the Secret key holding the SRT passphrase (10 to 79 characters) publishers "
            "must use, besides the stream key as streamid. Unset: the stream key is the passphrase, and "
            "no streamid is needed."
        ),
    )

    @field_validator("url")
    @classmethod
    def _url_only_for_hls(cls, url: str | None, info: ValidationInfo) -> str | None:
        server_type = info.data.get("server_type")
        if server_type == ServerType.HLS and url is None:
            raise HLS_REQUIRES_URL.error()
        if server_type in (ServerType.RTMP, ServerType.SRT) and url is not None:
            raise PUSH_FORBIDS_URL.error()
        return url

    @field_validator("srt_passphrase_secret_ref")
    @classmethod
    def _passphrase_only_for_srt(cls, ref: SecretKeyRef | None, info: ValidationInfo) -> SecretKeyRef | None:
        server_type = info.data.get("server_type")
        if ref is not None and server_type is not None and server_type != ServerType.SRT:
            raise PASSPHRASE_ONLY_FOR_SRT.error()
        return ref


class BucketLocation(OnairModel):
    """A place in an S3-compatible bucket."""

    bucket: str = Field(
        description="Bucket name, following the S3 naming rules (3-63 lowercase letters, digits, dots, hyphens).",
        min_length=3,
        max_length=63,
        pattern=BUCKET_PATTERN,
    )
    path: str = Field(
        default="",
        description=(
            "Key prefix inside the bucket, without a leading slash, e.g. live/news. Empty: the job's "
            "name. Playlists and segments go under <path>/."
        ),
        max_length=MAX_DESCRIPTION_LENGTH,
        pattern=KEY_PREFIX_PATTERN,
    )
    endpoint: str | None = Field(
        default=None,
        description="S3 endpoint URL (http or https), e.g. https://s3.eu-west-1.amazonaws.com, with no user "
        "information or backslash in it. Unset: the operator's default endpoint. Another endpoint at a "
        "loopback, private or link-local address is refused, unless the installation allows its network "
        "(encoder.storageAllowedNetworks).",
        max_length=MAX_URL_LENGTH,
        # No "@" nor backslash: URL parsers disagree on where such a host ends (urllib3 takes a backslash for "/"),
        # and the endpoint's host decides what the encoder may reach.
        pattern=r"^https?://[^\s/?#@\\]+([/?#][^\s\\]*)?$",
    )
    region: str | None = Field(
        default=None,
        description="Region used to sign requests. Unset: the operator's default region.",
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9-]+$",
    )
    credentials_secret: str | None = _name_field(
        "Name of a Secret in the job's namespace with the keys AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (optionally AWS_SESSION_TOKEN); the encoder gets them as environment "
        "variables. Unset: the operator's default credentials.",
        default=None,
    )


class LiveJobDestination(BucketLocation):
    """Where the HLS output (playlists and segments) of a live job is written and served from."""

    cdn_base_url: str | None = _url_field(
        "Base URL of the CDN in front of the bucket (http or https). Playback URLs in status.urls "
        "use it when cdnDistribution is true.",
        default=None,
    )
    cdn_distribution: bool = Field(
        default=False,
        description=(
            "Publish playback URLs through the CDN. Without cdnBaseUrl the operator's configured CDN "
            "base URL is used; without either, status.urls.cdn stays empty."
        ),
    )


FINISH_AFTER_START = CelRule(
    rule="!has(self.startDateTime) || !has(self.finishDateTime) || self.finishDateTime > self.startDateTime",
    message="finishDateTime must be after startDateTime",
    field_path=".finishDateTime",
    reason="FieldValueInvalid",
)


def _representable_in_utc(moment: datetime) -> datetime:
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "must be a time within the years 1 to 9999 in UTC") from None
    return moment


# A time with its offset that is a time in UTC too: 0001-01-01T00:00:00+01:00 is not, and every time
# is answered in UTC (the REST API's Z) and compared in it.
UtcTime = Annotated[AwareDatetime, AfterValidator(_representable_in_utc)]

class LiveJobSchedule(OnairModel):
    """When the job is live. Both ends are optional."""

    model_config = ConfigDict(json_schema_extra=cel_rules(FINISH_AFTER_START))

    start_date_time: UtcTime | None = Field(
        default=None,
        description="RFC 3339 time at which the encoder starts. Unset: as soon as the job is online.",
    )
    finish_date_time: UtcTime | None = Field(
        default=None,
        validate_default=True,
        description=(
            "RFC 3339 time at which the job stops and becomes Completed; must be after "
            "startDateTime. Unset: until switched off."
        ),
    )

    @field_validator("finish_date_time")
    @classmethod
    def _finish_after_start(cls, finish: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start_date_time")
        if start is not None and finish is not None and finish <= start:
            raise FINISH_AFTER_START.error()
        return finish


# A job that passes its source through (inputClass Single) has no template: its segments and live
# playlist are these.
PASSTHROUGH_SEGMENT_SECONDS = 4
PASSTHROUGH_PLAYLIST_WINDOW = 6
PASSTHROUGH_RENDITION = "source"  # its one rendition: <prefix>/source/index.m3u8


class LiveJobSpec(OnairModel):
    """Desired state of a LiveJob."""

    job_template_id: int = Field(
        description=(
            "spec.id of the JobTemplate (the encoding ladder) to use. The operator looks for it in "
            "the job's namespace first, then in its own namespace."
        ),
        ge=0,
        le=2**31 - 1,
    )
    input: LiveJobInput = Field(description="Where the live stream comes from.")
    destination: LiveJobDestination = Field(description="Where the HLS output is written and served from.")
    description: str | None = Field(
        default=None,
        description="Free text shown in lists.",
        max_length=MAX_DESCRIPTION_LENGTH,
    )
    callback_url: str | None = _url_field(
        "http(s) URL that receives a signed webhook (POST, JSON) when the job enters a phase that has "
        "an event (docs/rest-api.md lists them).",
        default=None,
    )
    online: bool = Field(
        default=True,
        description=(
            "Switch: true runs the encoder (within the schedule); false stops it and the job goes "
            "Offline, keeping its stream key and outputs."
        ),
    )
    schedule: LiveJobSchedule | None = Field(
        default=None,
        description="Optional time window. Unset: live whenever online is true.",
    )
    dvr_window_seconds: int = Field(
        default=0,
        description=(
            "Seconds of past stream players can seek back into (the live playlist keeps that many "
            "seconds of segments). 0: only the JobTemplate's sliding playlistWindow."
        ),
        ge=0,
        le=86400,
    )
    recording: bool = Field(
        default=False,
        description=(
            "Keep every segment and write a VOD playlist of the whole event next to the live one, "
            "so RecordJobs can cut clips from it after the fact."
        ),
    )

    def kept_seconds(self, template: JobTemplateSpec) -> int | None:
        """How many seconds of its past stream the job keeps in its bucket for clips to be cut from:
        its live window, the DVR window and at least the playlist of segments of `template` (its
        JobTemplate) or of a pass-through. None when it records: it keeps every segment."""
        if self.recording:
            return None
        return max(self.dvr_window_seconds, self.segment_seconds(template) * (
            PASSTHROUGH_PLAYLIST_WINDOW if self.input.input_class == InputClass.SINGLE else template.playlist_window))

    def segment_seconds(self, template: JobTemplateSpec) -> int:
        """The nominal duration of the job's segments, with `template` its JobTemplate."""
        if self.input.input_class == InputClass.SINGLE:
            return PASSTHROUGH_SEGMENT_SECONDS
        return template.segment_duration_seconds


# Changing these while an encoder runs would split the output or strand the publisher, so the API
# server refuses it; the user switches the job off (online: false), waits for Offline, then edits.
_RUNNING_PHASES = [phase.value for phase in LiveJobPhase if phase in LIVE_JOB_ENCODER_PHASES]
_OLD_ENCODER_RUNNING = (
    "has(oldSelf.status) && has(oldSelf.status.phase) && oldSelf.status.phase in ["
    + ", ".join(f"'{phase}'" for phase in _RUNNING_PHASES)
    + "]"
)
_RUNNING_PHASES_TEXT = ", ".join(_RUNNING_PHASES)


def _frozen_while_running(field: str) -> CelRule:
    return CelRule(
        rule=f"!({_OLD_ENCODER_RUNNING}) || self.spec.{field} == oldSelf.spec.{field}",
        message=(
            f"spec.{field} cannot change while the encoder runs (phase {_RUNNING_PHASES_TEXT}): "
            "set spec.online to false, wait for phase Offline, then change it"
        ),
        field_path=f".spec.{field}",
        reason="FieldValueForbidden",
    )


# The spec fields (by their manifest names) an encoder takes at its start and keeps.
LIVE_JOB_FIELDS_FROZEN_WHILE_RUNNING = ("input", "destination", "jobTemplateId", "dvrWindowSeconds", "recording")
LIVE_JOB_FROZEN_WHILE_RUNNING: tuple[CelRule, ...] = tuple(
    _frozen_while_running(field) for field in LIVE_JOB_FIELDS_FROZEN_WHILE_RUNNING
)


# --- RecordJob spec ----------------------------------------------------------------------------

EXACTLY_ONE_SOURCE = CelRule(
    rule="has(self.streamUrl) != has(self.liveJobRef)",
    message="source needs exactly one of streamUrl or liveJobRef",
    reason="FieldValueInvalid",
)
SOURCE_IMMUTABLE = CelRule(
    rule="self == oldSelf",
    message="source is immutable: create a new RecordJob to record another stream",
)


class RecordSource(OnairModel):
    """What to record: exactly one of streamUrl or liveJobRef."""

    model_config = ConfigDict(json_schema_extra=cel_rules(EXACTLY_ONE_SOURCE))

    stream_url: str | None = Field(
        default=None,
        description="Live stream to record: rtmp://, rtmps://, srt://, or an http(s):// .m3u8 playlist. Loopback, "
                    "private and link-local addresses are refused, unless the installation allows their network "
                    "(encoder.pullAllowedNetworks).",
        max_length=MAX_URL_LENGTH,
        pattern=STREAM_URL_PATTERN,
    )
    live_job_ref: str | None = _name_field(
        "Name of a LiveJob in the same namespace whose output is recorded (or, with timeRange, "
        "clipped from its stored segments). A recording waits for it to exist before it starts (once its "
        "timeRange has ended, at most ONAIR_PROVISIONING_TIMEOUT_SECONDS); a recorder running when it is "
        "deleted goes on, and one to be made again (a retry) waits for it at most "
        "ONAIR_PROVISIONING_TIMEOUT_SECONDS, then the job fails (SourceAvailable: LiveJobNotFound).",
        default=None,
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> RecordSource:
        if (self.stream_url is None) == (self.live_job_ref is None):
            raise EXACTLY_ONE_SOURCE.error()
        return self


END_AFTER_START = CelRule(
    rule="!has(self.start) || !has(self.end) || self.end > self.start",
    message="end must be after start",
    field_path=".end",
    reason="FieldValueInvalid",
)


class TimeRange(OnairModel):
    """Part of the stream to record. Both ends are optional."""

    model_config = ConfigDict(json_schema_extra=cel_rules(END_AFTER_START))

    start: UtcTime | None = Field(
        default=None,
        description="RFC 3339 time the recording starts at. Unset: now (or the start of the stored event).",
    )
    end: UtcTime | None = Field(
        default=None,
        validate_default=True,
        description="RFC 3339 time the recording ends at; after start. Unset: when the source ends.",
    )

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start")
        if start is not None and end is not None and end <= start:
            raise END_AFTER_START.error()
        return end


class RecordOutput(BucketLocation):
    """Where the recording is written."""

    type: StorageType = Field(
        default=StorageType.S3,
        description=(
            "s3: any S3-compatible store (path-style addressing). oss: Alibaba OSS (virtual-hosted "
            "addressing, bucket.endpoint-host). vod: like s3, for a video library: the master playlist, "
            "the asset's entry point, is written only when the recording completes. Every recording's "
            "media playlists are EVENT playlists while it records and VOD (with ENDLIST) once complete."
        ),
    )
    format: RecordingFormat = Field(
        default=RecordingFormat.HLS,
        description="hls: playlists and segments per rendition. mp4: one MP4 file per rendition.",
    )


OUTPUT_IMMUTABLE = CelRule(
    rule="self == oldSelf",
    message="output is immutable: create a new RecordJob to write elsewhere",
)


TEMPLATE_ONLY_FOR_STREAMS = CelRule(
    rule="!has(self.jobTemplateId) || has(self.source.streamUrl)",
    message="jobTemplateId transcodes a streamUrl recording; a liveJobRef recording keeps the LiveJob's renditions",
    field_path=".jobTemplateId",
    reason="FieldValueForbidden",
)


class RecordJobSpec(OnairModel):
    """Desired state of a RecordJob."""

    model_config = ConfigDict(json_schema_extra=cel_rules(TEMPLATE_ONLY_FOR_STREAMS))

    source: RecordSource = Field(
        description="What to record: exactly one of streamUrl or liveJobRef. Immutable.",
        json_schema_extra=cel_rules(SOURCE_IMMUTABLE),
    )
    time_range: TimeRange | None = Field(
        default=None,
        description=(
            "Part of the stream to record. With liveJobRef it cuts a clip from the LiveJob's stored "
            "segments (the LiveJob needs recording: true for times before the RecordJob existed)."
        ),
    )
    output: RecordOutput = Field(
        description="Where the recording is written. Immutable.",
        json_schema_extra=cel_rules(OUTPUT_IMMUTABLE),
    )
    job_template_id: int | None = Field(
        default=None,
        description=(
            "spec.id of the JobTemplate a streamUrl recording is transcoded with; the recorder waits while no "
            "such template exists. Unset: a copy, no re-encode. Not with liveJobRef: such a recording keeps "
            "the LiveJob's renditions as they are."
        ),
        ge=0,
        le=2**31 - 1,
    )
    notify_url: str | None = _url_field(
        "http(s) URL that receives a signed webhook (POST, JSON) when the job enters a phase that has "
        "an event (docs/rest-api.md lists them).",
        default=None,
    )
    paused: bool = Field(
        default=False,
        description="true pauses the recording (phase Paused); false resumes it. A recording that follows its "
                    "LiveJob (source.liveJobRef) pauses until its range's end; a range already past is cut at once.",
    )

    @field_validator("job_template_id")
    @classmethod
    def _template_only_for_streams(cls, template_id: int | None, info: ValidationInfo) -> int | None:
        source = info.data.get("source")
        if template_id is not None and source is not None and source.stream_url is None:
            raise TEMPLATE_ONLY_FOR_STREAMS.error()
        return template_id


# One recording has one ladder: a recorder keeps the template it started with, and its next attempt
# would write another ladder into the same recording.
_RECORDING_PHASES = (RecordJobPhase.STARTED.value, RecordJobPhase.PAUSED.value)
RECORD_TEMPLATE_FROZEN_WHILE_RECORDING = CelRule(
    rule=(
        "!(has(oldSelf.status) && has(oldSelf.status.phase) && oldSelf.status.phase in ["
        + ", ".join(f"'{phase}'" for phase in _RECORDING_PHASES) + "]) || "
        "(has(self.spec.jobTemplateId) == has(oldSelf.spec.jobTemplateId) && "
        "(!has(self.spec.jobTemplateId) || self.spec.jobTemplateId == oldSelf.spec.jobTemplateId))"
    ),
    message=(
        f"spec.jobTemplateId cannot change while the job records (phase {', '.join(_RECORDING_PHASES)}): one "
        "recording has one ladder; create a new RecordJob to record with another template"
    ),
    field_path=".spec.jobTemplateId",
    reason="FieldValueForbidden",
)


# --- JobTemplate spec --------------------------------------------------------------------------

PROFILE_MATCHES_CODEC = CelRule(
    rule=(
        "!has(self.profile) || "
        "(self.codec == 'H264' && self.profile in ['baseline', 'main', 'high']) || "
        "(self.codec == 'HEVC' && self.profile in ['main', 'main10'])"
    ),
    message="profile must be baseline, main or high for H264, main or main10 for HEVC, and unset for VP9",
    field_path=".profile",
    reason="FieldValueInvalid",
)


class Rendition(OnairModel):
    """One rung of the encoding ladder."""

    model_config = ConfigDict(json_schema_extra=cel_rules(PROFILE_MATCHES_CODEC))

    name: str = Field(
        description=(
            "Rendition name, unique in the template; used in object keys (<path>/<name>/index.m3u8) "
            "and as the key of status.urls.outputManifests, e.g. 720p."
        ),
        min_length=1,
        max_length=32,
        pattern=RENDITION_NAME_PATTERN,
    )
    width: int = Field(description="Frame width in pixels (even).", ge=16, le=7680, multiple_of=2)
    height: int = Field(description="Frame height in pixels (even).", ge=16, le=4320, multiple_of=2)
    fps: float = Field(description="Frames per second, e.g. 25, 29.97, 60.", ge=1, le=120)
    video_bitrate: int = Field(
        description="Target video bitrate in bits per second (the VBV maximum when crf is set).",
        ge=16_000,
        le=200_000_000,
    )
    codec: VideoCodec = Field(default=VideoCodec.H264, description="Video codec.")
    profile: VideoProfile | None = Field(
        default=None,
        validate_default=True,
        description=(
            "Codec profile: baseline, main or high for H264; main or main10 for HEVC; unset for "
            "VP9. Unset: the encoder's default."
        ),
    )
    crf: int | None = Field(
        default=None,
        description="Constant rate factor (0 best - 51 worst); unset: constant bitrate at videoBitrate.",
        ge=0,
        le=51,
    )
    gop_seconds: float = Field(
        default=2.0,
        description="Keyframe interval in seconds; segment boundaries fall on keyframes.",
        ge=0.5,
        le=10,
    )

    @field_validator("profile")
    @classmethod
    def _profile_matches_codec(cls, profile: VideoProfile | None, info: ValidationInfo) -> VideoProfile | None:
        codec = info.data.get("codec")
        if profile is not None and codec is not None and profile not in PROFILES_BY_CODEC[codec]:
            raise PROFILE_MATCHES_CODEC.error()
        return profile


class AudioSettings(OnairModel):
    """Audio encoding, shared by every rendition."""

    codec: AudioCodec = Field(default=AudioCodec.AAC, description="Audio codec.")
    bitrate: int = Field(default=128_000, description="Audio bitrate in bits per second.", ge=8_000, le=512_000)
    sample_rate: Literal[8000, 16000, 22050, 24000, 32000, 44100, 48000] = Field(
        default=48000,
        description="Sample rate in Hz.",
    )
    channels: int = Field(default=2, description="1 (mono) or 2 (stereo).", ge=1, le=2)


TEMPLATE_ID_IMMUTABLE = CelRule(
    rule="self == oldSelf",
    message="id is immutable: jobs refer to templates by id; create a new JobTemplate instead",
)


class JobTemplateSpec(OnairModel):
    """An encoding ladder that jobs refer to by id."""

    id: int = Field(
        description="Number that LiveJob and RecordJob spec.jobTemplateId refer to. Immutable.",
        ge=0,
        le=2**31 - 1,
        json_schema_extra=cel_rules(TEMPLATE_ID_IMMUTABLE),
    )
    name: str = Field(description="Display name, e.g. 'HD ladder'.", min_length=1, max_length=MAX_NAME_LENGTH)
    description: str | None = Field(
        default=None,
        description="Free text.",
        max_length=MAX_DESCRIPTION_LENGTH,
    )
    is_default: bool = Field(
        default=False,
        alias="default",
        description=(
            "Offered first by the REST gateway (its template list puts it first). A RecordJob without "
            "jobTemplateId is a copy, not transcoded with it. Mark one template per namespace."
        ),
    )
    renditions: list[Rendition] = Field(
        description="The renditions, highest quality first; names are unique.",
        min_length=1,
        max_length=MAX_RENDITIONS,
        # A list-map keyed by name: the API server rejects duplicate names and server-side apply
        # merges renditions by name.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    audio: AudioSettings = Field(
        default_factory=AudioSettings,
        description="Audio encoding, shared by every rendition.",
        # `default: {}` lets the API server fill in the audio defaults, so they show in kubectl get.
        json_schema_extra={"default": {}},
    )
    hardware_acceleration: HardwareAcceleration = Field(
        default=HardwareAcceleration.NONE,
        description=(
            "NVENC: the encoder Pod asks for one NVIDIA GPU and encodes the H.264 and HEVC renditions on "
            "it (VP9 stays in software). An encoder that finds no usable GPU falls back to the software "
            "encoders and says so in its log. None: software encoders only."
        ),
    )
    segment_duration_seconds: int = Field(
        default=4,
        description="Target HLS segment duration in seconds.",
        ge=1,
        le=30,
    )
    playlist_window: int = Field(
        default=6,
        description="Number of segments in the live (sliding) playlist.",
        ge=3,
        le=100,
    )

    @field_validator("renditions")
    @classmethod
    def _unique_rendition_names(cls, renditions: list[Rendition]) -> list[Rendition]:
        names = [rendition.name for rendition in renditions]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise PydanticCustomError(
                "onair_rule", "rendition names must be unique; duplicated: {names}", {"names": ", ".join(duplicates)}
            )
        return renditions


# --- Status ------------------------------------------------------------------------------------


class Condition(StatusModel):
    """One aspect of the job's state, as metav1.Condition."""

    type: str = Field(
        description=(
            "Condition type: Ready, TemplateResolved, Scheduled, EncoderRunning, InputConnected, "
            "StorageAvailable, SourceAvailable."
        ),
        min_length=1,
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="CamelCase reason for the last transition, e.g. PublisherConnected.",
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
    )
    message: str = Field(default="", description="Human-readable details.", max_length=MAX_CONDITION_MESSAGE_LENGTH)
    last_transition_time: AwareDatetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        default=None,
        description="metadata.generation the condition was computed from.",
        ge=0,
    )


class _Timing(StatusModel):
    time: AwareDatetime = Field(description="When it happened.")
    phase: str = Field(description="Phase entered.", max_length=32)
    reason: str | None = Field(
        default=None,
        description="What the job was doing, e.g. PublisherConnected.",
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
    )
    comment: str | None = Field(default=None, description="Human-readable details.", max_length=MAX_DESCRIPTION_LENGTH)


class LiveJobTiming(_Timing):
    """One entry of the phase history."""

    phase: LiveJobPhase = Field(description="Phase entered.")


class RecordJobTiming(_Timing):
    """One entry of the phase history."""

    phase: RecordJobPhase = Field(description="Phase entered.")


class PendingWebhook(StatusModel):
    """A webhook the job's phase changes owe: written with the phase, removed once delivered or given up,
    so an operator that stops first (a crash, a rolling update) leaves it to the next one."""

    id: str = Field(description="The event's id, the same in every delivery of it (receivers deduplicate by it).",
                    min_length=1, max_length=64)
    event: str = Field(description="The event, e.g. live.", min_length=1, max_length=32)
    phase: str = Field(description="The phase that caused it.", max_length=32)
    message: str | None = Field(default=None, description="The job's message then.", max_length=MAX_MESSAGE_LENGTH)
    created_at: AwareDatetime = Field(description="When the phase changed.")


_PENDING_WEBHOOKS_DESCRIPTION = (
    f"Webhooks not yet delivered (nor given up), oldest first; at most {MAX_PENDING_WEBHOOKS}, the oldest dropped. "
    "Delivered at least once: an operator that stops before it is done leaves them to the next.")


class RenditionOutput(StatusModel):
    """Progress of one rendition of a running LiveJob."""

    name: str = Field(description="Rendition name from the JobTemplate.", min_length=1, max_length=32)
    status: OutputStatus = Field(description="Pending, Running, Stalled, Completed or Failed.")
    progress: float | None = Field(
        default=None,
        description="0 to 1 when the job has a known end (scheduled finish), else unset.",
        ge=0,
        le=1,
    )
    segments_written: int = Field(default=0, description="Segments uploaded so far.", ge=0)
    last_segment_time: AwareDatetime | None = Field(default=None, description="When the last segment was uploaded.")
    encoder_id: str | None = Field(
        default=None,
        description="Encoder Pod producing this rendition.",
        max_length=MAX_NAME_LENGTH,
    )


class EncoderHealth(StatusModel):
    """How the running encoder keeps up, from its reports: frames it dropped and how fast segments reach
    the bucket. Unset until the encoder has reported."""

    dropped_frames: int = Field(default=0, description="Frames the encoder dropped (it could not keep up).", ge=0)
    last_upload_latency_ms: float | None = Field(
        default=None, ge=0,
        description="Last segment: from closed on the encoder's disk to its playlist readable in the bucket.")
    upload_latency_p99_ms: float | None = Field(
        default=None, ge=0, description="99th percentile of that latency over the encoder's recent segments.")
    upload_failures: int = Field(default=0, description="Failed uploads, each retried.", ge=0)
    spool_bytes: int = Field(default=0, description="Segment bytes waiting on local disk for the bucket.", ge=0)


class InputStatistics(StatusModel):
    """Properties of the incoming stream, as the REST API reports them. Unset until media arrives."""

    width: int | None = Field(default=None, description="Video width in pixels.", ge=0)
    height: int | None = Field(default=None, description="Video height in pixels.", ge=0)
    framerate: float | None = Field(default=None, description="Frames per second.", ge=0)
    video_data_rate: int | None = Field(default=None, description="Video bitrate in kbit/s.", ge=0)
    video_codec_id: int | None = Field(
        default=None,
        description="FLV video codec id (7 H.264, 12 HEVC), also for SRT and HLS inputs.",
        ge=0,
    )
    audio_data_rate: int | None = Field(default=None, description="Audio bitrate in kbit/s.", ge=0)
    audio_sample_rate: int | None = Field(default=None, description="Audio sample rate in Hz.", ge=0)
    audio_sample_size: int | None = Field(default=None, description="Bits per audio sample.", ge=0)
    audio_codec_id: int | None = Field(
        default=None,
        description="FLV audio codec id (10 AAC, 2 MP3), also for SRT and HLS inputs.",
        ge=0,
    )
    audio_channels: int | None = Field(default=None, description="Number of audio channels.", ge=0)
    stereo: bool | None = Field(default=None, description="Whether the audio is stereo.")
    encoder: str | None = Field(
        default=None, description="Software the publisher reports, e.g. obs-output.", max_length=256
    )


class LiveJobUrls(StatusModel):
    """Where to publish to and play from. None of these URLs contains the stream key or passphrase."""

    ingest: str | None = Field(
        default=None,
        description="Where the broadcaster publishes to (RTMP or SRT), or the pulled HLS URL.",
        max_length=MAX_URL_LENGTH,
    )
    rtmp_server: str | None = Field(
        default=None,
        description="RTMP server URL, e.g. rtmp://host:1935/live/; append the stream key.",
        max_length=MAX_URL_LENGTH,
    )
    srt_url: str | None = Field(
        default=None,
        description="SRT URL up to the stream key: srt://host:9000?passphrase= (append the stream key), or, "
                    "when the job names its own passphrase, srt://host:9000?streamid= (append the stream key "
                    "and &passphrase= with that passphrase).",
        max_length=MAX_URL_LENGTH,
    )
    web_socket_connection: str | None = Field(
        default=None,
        description="Live preview: a WebSocket of the ingest copied into MPEG-TS (no re-encode), for a player "
                    "such as mpegts.js. Its key lets the holder watch, nothing more.",
        max_length=MAX_URL_LENGTH,
    )
    cdn: str | None = Field(default=None, description="Master playlist URL through the CDN.", max_length=MAX_URL_LENGTH)
    storage_master_file: str | None = Field(
        default=None,
        description="Master playlist URL in the bucket.",
        max_length=MAX_URL_LENGTH,
    )
    output_manifests: dict[str, Annotated[str, Field(max_length=MAX_URL_LENGTH)]] = Field(
        default_factory=dict,
        description="Playlist URL per rendition name (e.g. 720p).",
        max_length=MAX_RENDITIONS,
    )


class LiveJobStatus(StatusModel):
    """Observed state of a LiveJob, written by the operator."""

    phase: LiveJobPhase | None = Field(default=None, description="Lifecycle phase.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions, one per type; Ready summarises them.",
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None,
        description="metadata.generation this status describes.",
        ge=0,
    )
    message: str | None = Field(default=None, description="Human-readable summary.", max_length=MAX_MESSAGE_LENGTH)
    timings: list[LiveJobTiming] = Field(
        default_factory=list,
        description=f"Phase history, oldest first; the newest {MAX_TIMINGS} entries are kept.",
        max_length=MAX_TIMINGS,
    )
    outputs: list[RenditionOutput] = Field(
        default_factory=list,
        description="Progress per rendition (and pipeline).",
        max_length=MAX_OUTPUTS,
    )
    statistics: InputStatistics | None = Field(default=None, description="Properties of the incoming stream.")
    encoder: EncoderHealth | None = Field(default=None, description="How the running encoder keeps up.")
    urls: LiveJobUrls | None = Field(default=None, description="Where to publish to and play from.")
    resource_name: str | None = Field(
        default=None,
        description="Name of the encoder Pod.",
        max_length=MAX_NAME_LENGTH,
    )
    service_name: str | None = Field(
        default=None,
        description="Name of the ingest Service; absent while the API server refuses it (a quota; see the job's "
                    "FailedCreate Events).",
        max_length=MAX_NAME_LENGTH,
    )
    stream_key_secret: str | None = Field(
        default=None,
        description="Name of the Secret holding the stream key (key streamKey); absent while the API server "
                    "refuses it.",
        max_length=MAX_NAME_LENGTH,
    )
    restarts: int = Field(
        default=0, ge=0,
        description="Encoder Pods that died and were replaced over the job's lifetime (never reset; see "
                    "consecutiveFailures for the crash-loop count).",
    )
    consecutive_failures: int = Field(
        default=0, ge=0,
        description="Encoder deaths in a row. An encoder that ran for the operator's healthy-run time "
                    "(ONAIR_HEALTHY_RUN_SECONDS, 10 minutes by default) before it died starts a new streak at 1; "
                    "the restart back-off grows with this count, and a death after maxRestarts in a row "
                    "(ONAIR_MAX_RESTARTS, 5 by default) fails the job. A spec change of a Failed job resets it.",
    )
    attempt: int = Field(default=0, description="Number of the current encoder Pod (its name derives from it).", ge=0)
    last_restart_time: AwareDatetime | None = Field(
        default=None, description="When the last encoder Pod died; the next starts after a growing back-off."
    )
    playlists_left_open: bool | None = Field(
        default=None,
        description="True while no encoder has taken over the playlists of one that died (a crash, an eviction): "
                    "they have no EXT-X-ENDLIST yet. A stop or the schedule's end meanwhile has an encoder close "
                    "them: the replacement once it has read them, or one made only for that, which takes no input. "
                    "Cleared once an encoder has taken them over, or that Pod is made (once), or the job is in "
                    "neither Provisioning nor Stopping (also Failed, with the playlists left as they are).",
    )
    started_at: AwareDatetime | None = Field(default=None, description="When the job last went Live.")
    finished_at: AwareDatetime | None = Field(default=None, description="When the job became Completed or Failed.")
    pending_webhooks: list[PendingWebhook] = Field(default_factory=list, description=_PENDING_WEBHOOKS_DESCRIPTION,
                                                   max_length=MAX_PENDING_WEBHOOKS)


class RecordedFile(StatusModel):
    """One file of a recording (a playlist or an MP4), not every segment."""

    name: str = Field(description="Rendition name, or 'master' for the master playlist.", min_length=1, max_length=32)
    key: str = Field(description="Object key in the output bucket.", min_length=1, max_length=MAX_URL_LENGTH)
    url: str | None = Field(default=None, description="Playback or download URL.", max_length=MAX_URL_LENGTH)
    format: RecordingFormat = Field(description="hls or mp4.")
    size_bytes: int | None = Field(default=None, description="Size in bytes (the sum of segments for HLS).", ge=0)
    duration_seconds: float | None = Field(default=None, description="Duration in seconds.", ge=0)


class PausedRange(StatusModel):
    """A stretch during which a recording that follows its LiveJob was paused: the segments wholly
    inside it are left out of the recording."""

    start: AwareDatetime = Field(description="When the recording was paused.")
    end: AwareDatetime | None = Field(default=None, description="When it was resumed; unset while it is paused.")


class RecordJobStatus(StatusModel):
    """Observed state of a RecordJob, written by the operator."""

    phase: RecordJobPhase | None = Field(default=None, description="Lifecycle phase.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions, one per type; Ready summarises them.",
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None,
        description="metadata.generation this status describes.",
        ge=0,
    )
    progress: float | None = Field(
        default=None,
        description="0 to 1; known when the recording has an end (timeRange.end), else unset until Completed.",
        ge=0,
        le=1,
    )
    recorded_seconds: float | None = Field(default=None, description="Seconds recorded so far.", ge=0)
    retries: int = Field(
        default=0, ge=0,
        description="Times the recorder was restarted (a crash, an eviction, its node lost, its Pod deleted "
                    "while it recorded), over the job's life. A recorder Pod that cannot start (image, Secret, "
                    "no node) fails the job after ONAIR_PROVISIONING_TIMEOUT_SECONDS.",
    )
    consecutive_failures: int = Field(
        default=0, ge=0,
        description="Recorder deaths in a row. A recorder that ran for the operator's healthy-run time "
                    "(ONAIR_HEALTHY_RUN_SECONDS) before it died starts a new streak at 1, so a long recording is "
                    "continued however often it is evicted; the restart back-off grows with this count, and a "
                    "death after maxRestarts in a row (ONAIR_MAX_RESTARTS) fails the job.",
    )
    attempt: int = Field(
        default=0, ge=0,
        description="Number of the current recorder Pod (its name derives from it): a restart, a spec change "
                    "after a failure and a new start time each make a new one.",
    )
    files: list[RecordedFile] = Field(
        default_factory=list,
        description="The recording's playlists or MP4 files.",
        max_length=MAX_RECORDED_FILES,
    )
    paused_ranges: list[PausedRange] = Field(
        default_factory=list,
        description="The stretches the recording was paused, as its recorder reports them (or, paused or "
                    "resumed while it had no recorder, as the operator dated them). A recording of a "
                    "streamUrl leaves a pause out as it records; one that follows its LiveJob (source.liveJobRef) "
                    "leaves out the segments wholly inside them when it cuts, and a new recorder Pod continues "
                    "from them.",
        max_length=MAX_PAUSED_RANGES,
    )
    playback_url: str | None = Field(
        default=None,
        description="URL of the recording's master playlist or MP4.",
        max_length=MAX_URL_LENGTH,
    )
    error_message: str | None = Field(default=None, description="Why the job failed.", max_length=MAX_MESSAGE_LENGTH)
    resource_name: str | None = Field(
        default=None,
        description="Name of the recorder Pod.",
        max_length=MAX_NAME_LENGTH,
    )
    timings: list[RecordJobTiming] = Field(
        default_factory=list,
        description=f"Phase history, oldest first; the newest {MAX_TIMINGS} entries are kept.",
        max_length=MAX_TIMINGS,
    )
    started_at: AwareDatetime | None = Field(default=None, description="When recording started.")
    finished_at: AwareDatetime | None = Field(default=None, description="When the job became Completed or Failed.")
    pending_webhooks: list[PendingWebhook] = Field(default_factory=list, description=_PENDING_WEBHOOKS_DESCRIPTION,
                                                   max_length=MAX_PENDING_WEBHOOKS)


# --- Whole objects -----------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata onair reads. The API server owns and validates
    metadata, so other fields (managedFields, ownerReferences...) are kept as they are."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel, serialize_by_alias=True)

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: AwareDatetime | None = None
    deletion_timestamp: AwareDatetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class ResourceNames:
    """The names of a custom resource, as in the CRD's spec.names."""

    kind: str
    plural: str
    singular: str
    short_name: str

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


class LiveJob(OnairModel):
    """LiveJob is one live channel: an ingest endpoint (RTMP, SRT) or an HLS source, encoded into the
    renditions of a JobTemplate and written as HLS to a bucket. The operator runs one encoder Pod,
    an ingest Service and a stream-key Secret per job and reports progress in status."""

    names: ClassVar[ResourceNames] = ResourceNames("LiveJob", "livejobs", "livejob", "lj")
    model_config = ConfigDict(json_schema_extra=cel_rules(*LIVE_JOB_FROZEN_WHILE_RUNNING))

    api_version: ApiVersion = Field(default=API_VERSION, description="onair.dev/v1alpha1")
    kind: Literal["LiveJob"] = Field(default="LiveJob", description="LiveJob")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: LiveJobSpec = Field(description="Desired state: input, destination, template, schedule.")
    status: LiveJobStatus | None = Field(default=None, description="Observed state, written by the operator.")


class RecordJob(OnairModel):
    """RecordJob records a live stream, or cuts a clip from a LiveJob's stored segments, into a
    bucket as HLS or MP4."""

    names: ClassVar[ResourceNames] = ResourceNames("RecordJob", "recordjobs", "recordjob", "rj")
    model_config = ConfigDict(json_schema_extra=cel_rules(RECORD_TEMPLATE_FROZEN_WHILE_RECORDING))

    api_version: ApiVersion = Field(default=API_VERSION, description="onair.dev/v1alpha1")
    kind: Literal["RecordJob"] = Field(default="RecordJob", description="RecordJob")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: RecordJobSpec = Field(description="Desired state: source, time range, output.")
    status: RecordJobStatus | None = Field(default=None, description="Observed state, written by the operator.")


class JobTemplate(OnairModel):
    """JobTemplate is an encoding ladder (renditions, audio, segmenting) that LiveJobs and RecordJobs
    select by spec.id. The operator looks a template up in the job's namespace first, then in the
    operator's own namespace, so platform-wide templates live next to the operator."""

    names: ClassVar[ResourceNames] = ResourceNames("JobTemplate", "jobtemplates", "jobtemplate", "jt")

    api_version: ApiVersion = Field(default=API_VERSION, description="onair.dev/v1alpha1")
    kind: Literal["JobTemplate"] = Field(default="JobTemplate", description="JobTemplate")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: JobTemplateSpec = Field(description="The encoding ladder.")


Resource = LiveJob | RecordJob | JobTemplate
RESOURCE_MODELS: tuple[type[LiveJob], type[RecordJob], type[JobTemplate]] = (LiveJob, RecordJob, JobTemplate)
_MODEL_BY_KIND: Mapping[str, type[Resource]] = {model.names.kind: model for model in RESOURCE_MODELS}


class _ResourceHeader(BaseModel):
    """apiVersion and kind, checked before the kind's own model is chosen."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel)

    api_version: ApiVersion
    kind: Literal["LiveJob", "RecordJob", "JobTemplate"]


def parse_resource(obj: Mapping[str, Any]) -> Resource:
    """Validate a whole object (apiVersion, kind, metadata, spec, status) as the model of its kind.

    Raises pydantic.ValidationError; each error's `loc` is the JSON path of the field, e.g.
    ("spec", "input", "url") - `error_path` and `describe_errors` turn it into text.
    """
    header = _ResourceHeader.model_validate(obj)
    return _MODEL_BY_KIND[header.kind].model_validate(obj)


def error_path(loc: Sequence[int | str]) -> str:
    """("spec", "renditions", 2, "width") -> "spec.renditions[2].width"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def describe_errors(error: ValidationError) -> list[str]:
    """One "path: message" line per error, e.g. for the REST gateway's `errors` array."""
    return [f"{error_path(detail['loc'])}: {detail['msg']}" for detail in error.errors()]


def update_violations(old: Resource, new: Resource) -> list[str]:
    """Messages of the transition rules (CEL rules on oldSelf) that changing `old` into `new`
    breaks, so the gateway can refuse an update with the API server's own words before sending it."""
    messages: list[str] = []
    if isinstance(old, LiveJob) and isinstance(new, LiveJob):
        if old.spec.input.server_type != new.spec.input.server_type:
            messages.append(SERVER_TYPE_IMMUTABLE.message)
        if old.status is not None and old.status.phase in LIVE_JOB_ENCODER_PHASES:
            old_spec, new_spec = (job.spec.model_dump(mode="json", by_alias=True) for job in (old, new))
            messages.extend(rule.message for field, rule in zip(LIVE_JOB_FIELDS_FROZEN_WHILE_RUNNING,
                                                                LIVE_JOB_FROZEN_WHILE_RUNNING, strict=True)
                            if old_spec.get(field) != new_spec.get(field))
    elif isinstance(old, RecordJob) and isinstance(new, RecordJob):
        if old.spec.source != new.spec.source:
            messages.append(SOURCE_IMMUTABLE.message)
        if old.spec.output != new.spec.output:
            messages.append(OUTPUT_IMMUTABLE.message)
        recording = old.status is not None and old.status.phase in _RECORDING_PHASES
        if recording and old.spec.job_template_id != new.spec.job_template_id:
            messages.append(RECORD_TEMPLATE_FROZEN_WHILE_RECORDING.message)
    elif isinstance(old, JobTemplate) and isinstance(new, JobTemplate):
        if old.spec.id != new.spec.id:
            messages.append(TEMPLATE_ID_IMMUTABLE.message)
    else:
        raise TypeError(f"cannot compare a {type(old).__name__} with a {type(new).__name__}")
    return messages


# --- Status helpers for the operator -----------------------------------------------------------


def find_condition(conditions: Sequence[Condition], condition_type: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == condition_type), None)


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """Return `conditions` with `new` in place of the condition of the same type (or appended),
    keeping the old lastTransitionTime when the status did not change, as apimachinery's
    meta.SetStatusCondition does. The order stays stable so status patches stay small."""
    old = find_condition(conditions, new.type)
    if old is None:
        return [*conditions, new]
    if old.status == new.status:
        new = new.model_copy(update={"last_transition_time": old.last_transition_time})
    return [new if condition.type == new.type else condition for condition in conditions]


TimingT = TypeVar("TimingT", LiveJobTiming, RecordJobTiming)


def append_timing(timings: Sequence[TimingT], entry: TimingT) -> list[TimingT]:
    """Append to a phase history, dropping the oldest entries beyond MAX_TIMINGS (the CRD refuses a
    longer list)."""
    extended = list(timings)
    extended.append(entry)
    return extended[-MAX_TIMINGS:]
