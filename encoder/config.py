"""The encoder's configuration: what the operator passes in the environment, validated with the
shared pydantic models, and turned into the plan the pipeline runs (ingest, renditions, outputs).

Anything wrong here can never work however often the Pod restarts, so it raises ConfigError and the
process exits 2 (the operator marks the job Failed without retrying).
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, IPvAnyNetwork, ValidationError
from pydantic.alias_generators import to_camel

from onair.addresses import AddressPolicy, literal_address, pull_refusal, storage_refusal
from onair.models import (
    PASSTHROUGH_PLAYLIST_WINDOW,
    PASSTHROUGH_RENDITION,
    PASSTHROUGH_SEGMENT_SECONDS,
    AudioSettings,
    JobTemplateSpec,
    LiveJobSpec,
    PausedRange,
    RecordingFormat,
    RecordJobSpec,
    Rendition,
    ServerType,
    StorageType,
)
from onair.urls import plain_origin

# The Pod's grace period when the operator does not say (ONAIR_TERMINATION_GRACE_SECONDS), and the least
# it may say: a stop's uploads need some of it, and the process 5 s to exit.
DEFAULT_TERMINATION_GRACE_SECONDS = 30
MIN_TERMINATION_GRACE_SECONDS = 10


class ConfigError(Exception):
    """The job's configuration can never work (exit code 2)."""


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class StorageConfig(_Camel):
    endpoint: str
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    # "virtual" (bucket.endpoint-host) for stores that refuse path-style requests, such as Alibaba OSS.
    addressing_style: Literal["path", "virtual"] = "path"
    # The job names this endpoint (it is not the installation's own): it may reach only public addresses
    # and JobEnvelope.storage_allowed_networks.
    named_by_job: bool = False


class ClipConfig(_Camel):
    source_prefix: str
    # The LiveJob's bucket, on the same store as the output (None: the output's bucket). A clip may be
    # written to another bucket than the one its LiveJob streams to.
    source_bucket: str | None = None
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None


class JobEnvelope(_Camel):
    """ONAIR_JOB_CONFIG as the operator writes it."""

    kind: Literal["LiveJob", "RecordJob"]
    namespace: str
    name: str
    attempt: int = 0
    spec: dict[str, Any]
    template: dict[str, Any] | None = None
    storage: StorageConfig
    clip: ClipConfig | None = None
    paused_ranges: list[PausedRange] = []  # a RecordJob's, as its earlier recorder Pods reported them
    started_at: AwareDatetime | None = None  # when a RecordJob's first recorder was made
    # An encoder made only to close the playlists a dead one left open (a LiveJob stopped or over before
    # its replacement came up): it reads them, writes EXT-X-ENDLIST and exits, taking no input.
    finish_only: bool = False
    # Networks besides the public Internet a pulled source may be fetched from (the installation's own
    # origins): see pullguard.py.
    pull_allowed_networks: list[IPvAnyNetwork] = []
    # Networks besides the public Internet an S3 endpoint the job names may be at (upload.S3Store).
    storage_allowed_networks: list[IPvAnyNetwork] = []


class IngestKind(enum.StrEnum):
    RTMP_LISTEN = "rtmp-listen"  # publishers push to our nginx-rtmp front
    SRT_LISTEN = "srt-listen"  # publishers push to our SRT listener (srt.py), which checks the streamid
    PULL = "pull"  # we pull a URL (HLS, or an rtmp/srt URL for a RecordJob)
    STORED = "stored"  # a RecordJob cutting from a LiveJob's stored segments


@dataclass(frozen=True)
class Ingest:
    kind: IngestKind
    url: str | None = None  # the pulled URL


@dataclass(frozen=True)
class Outputs:
    """What the output keeps and how playlists are finished."""

    playlist_window: int
    keep_all_segments: bool  # recording, RecordJob: never delete, write the event playlist
    dvr_window_seconds: int
    event_playlist: bool  # write <rendition>/event.m3u8 naming every segment (EVENT, then VOD)
    final_format: RecordingFormat = RecordingFormat.HLS
    pausable: bool = False
    # A video-library asset (RecordJob output type vod): the master playlist, its entry point, is
    # written only once the recording is complete, so a library never picks up a half-made asset.
    master_at_completion: bool = False


@dataclass(frozen=True)
class JobConfig:
    kind: Literal["LiveJob", "RecordJob"]
    namespace: str
    name: str
    attempt: int
    ingest: Ingest
    template: JobTemplateSpec | None  # None: pass the source through (remux, no transcode)
    storage: StorageConfig
    outputs: Outputs
    clip: ClipConfig | None
    stream_key: str | None
    control_key: str | None  # the operator's bearer token for /finish, /pause, /resume; None: refuse them
    srt_passphrase: str | None
    listen_host: str
    preview_key: str | None = None  # a LiveJob's live preview (preview.py) is served only with one
    start_at: datetime | None = None  # a RecordJob's timeRange.start or a LiveJob's schedule start
    first_started_at: datetime | None = None  # a RecordJob's first recorder's start: later ones go on from it
    # The end when the Pod started; the encoder holds the current one (status.finish_at, POST /finish-at).
    # A SIGTERM after it is the end of the job: write ENDLIST.
    finish_at: datetime | None = None
    start_paused: bool = False
    finish_only: bool = False  # see JobEnvelope
    pull_policy: AddressPolicy = field(default_factory=AddressPolicy)  # see JobEnvelope.pull_allowed_networks
    storage_policy: AddressPolicy | None = None  # for an endpoint the job names (StorageConfig.named_by_job)
    paused_ranges: list[PausedRange] = field(default_factory=list)
    live_spec: LiveJobSpec | None = None
    record_spec: RecordJobSpec | None = None
    termination_grace_seconds: int = DEFAULT_TERMINATION_GRACE_SECONDS  # the Pod's: a stop must fit in it

    @property
    def passthrough(self) -> bool:
        return self.template is None

    @property
    def segment_seconds(self) -> int:
        return self.template.segment_duration_seconds if self.template else PASSTHROUGH_SEGMENT_SECONDS

    @property
    def renditions(self) -> list[Rendition]:
        return list(self.template.renditions) if self.template else []

    @property
    def rendition_names(self) -> list[str]:
        return [rendition.name for rendition in self.renditions] or [PASSTHROUGH_RENDITION]

    @property
    def audio(self) -> AudioSettings:
        return self.template.audio if self.template else AudioSettings()

    def key(self, *parts: str) -> str:
        """Object key under the job's prefix."""
        prefix = self.storage.prefix.strip("/")
        return "/".join(part for part in (prefix, *parts) if part)


def endpoint_field(kind: str) -> str:
    """Where a job of `kind` names its S3 endpoint."""
    return "spec.destination.endpoint" if kind == "LiveJob" else "spec.output.endpoint"


def refuse_unreachable(url: str, field: str, policy: AddressPolicy, refusal: Callable[[str, bool], str]) -> None:
    """A URL whose host is an address the policy refuses, or whose port is no number, can never work:
    ConfigError naming the field, with refusal(host, True). A name is checked whenever it is connected
    to (pullguard.py, upload.S3Store)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - it raises for a port that is no number, which ffmpeg would read its own way
    except ValueError as error:
        raise ConfigError(f"{field}: {error}") from error
    host = parts.hostname or ""
    address = literal_address(host)
    if address is not None and not policy.allows(address):
        raise ConfigError(f"{field}: {refusal(host, True)}")


def _ingest_for_live(spec: LiveJobSpec) -> Ingest:
    match spec.input.server_type:
        case ServerType.RTMP:
            return Ingest(IngestKind.RTMP_LISTEN)
        case ServerType.SRT:
            return Ingest(IngestKind.SRT_LISTEN)
        case ServerType.HLS:
            return Ingest(IngestKind.PULL, spec.input.url)
    raise ConfigError(f"unknown serverType {spec.input.server_type}")


def load_job_config(environ: Mapping[str, str] | None = None) -> JobConfig:
    env = os.environ if environ is None else environ
    raw = env.get("ONAIR_JOB_CONFIG")
    if not raw:
        raise ConfigError("ONAIR_JOB_CONFIG is not set")
    try:
        envelope = JobEnvelope.model_validate(json.loads(raw))
        template = JobTemplateSpec.model_validate(envelope.template) if envelope.template is not None else None
    except (ValueError, ValidationError) as error:
        raise ConfigError(f"ONAIR_JOB_CONFIG is invalid: {error}") from error
    listen_host = env.get("ONAIR_LISTEN_HOST") or "127.0.0.1"
    stream_key = env.get("ONAIR_STREAM_KEY") or None
    srt_passphrase = env.get("ONAIR_SRT_PASSPHRASE") or None
    if srt_passphrase is not None and not 10 <= len(srt_passphrase) <= 79:
        raise ConfigError("ONAIR_SRT_PASSPHRASE must be 10 to 79 characters (an SRT rule)")
    grace = env.get("ONAIR_TERMINATION_GRACE_SECONDS") or str(DEFAULT_TERMINATION_GRACE_SECONDS)
    if not (grace.isascii() and grace.isdigit()) or int(grace) < MIN_TERMINATION_GRACE_SECONDS:
        raise ConfigError(f"ONAIR_TERMINATION_GRACE_SECONDS must be whole seconds, at least "
                          f"{MIN_TERMINATION_GRACE_SECONDS} (the Pod's terminationGracePeriodSeconds), not {grace!r}")
    common: dict[str, Any] = {
        "namespace": envelope.namespace,
        "name": envelope.name,
        "attempt": envelope.attempt,
        "template": template,
        "storage": envelope.storage,
        "clip": envelope.clip,
        "stream_key": stream_key,
        "control_key": env.get("ONAIR_CONTROL_KEY") or None,
        "srt_passphrase": srt_passphrase,
        "listen_host": listen_host,
        "preview_key": env.get("ONAIR_PREVIEW_KEY") or None,
        "termination_grace_seconds": int(grace),
        "finish_only": envelope.finish_only,
        "pull_policy": AddressPolicy(tuple(envelope.pull_allowed_networks)),
        "storage_policy": AddressPolicy(tuple(envelope.storage_allowed_networks))
        if envelope.storage.named_by_job else None,
    }
    if common["storage_policy"] is not None:
        if plain_origin(envelope.storage.endpoint) is None:
            raise ConfigError(f"{endpoint_field(envelope.kind)}: not a plain http(s) URL (user information, a "
                              "backslash or a port that is no number)")
        refuse_unreachable(envelope.storage.endpoint, endpoint_field(envelope.kind), common["storage_policy"],
                           storage_refusal)
    window = template.playlist_window if template else PASSTHROUGH_PLAYLIST_WINDOW
    try:
        if envelope.kind == "LiveJob":
            live = LiveJobSpec.model_validate(envelope.spec)
            ingest = _ingest_for_live(live)
            if ingest.url is not None:
                refuse_unreachable(ingest.url, "spec.input.url", common["pull_policy"], pull_refusal)
            if ingest.kind in (IngestKind.RTMP_LISTEN, IngestKind.SRT_LISTEN) and not stream_key:
                raise ConfigError(f"ONAIR_STREAM_KEY is required for an {live.input.server_type.value} LiveJob")
            if ingest.kind == IngestKind.SRT_LISTEN and not srt_passphrase and not 10 <= len(stream_key or "") <= 79:
                raise ConfigError("ONAIR_STREAM_KEY must be 10 to 79 characters to serve as the SRT passphrase")
            outputs = Outputs(
                playlist_window=window,
                keep_all_segments=live.recording,
                dvr_window_seconds=live.dvr_window_seconds,
                event_playlist=live.recording,
            )
            schedule = live.schedule
            return JobConfig(
                kind="LiveJob",
                ingest=ingest,
                outputs=outputs,
                start_at=schedule.start_date_time if schedule else None,
                finish_at=schedule.finish_date_time if schedule else None,
                live_spec=live,
                **common,
            )
        record = RecordJobSpec.model_validate(envelope.spec)
    except ValidationError as error:
        raise ConfigError(f"spec is invalid: {error}") from error
    if record.source.stream_url:
        refuse_unreachable(record.source.stream_url, "spec.source.streamUrl", common["pull_policy"],
                           pull_refusal)
        ingest = Ingest(IngestKind.PULL, record.source.stream_url)
    else:
        if envelope.clip is None:
            raise ConfigError("a RecordJob on a liveJobRef needs `clip` (sourcePrefix, start, end)")
        ingest = Ingest(IngestKind.STORED)
    outputs = Outputs(
        playlist_window=window,
        keep_all_segments=True,
        dvr_window_seconds=0,
        event_playlist=False,
        final_format=record.output.format,
        pausable=True,
        master_at_completion=record.output.type == StorageType.VOD,
    )
    time_range = record.time_range
    return JobConfig(
        kind="RecordJob",
        ingest=ingest,
        outputs=outputs,
        start_at=time_range.start if time_range else None,
        first_started_at=envelope.started_at,
        finish_at=time_range.end if time_range else None,
        start_paused=record.paused,
        paused_ranges=envelope.paused_ranges,
        record_spec=record,
        **common,
    )
