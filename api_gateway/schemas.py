"""REST request and response models (camelCase JSON), reusing the CR spec models where the shapes
match. The OpenAPI document is generated from these and the route table (onair.api_gateway.openapi).

Requests are strict (no "5" for 5) and refuse unknown fields; responses document what the handlers
build in onair.api_gateway.mapping (the unit tests validate one against the other).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from onair.models import (
    MAX_DESCRIPTION_LENGTH,
    MAX_URL_LENGTH,
    InputStatistics,
    JobTemplateSpec,
    RecordJobSpec,
    RecordOutput,
    RecordSource,
    TimeRange,
    UtcTime,
)

GUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SERVER_TYPES = ("RTMP", "SRT", "HLS")  # serverType ids 0, 1, 2
INPUT_CLASSES = ("Single", "Standard")  # inputClass ids 0, 1


class RestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel,
                              serialize_by_alias=True, strict=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, alias_generator=to_camel, serialize_by_alias=True)


# --- envelope ----------------------------------------------------------------------------------

class ResultInfo(ResponseModel):
    total_count: int = Field(description="How many items match the query.")
    page_index: int = Field(description="Page number, from 1 (0 with keyset paging).")
    page_size: int = Field(description="Items per page.")
    total_pages: int = Field(description="Number of pages.")
    has_next_page: bool
    has_previous_page: bool
    next_token: str | None = Field(
        default=None, description="Set when more results follow this page (in either paging mode): pass it as "
                                  "start_token, with page_size, for the results after it.")


class ErrorEnvelope(ResponseModel):
    """Every error: success false, the reasons in errors (\"field: message\")."""

    success: Literal[False]
    errors: list[str]
    messages: list[str]
    result: None = None
    result_info: ResultInfo | None = None


# --- auth --------------------------------------------------------------------------------------

class LoginRequest(RestModel):
    api_key: str = Field(description="An API key issued by the platform team.", min_length=1, max_length=512)


class LoginResult(ResponseModel):
    token: str = Field(description="JWT (HS256) to send as Authorization: Bearer <token>.")
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the token expires.")
    role: Literal["read", "write", "admin"]
    projects: list[str] = Field(description="Project ids the token may use; \"*\" is every project.")


class WebhookSigningKey(ResponseModel):
    signing_key: str = Field(description="This project's key: the HMAC-SHA256 key of its webhooks' signatures.")
    header: str = Field(description="The request header that carries the signature.")
    scheme: str = Field(description="How the header is made and checked.")


# --- live jobs ---------------------------------------------------------------------------------

def _read_numbered_choice(names: tuple[str, ...]) -> Callable[[Any], str]:
    """A choice the contract numbers (0 RTMP, 1 SRT, ...): its id or its name in any case, read as the
    name; anything else is refused with the choices, in one line."""
    by_name = {name.lower(): name for name in names}
    choices = ", ".join(f"{number} ({name})" for number, name in enumerate(names))

    def read(value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
            return names[value]
        if isinstance(value, str) and value.lower() in by_name:
            return by_name[value.lower()]
        raise PydanticCustomError("numbered_choice", "must be {choices}, or the name", {"choices": choices})
    return read


def _numbered_choice_schema(names: tuple[str, ...]) -> dict[str, Any]:
    return {"anyOf": [{"type": "integer", "minimum": 0, "maximum": len(names) - 1},
                      {"type": "string", "enum": list(names)}]}


ServerTypeIn = Annotated[str, BeforeValidator(_read_numbered_choice(SERVER_TYPES)),
                         WithJsonSchema(_numbered_choice_schema(SERVER_TYPES))]
InputClassIn = Annotated[str, BeforeValidator(_read_numbered_choice(INPUT_CLASSES)),
                         WithJsonSchema(_numbered_choice_schema(INPUT_CLASSES))]


class LiveJobCreateInput(RestModel):
    file_path: str | None = Field(default=None, description="Key prefix in the bucket for the HLS output.",
                                  max_length=MAX_DESCRIPTION_LENGTH)
    server_type: ServerTypeIn | None = Field(default=None, description="0 RTMP, 1 SRT, 2 HLS (or the name).")
    input_class: InputClassIn | None = Field(default=None, description="0 Single, 1 Standard (or the name).")
    callback_url: str | None = Field(default=None, description="Webhook URL for phase changes.",
                                     max_length=MAX_URL_LENGTH)
    url: str | None = Field(default=None, description="HLS only: the playlist to pull.", max_length=MAX_URL_LENGTH)


class LiveJobCreate(RestModel):
    """POST body of a live job. input's fields may also be given at the top level, as the contract's
    parameter table lists them."""

    job_template_id: int = Field(description="spec.id of the JobTemplate.", ge=0, le=2**31 - 1)
    destination: str | None = Field(
        default=None, description="The destination in the bucket where the chunk files are saved: the key "
                                  "prefix (spec.destination.path), e.g. live/news; the same as filePath. "
                                  "Default: the job name.",
        max_length=MAX_DESCRIPTION_LENGTH)
    bucket: str | None = Field(default=None, description="Bucket name (spec.destination.bucket); required.",
                               max_length=63)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)
    cdn_distribution: bool | None = Field(default=None, description="Publish playback URLs through the CDN.")
    input: LiveJobCreateInput | None = None
    file_path: str | None = Field(default=None, description="Key prefix in the bucket, as destination "
                                                            "(default: the job name).",
                                  max_length=MAX_DESCRIPTION_LENGTH)
    server_type: ServerTypeIn | None = Field(default=None, description="0 RTMP, 1 SRT, 2 HLS (or the name).")
    input_class: InputClassIn | None = Field(default=None, description="0 Single, 1 Standard (or the name).")
    callback_url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    url: str | None = Field(default=None, description="HLS only: the playlist to pull.", max_length=MAX_URL_LENGTH)
    endpoint: str | None = Field(default=None, description="S3 endpoint; default: the platform's. Another one at a "
                                 "private address is refused unless the platform allows its network.",
                                 max_length=MAX_URL_LENGTH)
    cdn_base_url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    start_date_time: UtcTime | None = Field(default=None, description="Scheduled start.")
    end_date_time: UtcTime | None = Field(default=None, description="Scheduled finish.")
    online: bool | None = Field(default=None, description="false creates the job switched off.")
    recording: bool | None = Field(default=None, description="Keep every segment for live cuts.")
    dvr_window_seconds: int | None = Field(default=None, ge=0, le=86400)


class LiveJobSummary(ResponseModel):
    id: int = Field(description="Integer id, unique in the project.")
    name: str = Field(description="The job's GUID (its Kubernetes name).")
    key: str | None = Field(description="Stream key (a GUID); null until known.")
    status: str | None = Field(description="Phase: Pending, Provisioning, WaitingForInput, Live, ...")
    description: str | None
    file_path: str | None
    insert_date: datetime | None
    start_date_time: datetime | None = Field(description="The scheduled start; for a job with no schedule, when it "
                                                         "last went Live (null before).")
    end_date_time: datetime | None = Field(description="The scheduled finish; for a job with no schedule, when it "
                                                       "went Offline, Completed or Failed (null while it runs).")
    modified_date: datetime | None = None


class Option(ResponseModel):
    id: int
    value: str
    enabled: bool


class LiveJobDetailInput(ResponseModel):
    file_path: str | None
    server_type: int
    server_type_options: list[Option]
    input_class: int
    input_class_options: list[Option]
    callback_url: str | None
    url: str | None = None


class Statistics(InputStatistics):
    framerate: int | None = Field(
        default=None, ge=0, description="Frames per second, rounded: an integer, as the reference has it "
                                        "(the LiveJob's status.statistics keeps the exact rate, e.g. 29.97).")


class LiveJobDetail(ResponseModel):
    id: int
    name: str
    key: str | None
    destination: str | None = Field(description="Key prefix in the bucket where the chunk files are saved.")
    description: str | None
    project_id: str
    status: str | None
    start_date_time: datetime | None = Field(description="The scheduled start; for a job with no schedule, when it "
                                                         "last went Live (null before).")
    end_date_time: datetime | None = Field(description="The scheduled finish; for a job with no schedule, when it "
                                                       "went Offline, Completed or Failed (null while it runs).")
    job_template_id: int
    argo_resource_name: str | None
    resource_name: str | None
    bucket: str | None = Field(description="Bucket name.")
    cdn_distribution: bool
    rtmp_server: str | None
    srt_url: str | None = Field(default=None, description="SRT jobs: the URL up to the stream key: "
                                "srt://host:9000?passphrase= (append `key`), or, for a job with its own "
                                "passphrase, srt://host:9000?streamid= (append `key`, and &passphrase= with it).")
    web_socket_connection: str | None
    cdn: str | None
    storage_master_file: str | None
    output_manifests: dict[str, str]
    input: LiveJobDetailInput
    statistics: Statistics | None
    tags: str = Field(description="Pricing tags: what the job is billed by, comma-separated: its input class "
                                  "(standard transcodes a ladder, single passes the source through), server type, "
                                  "jobTemplateId, and cdn when it is distributed through the CDN.")
    online: bool
    insert_date: datetime | None = None
    message: str | None = None


class LiveJobControl(RestModel):
    online: bool = Field(description="true starts the encoder, false stops it.")
    start_date_time: UtcTime | None = Field(
        default=None, description="Live cut start; with finishDateTime (both or neither).")
    finish_date_time: UtcTime | None = Field(
        default=None, description="Live cut end; may be in the future (the clip waits for the stream to reach it). "
                                  "The channel's schedule is never changed by a cut.")


class LiveJobControlResult(ResponseModel):
    online: bool
    play_back_path_u_r_l: str | None = Field(alias="playBackPathURL")
    record_job_name: str | None = Field(default=None, description="The clip's RecordJob, for a live cut.")
    record_job_id: int | None = None


class LiveJobOutput(ResponseModel):
    live_job_id: int
    output_id: int
    progress: int = Field(description="Percent, 0 to 100.")
    status: int = Field(description="0 Pending, 1 Running, 2 Stalled, 3 Completed, 4 Failed.")
    lock_key: str
    counter: int = Field(description="Segments written.")
    encoder_id: int = Field(description="Encoder attempt number.")
    name: str | None = None
    status_text: str | None = None


class LiveJobTimingOut(ResponseModel):
    status: str
    child_status: str | None
    start_date_time: datetime
    message_comment: str | None


# --- record jobs -------------------------------------------------------------------------------

class RecordJobCreate(RecordJobSpec):
    """POST body of a record job: the RecordJob spec, plus an optional display name."""

    model_config = ConfigDict(strict=True)

    name: str | None = Field(default=None, description="Display name (searchable).", max_length=253)

    @field_validator("source", mode="before")
    @classmethod
    def _guid_in_any_case(cls, source: Any) -> Any:
        """A liveJobRef GUID matches in any case, as the GUIDs in the paths do (job names are lower case).
        On the source alone: the rest of the body stays validated as JSON (its times as strings)."""
        if isinstance(source, dict):
            reference = source.get("liveJobRef")
            if isinstance(reference, str) and re.fullmatch(GUID_PATTERN, reference):
                return {**source, "liveJobRef": reference.lower()}
        return source


class StreamInput(ResponseModel):
    type: str
    url: str | None
    live_job_name: str | None = None


class RecordJobOut(ResponseModel):
    id: int
    job_id: str = Field(description="The job's GUID (its Kubernetes name).")
    name: str | None
    status: str = Field(description="initial, started, paused, completed or failed.")
    create_time: datetime | None
    modified_time: datetime | None = None
    stream_input: StreamInput
    record_output: RecordOutput
    time_range: TimeRange | None
    template_id: int | None
    template_name: str | None = None
    notify_url: str | None
    paused: bool
    progress: float | None = None
    retries: int = 0
    playback_url: str | None = None
    files: list[dict[str, Any]] = Field(default_factory=list)
    error_message: str | None = None


# --- templates & operations --------------------------------------------------------------------

class JobTemplateOut(JobTemplateSpec):
    shared: bool = Field(description="true: a platform-wide template from the operator's namespace.")


class OperationsModel(BaseModel):
    """/streamers and /health answer in Flussonic Watcher's own field names (snake_case, as its admin
    API has them), so that what monitors its streamers and health reads ours too."""


class EncoderStats(OperationsModel):
    namespace: str
    project_id: str | None
    job: str
    job_phase: str | None
    pod_phase: str | None
    node: str | None
    pod_ip: str | None
    started_at: int | None = Field(description="When the Pod started, Unix seconds (as Flussonic's started_at).")
    restarts: int
    input_kbit: int = Field(description="The input's video and audio data rate (kbit/s), as the encoder measures it.")
    outputs: int


class NodeStats(OperationsModel):
    ready: bool
    capacity: dict[str, str]
    allocatable: dict[str, str]
    encoders: int = Field(description="Encoder and recorder Pods on the node.")
    cpu_usage: int | None = Field(description="Percent of the node's allocatable CPU in use (metrics.k8s.io, when "
                                              "the platform has it), as Flussonic's cpu_usage.")
    memory_usage: int | None = Field(description="Percent of the node's allocatable memory in use, likewise.")
    usage: dict[str, str] = Field(default_factory=dict, description="The metrics.k8s.io usage as it is given "
                                                                    "(quantities: cpu, memory).")
    kubelet_version: str | None


class Streamer(OperationsModel):
    role: Literal["node", "encoder", "recorder"]
    hostname: str
    labels: dict[str, str] = Field(default_factory=dict)
    stats: EncoderStats | NodeStats


class StreamersResult(OperationsModel):
    estimated_count: int = Field(description="How many rows match the query.")
    next: str | None = Field(description="Pass as cursor for the page after this one; null: none after it.")
    prev: str | None = Field(description="Pass as cursor for the page before this one; null: this is the first.")
    streamers: list[Streamer]


class StateTotals(OperationsModel):
    operational: int
    degradated: int
    partial_outage: int
    outage: int
    disabled: int
    total: int


class Health(OperationsModel):
    version: int = Field(description="The gateway's version as an integer, as Flussonic's /health has one (in a "
                                     "numbering of its own): major * 1000000 + minor * 1000 + patch (0.1.0 is 1000).")
    version_name: str = Field(description="The same version as text, e.g. 0.1.0.")
    server_id: str
    collected_at: int
    ready: bool
    caches: dict[str, bool]
    stream_metrics_total: StateTotals
    record_metrics_total: StateTotals
    streamer_metrics_total: StateTotals


__all__ = ["RecordOutput", "RecordSource", "TimeRange"]
