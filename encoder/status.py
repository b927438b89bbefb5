"""What the encoder reports: the /status document the operator reads, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from onair.models import MAX_PAUSED_RANGES
from onair.processmetrics import register_process_metrics

from .ffmpeg import InputStatistics
from .upload import UploadQueue

NO_STATISTICS = InputStatistics()


class EncoderState(enum.StrEnum):
    WAITING = "waiting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"


FINAL_STATES = frozenset({EncoderState.COMPLETED, EncoderState.FAILED})  # nothing changes after these


def rfc3339(moment: datetime | None, timespec: str = "seconds") -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


@dataclass
class RenditionStatus:
    name: str
    segments_written: int = 0
    segments_skipped: int = 0  # closed but left out: recording paused, or the spool full
    last_segment_time: datetime | None = None
    # The last segment ffmpeg closed, published or left out: a paused recording still encodes.
    last_closed_time: datetime | None = None
    progress: float | None = None
    status: str = "Pending"

    def state(self, connected: bool, segment_seconds: float, now: datetime) -> str:
        """Pending before its first segment; Stalled when the input is connected and no segment was
        closed for two segment durations (and a little); Running otherwise."""
        if self.last_segment_time is None:
            return "Pending"
        last = max(self.last_segment_time, self.last_closed_time or self.last_segment_time)
        if connected and (now - last).total_seconds() > 2 * segment_seconds + 2:
            return "Stalled"
        return "Running"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "segmentsWritten": self.segments_written,
            "segmentsSkipped": self.segments_skipped,
            "lastSegmentTime": rfc3339(self.last_segment_time),
            "progress": self.progress,
            "status": self.status,
        }


class Metrics:
    """Prometheus metrics in a registry of their own (one per Metrics: tests make several in a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        register_process_metrics(self.registry)
        self.state = Gauge("onair_encoder_state", "1 for the current state", ["state"], registry=self.registry)
        self.ingest_connected = Gauge("onair_encoder_ingest_connected", "1 while a publisher is connected",
                                      registry=self.registry)
        self.disconnects = Counter("onair_encoder_ingest_disconnects", "Publisher disconnects", registry=self.registry)
        self.segments = Counter("onair_encoder_segments", "Segments published", ["rendition"], registry=self.registry)
        self.upload_latency = Histogram(
            "onair_encoder_segment_availability_seconds",
            "Segment closed on disk to the playlist naming it uploaded",
            buckets=(0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.upload_failures = Gauge("onair_encoder_upload_failures", "Failed upload attempts so far",
                                     registry=self.registry)
        self.spool_bytes = Gauge("onair_encoder_spool_bytes", "Local bytes waiting for upload", registry=self.registry)
        self.spool_full = Gauge("onair_encoder_spool_full", "1 when the spool is full and segments are dropped",
                                registry=self.registry)
        self.spool_dropped = Counter("onair_encoder_spool_dropped_segments", "Segments dropped on a full spool",
                                     registry=self.registry)
        self.dropped_frames = Gauge("onair_encoder_dropped_frames", "Frames dropped by ffmpeg", registry=self.registry)
        self.speed = Gauge("onair_encoder_speed", "Encoding speed (1 = real time)", registry=self.registry)
        self.preview_viewers = Gauge("onair_encoder_preview_viewers", "Viewers of the live preview",
                                     registry=self.registry)


@dataclass
class EncoderStatus:
    """The mutable state behind GET /status, changed only from the event loop."""

    renditions: dict[str, RenditionStatus]
    master_playlist_key: str
    media_playlist_keys: dict[str, str]
    uploader: UploadQueue | None = None
    state: EncoderState = EncoderState.WAITING
    message: str = "waiting for the publisher"
    connected: bool = False
    connected_at: datetime | None = None
    disconnects: int = 0
    statistics: InputStatistics = field(default_factory=InputStatistics)
    dropped_frames: int = 0
    spool_full: bool = False
    # Why the store cannot be used (a StorageAvailable reason and a message), while the encoder waits on it.
    storage_problem: tuple[str, str] | None = None
    # False while a job's encoder reads its stored playlists at start: it takes no input before, so its
    # readiness probe fails (and no Service routes a publisher to it).
    store_read: bool = True
    paused: bool = False
    # Each pause, and the resume that ended it (None while paused): a recording that follows its
    # LiveJob leaves these stretches out when it cuts, and reports them so that a new Pod continues.
    paused_ranges: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    recording_progress: float | None = None
    recorded_seconds: float | None = None  # a RecordJob's: the media time of what its first rendition holds
    recording: bool = False
    # When the job ends (its schedule's finishDateTime, its timeRange.end): the spec's at the Pod's
    # start, then whatever the operator sets when the spec changes (POST /finish-at).
    finish_at: datetime | None = None
    metrics: Metrics = field(default_factory=Metrics)
    changed_at: float = field(default_factory=time.monotonic)
    _news_waiters: set[asyncio.Future[None]] = field(default_factory=set, init=False, repr=False, compare=False)

    def set_state(self, state: EncoderState, message: str) -> None:
        changed = state != self.state or message != self.message
        if changed:
            self.changed_at = time.monotonic()
        self.state, self.message = state, message
        for each in EncoderState:
            self.metrics.state.labels(each.value).set(1 if each == state else 0)
        if changed:
            self.announce()

    def set_storage_problem(self, problem: tuple[str, str] | None) -> None:
        changed = problem != self.storage_problem
        self.storage_problem = problem
        if changed:
            self.announce()

    def announce(self) -> None:
        """Wakes every wait_for_news: called on the changes a reader must see at once (the state, the
        publisher's connection, pause)."""
        for waiter in self._news_waiters:
            _settle(waiter)

    async def wait_for_news(self, timeout: float) -> None:
        """Returns at the next announce(), or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._news_waiters.add(waiter)
        # A timer rather than asyncio.wait_for: no task per wait.
        timer = loop.call_later(timeout, _settle, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._news_waiters.discard(waiter)

    def set_paused(self, paused: bool, since: datetime | None = None) -> None:
        """Pauses (`since`: from then, else now) or resumes, noting when. Past MAX_PAUSED_RANGES (the
        size of the job's status) a pause is no longer noted: it still pauses a recording of a stream,
        not one that follows its LiveJob."""
        if paused == self.paused:
            return
        now = datetime.now(UTC)
        if paused and len(self.paused_ranges) < MAX_PAUSED_RANGES:
            self.paused_ranges.append((since or now, None))
        elif not paused and self.paused_ranges and self.paused_ranges[-1][1] is None:
            self.paused_ranges[-1] = (self.paused_ranges[-1][0], now)
        self.paused = paused
        self.announce()

    def set_connected(self, connected: bool) -> None:
        if connected and not self.connected:
            self.connected_at = datetime.now(UTC)
        if not connected and self.connected:
            self.disconnects += 1
            self.metrics.disconnects.inc()
        changed = connected != self.connected
        self.connected = connected
        self.metrics.ingest_connected.set(1 if connected else 0)
        if changed:
            self.announce()

    def headline_parts(self) -> tuple[object, ...]:
        """What the operator acts on at once: the state and its message, the publisher's connection,
        pause, the finish time, a full spool, the playlists, each rendition's status, and whether
        segments, statistics and a recording's progress exist yet. Not how far they got: those counters
        move all the time, and the operator writes them at its own pace."""
        return (
            self.state, self.message, self.connected, self.connected_at, self.disconnects, self.paused,
            self.finish_at, self.spool_full, self.storage_problem, self.recording_progress is not None,
            self.statistics != NO_STATISTICS,
            tuple((r.name, r.status, r.segments_written > 0) for r in self.renditions.values()),
            self.master_playlist_key, tuple(sorted(self.media_playlist_keys.items())),
        )

    def headline(self) -> str:
        """A digest of headline_parts(): GET /status?wait=...&seen=<headline> answers when it changes."""
        return headline_digest(self.headline_parts())

    def to_json(self) -> dict[str, Any]:
        upload: dict[str, Any] = {"lastLatencyMs": None, "p50LatencyMs": None, "p99LatencyMs": None, "spoolBytes": 0,
                                  "spoolFull": self.spool_full, "failures": 0, "pending": 0, "lastError": None}
        if self.uploader is not None:
            stats = self.uploader.stats
            upload.update(
                lastLatencyMs=_round(stats.last_latency_ms),
                p50LatencyMs=_round(stats.p50_ms()),
                p99LatencyMs=_round(stats.p99_ms()),
                spoolBytes=self.uploader.spool_bytes,
                failures=stats.failures,
                pending=self.uploader.pending(),
                lastError=stats.last_error if stats.failing_since is not None else None,
            )
        return {
            "state": self.state.value,
            "message": self.message,
            "ingest": {
                "connected": self.connected,
                "connectedAt": rfc3339(self.connected_at),
                "disconnects": self.disconnects,
                "statistics": self.statistics.to_json(),
            },
            "renditions": [rendition.to_json() for rendition in self.renditions.values()],
            "upload": upload,
            "storage": {"available": self.storage_problem is None,
                        "reason": self.storage_problem[0] if self.storage_problem else None,
                        "message": self.storage_problem[1] if self.storage_problem else None},
            "droppedFrames": self.dropped_frames,
            "finishAt": rfc3339(self.finish_at),
            "masterPlaylistKey": self.master_playlist_key,
            "mediaPlaylistKeys": dict(self.media_playlist_keys),
            "recording": {"paused": self.paused, "progress": self.recording_progress,
                          "recordedSeconds": None if self.recorded_seconds is None else round(self.recorded_seconds, 3),
                          # To the millisecond, as a segment's PROGRAM-DATE-TIME: a pause is compared with those.
                          "pausedRanges": [{"start": rfc3339(start, "milliseconds"),
                                            "end": rfc3339(end, "milliseconds")} for start, end in self.paused_ranges]},
        }

    def refresh_metrics(self) -> None:
        if self.uploader is not None:
            self.metrics.upload_failures.set(self.uploader.stats.failures)
            self.metrics.spool_bytes.set(self.uploader.spool_bytes)
        self.metrics.spool_full.set(1 if self.spool_full else 0)
        self.metrics.dropped_frames.set(self.dropped_frames)


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def headline_digest(parts: tuple[object, ...]) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
