"""The live pipeline: ingest sessions, one ffmpeg per session, segments published in order.

An ingest session is one publisher connection (RTMP, SRT) or one pull (HLS, or a RecordJob's
stream URL). Each session runs one ffmpeg that writes every rendition locally with its own hls
muxer; the pipeline polls those local playlists, numbers each new segment in the job's continuous
sequence, queues it for upload, then queues the playlists that name it (the queue keeps that order).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from onair.addresses import NotPublicError
from onair.exitcodes import EXIT_BAD_CONFIG, EXIT_INTERRUPTED, EXIT_OK, FINISHED_MESSAGE
from onair.models import HardwareAcceleration, RecordingFormat
from onair.phases import ConditionReason
from onair.urls import shown_url, url_host, without_url_credentials

from .config import IngestKind, JobConfig
from .ffmpeg import (
    FROZEN_SOURCE_SEGMENTS,
    ProgressParser,
    SessionOutput,
    available_cpus,
    build_session_argv,
    nvenc_available,
    parse_input_statistics,
    session_outputs,
    unhandled_local_segments,
)
from .hlssource import HlsSource, is_hls_url, read_hls_source
from .mp4 import Mp4Impossible, fetch_segment, unwritten_mp4s, write_mp4
from .passthrough import (
    OneProcess,
    PassthroughProcesses,
    ProgramStreams,
    SessionProcesses,
    build_packager_argv,
    build_remux_argv,
    packaging_for,
)
from .playlist import (
    MediaPlaylist,
    Segment,
    Variant,
    fallback_codecs,
    parse_media_playlist,
    render_master_playlist,
    with_media,
)
from .preview import PreviewHub, ProcessFeed, remux_to_ts_argv
from .probe import Probed, merge_probes, probe_segment
from .pullguard import PullGuard, pulling_environment
from .rtmp import (
    PLAY_TOKEN_PARAMETER,
    RTMP_APPLICATION,
    NginxRtmpFront,
    RtmpFrontConfig,
    die_with_parent,
    find_nginx,
    find_rtmp_module,
)
from .srt import SrtGate, SrtUnavailable, load_libsrt
from .status import EncoderState, EncoderStatus, RenditionStatus
from .tracks import EVENT_PLAYLIST, LIVE_PLAYLIST, RenditionTrack, keep_in_step, numbered_by_name, recorded_objects
from .upload import (
    FINAL_PLAYLIST_CACHE_CONTROL,
    LIVE_PLAYLIST_CACHE_CONTROL,
    MASTER_PLAYLIST_CACHE_CONTROL,
    S3Store,
    UploadQueue,
    storage_problem,
)

log = logging.getLogger(__name__)

MASTER_PLAYLIST = "master.m3u8"
POLL_INTERVAL = 0.05  # local playlist polling; well inside the 300 ms availability budget
STOP_EXIT_SECONDS = 5.0  # of the Pod's grace period, left for the process to exit
# What a stop's uploads leave of the grace period: for the uploader's workers, the HTTP servers and
# the process to end before main's safety exit, half a second before the grace period ends.
STOP_SPARE_SECONDS = 2.0
FFMPEG_STOP_SECONDS = 6.0
PACKAGER_FLUSH_SECONDS = 3.0  # a passthrough's packager closing its last segment once its input was killed
RTMP_REJOIN_SECONDS = 0.1
PLAYER_JOIN_SECONDS = 5.0  # how long a publish waits (held by nginx) for our ffmpeg to be on the stream
EMPTY_SEGMENT_SECONDS = 0.001  # below ffmpeg's EXTINF precision: a segment with no media time
MAX_PULL_BACKOFF = 10.0
STORE_RETRY_FIRST_SECONDS = 0.5
STORE_RETRY_MAX_SECONDS = 10.0
BANDWIDTH_HEADROOM = 1.1
# A pulled source that gives no new segment for FROZEN_SOURCE_SEGMENTS of ours or of its own (and at
# least the minimum) is reconnected; ffmpeg ends an HLS pull itself a little earlier (PULL_HOLD_RELOADS).
FROZEN_SOURCE_MIN_SECONDS = 6.0
NO_VIDEO_INPUT = "the input has no video stream: the ladder is encoded from video, so send video with the audio"
# nginx holds an RTMP publish back until its first video key frame (wait_video, wait_key): a publisher
# that sends audio alone, or key frames further apart than this, has nothing encoded for this long.
NO_KEY_FRAME_SECONDS = 10
NO_KEY_FRAME = (f"the publisher is connected, but no video key frame has come in {NO_KEY_FRAME_SECONDS} s: the ladder "
                "is encoded from video (audio alone is not enough; a key frame every 2 s is best)")
PUBLISHER_CONNECTED = "publisher connected"
FEEDER_STOP_SECONDS = 2.0
PASSTHROUGH_DESCRIPTION_SECONDS = 2.0  # how long a passthrough waits for ffmpeg's description of its input
SRT_PIPE_INPUT = "pipe:0"  # the SRT gate relays the publisher's MPEG-TS into ffmpeg's standard input
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL
# The transcode runs below the encoder's own threads: on full cores the uploader, which makes each
# segment available, and the status server go first; ffmpeg has buffers and catches up.
TRANSCODER_NICENESS = 5
# The master's probes (one ffprobe per rendition, all at the first segment, ~0.1 CPU-s each) run below
# the transcode too: at nice 0 they took the CPU from the first segments' uploads, the slowest of a run.
PROBE_NICENESS = 10
# At most this many sessions of a rendition are probed from the bucket for the codecs a master lists:
# the newest ones an earlier Pod published (a resumed recording), the first ones of a clip.
MAX_PROBED_SESSIONS = 8
# How long a vod asset's finish waits for those of an earlier Pod (at most half of what is left of it).
STORED_PROBE_WAIT_SECONDS = 30.0


def niced_child(niceness: int) -> None:
    """The preexec_fn of a child that dies with the encoder and runs `niceness` below it."""
    die_with_parent()
    os.nice(niceness)


async def probe_stored_segment(store: S3Store, key: Callable[[str], str], segment: Segment, directory: Path
                               ) -> Probed:
    """What a segment in the bucket holds: fetched (with its init section) into `directory`, and probed."""
    path = await asyncio.to_thread(fetch_segment, store, key, segment, directory)
    init = directory / segment.init_uri if segment.init_uri else None
    return await probe_segment(path, init, partial(niced_child, PROBE_NICENESS))


class FatalConfigError(Exception):
    """Raised at run time for a problem that can never go away (exit code 2)."""


@dataclass(frozen=True)
class Ports:
    rtmp: int = 1935
    srt: int = 9000
    status: int = 8090
    preview: int = 8091


class Fate(enum.Enum):
    PUBLISH = "publish"
    PAUSED = "paused"  # a RecordJob's pause
    SPOOL_FULL = "spool full"  # the store has been failing for long: drop rather than fill the disk


@dataclass
class SegmentFate:
    fate: Fate
    renditions_to_come: int


@dataclass
class SessionState:
    outputs: list[SessionOutput]
    # Per rendition: the last local segment handled (ffmpeg's sequence number), and the (mtime, size)
    # of its local playlist when last read (unchanged: nothing to parse).
    handled: dict[str, int] = field(default_factory=dict)
    playlist_stamps: dict[str, tuple[int, int]] = field(default_factory=dict)
    init_keys: dict[str, str] = field(default_factory=dict)  # uploaded init segment per rendition
    start_numbers: dict[str, int] = field(default_factory=dict)  # ffmpeg's first local number per rendition
    # Whether the segments at one position of the session are published, decided by the first
    # rendition to close it and followed by the others, so the variants stay aligned.
    fates: dict[int, SegmentFate] = field(default_factory=dict)
    connected: bool = False
    input_described: asyncio.Event = field(default_factory=asyncio.Event)  # ffmpeg described its input (and writes)
    input_fault: str | None = None  # why a passthrough's input cannot be packaged (its packager not started)
    last_media: float = field(default_factory=time.monotonic)  # when ffmpeg last closed a segment
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    stderr_lines: list[str] = field(default_factory=list)


@dataclass
class VariantInfo:
    # What each session of this Pod holds, by the sequence number of its first segment (the one probed).
    sessions: dict[int, Probed]
    fallback_codecs: str  # when ffprobe could read no codec
    peak_bandwidth: int = 0
    declared_bandwidth: int | None = None
    described_sessions: tuple[int, ...] = ()  # the sessions the master was last rendered from

    def named_sessions(self, oldest_named: int | None) -> tuple[int, ...]:
        """The sessions the rendition's playlist still names, from `oldest_named` (the sequence number of
        its first segment) on: the one that segment belongs to and every later one."""
        firsts = sorted(self.sessions)
        holding_oldest = [first for first in firsts if oldest_named is not None and first <= oldest_named]
        return tuple(holding_oldest[-1:] + [first for first in firsts if first not in holding_oldest])

    def described(self, oldest_named: int | None) -> tuple[str, tuple[int, int] | None, float | None]:
        """CODECS, RESOLUTION and FRAME-RATE of the sessions the playlist still names: every format in
        the variant (RFC 8216 4.3.4.2), the largest picture and rate. Sessions before them are forgotten."""
        named = self.named_sessions(oldest_named)
        for gone in [first for first in self.sessions if first not in named]:
            del self.sessions[gone]
        self.described_sessions = named
        merged = merge_probes([self.sessions[first] for first in named])
        return ",".join(merged.codecs) or self.fallback_codecs, merged.resolution, merged.frame_rate


class Encoder:
    def __init__(self, config: JobConfig, ports: Ports, work_dir: Path, store: S3Store, spool_limit_bytes: int,
                 *, stop_grace_seconds: float | None = None) -> None:
        self.config = config
        # How long a stop may take, from its signal: all but the end of the Pod's grace period.
        self.stop_grace_seconds = (config.termination_grace_seconds - STOP_EXIT_SECONDS
                                   if stop_grace_seconds is None else stop_grace_seconds)
        self.ports = ports
        self.work_dir = work_dir
        self.store = store
        outputs = config.outputs
        self.tracks = {
            name: RenditionTrack(
                name=name,
                nominal_duration=config.segment_seconds,
                window=outputs.playlist_window,
                dvr_seconds=outputs.dvr_window_seconds,
                keep_all=outputs.keep_all_segments,
                # A source passed through is segmented at its own keyframes, which may open a GOP whose
                # leading pictures refer back to the segment before (x265's default open GOP, CRA).
                independent_segments=not config.passthrough,
            )
            for name in config.rendition_names
        }
        self.status = EncoderStatus(
            renditions={name: RenditionStatus(name) for name in config.rendition_names},
            master_playlist_key=config.key(MASTER_PLAYLIST),
            media_playlist_keys={name: config.key(name, LIVE_PLAYLIST) for name in config.rendition_names},
            recording=config.kind == "RecordJob",
            finish_at=config.finish_at,
        )
        # The pauses of the recording's earlier Pods: a recording that follows its LiveJob leaves
        # them out, and every recording keeps reporting them.
        self.status.paused_ranges = [(paused.start, paused.end) for paused in config.paused_ranges]
        self.status.store_read = False  # until _resume_from_store
        self.status.paused = bool(self.status.paused_ranges) and self.status.paused_ranges[-1][1] is None
        # Created paused, a recording that follows its LiveJob leaves out its range from the start.
        since = (config.start_at or datetime.min.replace(tzinfo=UTC)) \
            if config.ingest.kind == IngestKind.STORED and not config.paused_ranges else None
        self.status.set_paused(config.start_paused, since)
        self.uploader = UploadQueue(
            store, spool_limit_bytes=spool_limit_bytes, on_latency=self.status.metrics.upload_latency.observe
        )
        self.status.uploader = self.uploader
        self.stop_requested = asyncio.Event()
        self.signalled_at: float | None = None  # time.monotonic() of the first SIGTERM: the grace period runs from it
        self.signalled = asyncio.Event()
        self.finishing = False
        self.session_number = 0
        self.nvenc = False  # the template asks for NVENC and the Pod has a GPU (see run)
        self.cpus = available_cpus()
        self.variants: dict[str, VariantInfo] = {}
        self.master_body: bytes | None = None
        self.publisher_active = False
        self.play_token = secrets.token_hex(16)
        self.preview_play_token = secrets.token_hex(16)  # the preview's own RTMP play (see preview.py)
        self.pull_guard = PullGuard(config.pull_policy, self._pull_refused)  # main starts it for a pull
        self.pulling_environment = pulling_environment()  # every ffmpeg that pulls gets it
        self.preview = PreviewHub(self._preview_feed())
        self.status.metrics.preview_viewers.set_function(lambda: len(self.preview.viewers))
        self.player_joined = asyncio.Event()  # our ffmpeg is on the RTMP stream, waiting for a publish
        self.front: NginxRtmpFront | None = None
        self.hook_url: str | None = None
        self.keep_local_segments = config.outputs.final_format == RecordingFormat.MP4
        self.local_segments: dict[str, list[tuple[Segment, Path]]] = {name: [] for name in config.rendition_names}
        self.started_at = datetime.now(UTC)
        self._last_returncode: int | None = None
        # Why the last session's input could not be encoded (its own fault, not ours): the job says so
        # while the next sessions try again.
        self._unusable_input: str | None = None
        # A RecordJob whose stored playlist has ENDLIST: an earlier attempt recorded it to its end (and
        # exited before its other files were up). This one finishes them and records nothing more.
        self._stored_recording_ended = False
        self._probing: set[str] = set()  # renditions whose first segment ffprobe is reading
        # Renditions whose session has not been probed yet (a passthrough's new session may bring other
        # codecs: see _probe_new_session).
        self._unprobed: set[str] = set(self.tracks)
        # Counts the passthrough sessions: a probe of an earlier one that ends late tells about its own
        # segments only, not that the current session is known.
        self._variants_generation = 0
        # What the sessions an earlier Pod published hold, by their first named segment's number, per
        # rendition: the master lists their codecs too while the playlist names them.
        self._stored_sessions: dict[str, dict[int, Probed]] = {}
        self._stored_probe: asyncio.Task[None] | None = None  # probing them, after a resume
        self._background: set[asyncio.Task[Any]] = set()
        self._sweeps: set[asyncio.Task[None]] = set()  # deleting what earlier Pods left (see _sweep_leftovers)

    # --- control from the HTTP server and signals ---------------------------------------------

    def request_stop(self, finishing: bool | None = None) -> None:
        """SIGTERM, /finish, or the end of the job's time range."""
        if finishing is None:  # a signal: finishing only once the job's time is up
            if self.signalled_at is None:
                self.signalled_at = time.monotonic()
            self.signalled.set()
            finish_at = self.status.finish_at
            finishing = finish_at is not None and finish_at <= datetime.now(UTC)
        self.finishing = self.finishing or finishing
        if not self.stop_requested.is_set():
            self.status.set_state(EncoderState.STOPPING, "stopping: flushing the last segment and uploading")
            # ffmpeg may be blocked reading a stalled or idle RTMP stream, where a signal cannot
            # reach it before the kill: the end of its input does, and it closes its segment.
            self._end_rtmp_play()
        self.stop_requested.set()

    async def on_publish(self, name: str) -> bool:
        """nginx-rtmp's on_publish: only the job's key, and one publisher at a time."""
        if self.stop_requested.is_set() or not self._is_stream_key(name):
            log.warning("refused an RTMP publish with a wrong stream key")
            return False
        if self.publisher_active:
            log.warning("refused a second RTMP publisher")
            return False
        self.publisher_active = True
        # nginx holds the publisher until we answer: a publish accepted before our ffmpeg is on the
        # stream (the encoder is starting, or rejoining after the last publish) would be read from
        # its next keyframe and lose up to a GOP.
        try:
            await asyncio.wait_for(self.player_joined.wait(), PLAYER_JOIN_SECONDS)
        except TimeoutError:
            log.warning("accepted a publish before the encoder joined the stream: its first GOP may be lost")
        if self.stop_requested.is_set() or not self.publisher_active:
            self.publisher_active = False
            return False
        self._connected(True)
        return True

    def _is_stream_key(self, name: str) -> bool:
        """In constant time, as every key is compared here: how long a refusal takes says nothing of the key."""
        key = self.config.stream_key
        return key is not None and secrets.compare_digest(name.encode(), key.encode())

    def on_publish_done(self, name: str) -> None:
        if not self._is_stream_key(name) or not self.publisher_active:
            return
        self.publisher_active = False
        self._connected(False)
        self._end_rtmp_play()

    def _end_rtmp_play(self) -> None:
        """The session's ffmpeg stays on the idle stream after the publisher left: drop it (see rtmp.py)."""
        self.player_joined.clear()
        if self.front is None or self.config.stream_key is None:
            return
        task = asyncio.get_running_loop().create_task(self.front.drop_players(self.config.stream_key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def allow_play(self, token: str | None) -> bool:
        if token is None:
            return False
        if secrets.compare_digest(token, self.preview_play_token):
            return True
        allowed = secrets.compare_digest(token, self.play_token)
        if allowed:
            self.player_joined.set()
        return allowed

    def _preview_feed(self) -> ProcessFeed | None:
        """What feeds the preview while somebody watches (SRT's relay feeds it itself). LiveJobs only."""
        if self.config.kind != "LiveJob":
            return None
        match self.config.ingest.kind:
            case IngestKind.RTMP_LISTEN:
                return ProcessFeed(lambda: remux_to_ts_argv(self._rtmp_play_url(self.preview_play_token)),
                                   die_with_parent)
            case IngestKind.PULL if self.config.ingest.url:
                url = self.config.ingest.url  # main starts the guard before the preview serves
                return ProcessFeed(lambda: remux_to_ts_argv(*self.pull_guard.http_input(url)), die_with_parent,
                                   self.pulling_environment)
        return None

    def _connected(self, connected: bool) -> None:
        self.status.set_connected(connected)
        if self.stop_requested.is_set():
            return
        if connected:
            self.status.set_state(EncoderState.LIVE, PUBLISHER_CONNECTED if self._is_push() else "source connected")
        elif self.status.state == EncoderState.LIVE:
            self.status.set_state(EncoderState.RECONNECTING, "input dropped; waiting for it to come back")

    def _is_push(self) -> bool:
        return self.config.ingest.kind in (IngestKind.RTMP_LISTEN, IngestKind.SRT_LISTEN)

    # --- the main loop --------------------------------------------------------------------------

    async def run(self) -> int:
        await self._resume_from_store()
        template = self.config.template
        if template is not None and template.hardware_acceleration == HardwareAcceleration.NVENC:
            self.nvenc = await asyncio.to_thread(nvenc_available)
            if not self.nvenc:
                log.warning("the template asks for NVENC but this Pod has no usable NVIDIA GPU (no /dev/nvidiactl "
                            "or no NVENC in ffmpeg): encoding in software")
        self.uploader.start()
        if self._stored_recording_ended:
            log.info("an earlier attempt recorded to the end: finishing its files, recording nothing more")
            self.request_stop(finishing=True)
        elif self.config.finish_only:
            log.info("closing the playlists an earlier encoder left open, taking no input")
            self.request_stop(finishing=True)
        watchdog = asyncio.create_task(self._watch_time_range())
        try:
            match self.config.ingest.kind:
                case IngestKind.RTMP_LISTEN:
                    await self._run_rtmp()
                case IngestKind.SRT_LISTEN:
                    await self._run_srt()
                case IngestKind.PULL:
                    await self._run_pull()
                case _:
                    raise FatalConfigError(f"ingest {self.config.ingest.kind} is not a live pipeline")
        finally:
            watchdog.cancel()
        return await self._finish()

    async def _watch_time_range(self) -> None:
        """Stop (and finish) at the end of a RecordJob's time range or a LiveJob's schedule; keep
        progress figures current."""
        while not self.stop_requested.is_set():
            now = datetime.now(UTC)
            progress = self._progress(now)
            self.status.recording_progress = progress if self.config.kind == "RecordJob" else None
            for rendition in self.status.renditions.values():
                rendition.progress = progress
                rendition.status = rendition.state(self.status.connected, self.config.segment_seconds, now)
            self._update_spool_full()
            self.status.refresh_metrics()
            if self.status.finish_at is not None and now >= self.status.finish_at:
                self.request_stop(finishing=True)
            await asyncio.sleep(0.25)

    def _progress(self, now: datetime) -> float | None:
        end = self.status.finish_at
        if end is None:
            return None
        start = self.config.start_at or self.config.first_started_at or self.started_at
        total = (end - start).total_seconds()
        return 1.0 if total <= 0 else min(1.0, max(0.0, (now - start).total_seconds() / total))

    async def _run_rtmp(self) -> None:
        nginx, module = find_nginx(), find_rtmp_module()
        if nginx is None or module is None:
            raise FatalConfigError("RTMP ingest needs nginx with the nginx-rtmp module (libnginx-mod-rtmp)")
        assert self.hook_url is not None, "the hook server starts before the pipeline"
        front = RtmpFrontConfig(self.config.listen_host, self.ports.rtmp, self.hook_url, self.work_dir / "nginx",
                                module)
        if len(os.fsencode(front.control_socket)) > UNIX_SOCKET_PATH_MAX:
            raise FatalConfigError(f"ONAIR_WORK_DIR: too long for nginx's control socket {front.control_socket} "
                                   f"(a Unix socket path has at most {UNIX_SOCKET_PATH_MAX} bytes)")
        self.front = NginxRtmpFront(front, nginx)
        await self.front.start()
        await self.front.wait_listening()
        play_url = self._rtmp_play_url(self.play_token)
        while not self.stop_requested.is_set():
            front_exit = self.front.process.returncode if self.front.process is not None else None
            if front_exit is not None:
                # No publisher can reach the encoder without it, and the one that was is gone: the
                # Pod restarts (exit 1) instead of reporting the stream as live forever.
                raise RuntimeError(f"the RTMP front (nginx) exited with code {front_exit}")
            # Waiting on the stream before the publisher arrives: each session is one publish,
            # from its first frame until the publisher leaves (and the play is dropped).
            produced = await self._run_session(play_url, listener=False)
            if not produced and not self.stop_requested.is_set():
                await asyncio.sleep(RTMP_REJOIN_SECONDS)  # a play that fails at once must not spin

    def _rtmp_play_url(self, token: str) -> str:
        return (f"rtmp://{url_host(self.config.listen_host)}:{self.ports.rtmp}/{RTMP_APPLICATION}/{self.config.stream_key}"
                f"?{PLAY_TOKEN_PARAMETER}={token}")

    @property
    def srt_passphrase(self) -> str | None:
        """The job's SRT passphrase, or else its stream key: SRT is encrypted unless told otherwise."""
        return self.config.srt_passphrase or self.config.stream_key

    async def _run_srt(self) -> None:
        """SRT: our gate listens and checks each caller's streamid (see srt.py); each session is one
        ffmpeg reading a pipe, waiting before the publisher arrives as with RTMP, until it leaves."""
        try:
            library = load_libsrt()
        except SrtUnavailable as error:
            raise FatalConfigError(str(error)) from error
        assert self.config.stream_key is not None, "the configuration requires it for SRT"
        gate = SrtGate(library, self.config.listen_host, self.ports.srt, self.config.stream_key, self.srt_passphrase,
                       tap=self.preview.publish_threadsafe)
        try:
            gate.open()
            while not self.stop_requested.is_set():
                await self._run_session(SRT_PIPE_INPUT, listener=True, srt=gate)
                if not self.stop_requested.is_set():
                    await asyncio.sleep(0.05)  # an ffmpeg that fails at once must not spin
        finally:
            await gate.close()

    def _secrets(self) -> tuple[str | None, ...]:
        """What the log must not show: the RTMP play URL carries the stream key and the play token; a
        pulled URL may carry a user's password or a signed query."""
        source = urlsplit(self.config.ingest.url) if self.config.ingest.url else None
        return (self.config.stream_key, self.play_token, self.srt_passphrase, source.password if source else None,
                source.query if source else None)

    def _loggable(self, argv: list[str]) -> str:
        """The command line for the log, without the credentials in it."""
        return redacted(argv, *self._secrets())

    def _loggable_output(self, lines: Iterable[str]) -> str:
        """ffmpeg's own words for the log: they name the URLs it opens (the RTMP play URL, a pulled
        source's, its segments'), which lose their credentials as the command line does, and every URL
        its user:password and query."""
        return without_url_credentials(redacted_text("\n".join(lines), *self._secrets()))

    async def _feed_from_srt(self, gate: SrtGate, unclaimed_pipe: list[int]) -> None:
        """Waits for the next admitted publisher and relays it into the session's ffmpeg. The relay
        takes the pipe (and closes it when the publisher leaves); until then it stays in
        `unclaimed_pipe` for the session to close, also when this task is cancelled before it ran."""
        publisher = await gate.next_publisher()
        await gate.relay(publisher, unclaimed_pipe.pop())

    async def _run_pull(self) -> None:
        url = self.config.ingest.url
        assert url is not None
        spec = self.config.record_spec
        start = spec.time_range.start if spec and spec.time_range else None
        if start is not None and start > datetime.now(UTC):
            self.status.set_state(EncoderState.WAITING, f"recording starts at {start.isoformat()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), (start - datetime.now(UTC)).total_seconds())
        backoff = 1.0
        hls = is_hls_url(url)
        source = await self._read_hls_source(url) if hls else None
        if source is not None and source.ended and self.config.kind == "LiveJob":
            # A Pod started after the broadcast ended: pulled, it would be read from its first segment.
            source = await self._wait_while_source_ended(url)
        elif source is not None and source.ended and any(track.segments for track in self.tracks.values()):
            # A recording continued after its source ended (its last Pod was evicted meanwhile): pulled,
            # the ended playlist would be recorded again from its first segment.
            log.info("the source ended while no recorder ran: finishing what was recorded")
            self.request_stop(finishing=True)
        while not self.stop_requested.is_set():
            if not self.status.connected and self._unusable_input is None:
                self.status.set_state(self._pull_waiting_state(), f"pulling {shown_url(url)}")
            target = source.target_duration if source is not None else 0.0
            produced = await self._run_session(url, listener=False, pull=True, source_target_duration=target)
            returncode = self._last_returncode
            if self.stop_requested.is_set():
                break
            if hls:
                # An ended playlist pulled again is read from its first segment: it would be encoded twice.
                # ffmpeg also ends with 0 when the playlist cannot be reloaded for a few seconds (an origin's
                # 503s): only the playlist itself, read again, says whether the source ended.
                source = await (self._hls_source_known(url) if returncode == 0 else self._read_hls_source(url))
                if source is not None and not source.ended:
                    # Live, yet the session ended: the source froze (or failed). Pulled now, its newest
                    # segment would be encoded again, and the job would say `live` with nothing new.
                    source = await self._wait_for_a_new_segment(url, source)
            source_ended = source is not None and source.ended  # whatever ended the session
            if self.config.kind == "RecordJob" and (
                    source_ended or (returncode == 0 and not hls and produced and self.status.finish_at is None)):
                # The source ended (an HLS playlist with ENDLIST, or, with no end to the range, an RTMP or
                # SRT stream closed): done. A stream may come back before the end; an ended playlist does not.
                self.request_stop(finishing=True)
                break
            if source_ended:  # a LiveJob's source ended its broadcast: wait for it to go live again
                source = await self._wait_while_source_ended(url)
                continue
            backoff = 1.0 if produced else min(backoff * 2, MAX_PULL_BACKOFF)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), backoff)

    async def _read_hls_source(self, url: str) -> HlsSource | None:
        proxy = await self.pull_guard.start()
        return await read_hls_source(self.pull_guard.source_url(url), proxy=proxy)

    def _pull_refused(self, refusal: str) -> None:
        """The pull guard refused an address the source sent us to (or could not check it): the job says
        so (until it is live)."""
        if not self.status.connected and not self.stop_requested.is_set():
            self._unusable_input = refusal
            self.status.set_state(self._pull_waiting_state(), refusal)

    def _pull_waiting_state(self) -> EncoderState:
        return EncoderState.RECONNECTING if self.status.disconnects else EncoderState.WAITING

    async def _wait_while_source_ended(self, url: str) -> HlsSource | None:
        """Until the source playlist is read without EXT-X-ENDLIST: one that cannot be read meanwhile
        may still be the ended one."""
        self.status.set_state(self._pull_waiting_state(), f"the source playlist {shown_url(url)} has ended "
                                                          "(EXT-X-ENDLIST): waiting for it to go live again")
        return await self._read_hls_source_until(url, lambda source: source is not None and not source.ended)

    async def _wait_for_a_new_segment(self, url: str, source: HlsSource) -> HlsSource | None:
        """Until the live source playlist names a segment newer than `source`'s newest, or ends."""
        if source.newest_segment is not None and self._unusable_input is None:  # that says more
            self.status.set_state(self._pull_waiting_state(),
                                  f"no new segment in the source playlist {shown_url(url)} after "
                                  f"{shown_url(self.pull_guard.unguarded_url(source.newest_segment[1]))}: "
                                  "waiting for one")
        return await self._read_hls_source_until(
            url, lambda now: now is not None and (now.ended or now.newest_segment != source.newest_segment))

    async def _hls_source_known(self, url: str) -> HlsSource | None:
        """The source playlist, read again while it cannot be read (None once stopping)."""
        return await self._read_hls_source_until(url, lambda source: source is not None)

    async def _read_hls_source_until(self, url: str,
                                     answered: Callable[[HlsSource | None], bool]) -> HlsSource | None:
        """The source playlist read, asked again (every 1 s, backing off to 10 s) until `answered` takes
        its answer or the job stops (None then)."""
        delay = 1.0
        while not self.stop_requested.is_set():
            source = await self._read_hls_source(url)
            if answered(source):
                return source
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), delay)
            delay = min(delay * 2, MAX_PULL_BACKOFF)
        return None

    # --- one session ------------------------------------------------------------------------------

    async def _run_session(
        self, input_url: str, *, listener: bool, pull: bool = False, srt: SrtGate | None = None,
        source_target_duration: float = 0.0,
    ) -> bool:
        """Runs one ffmpeg (a passthrough: two) until the input ends or a stop; returns whether it
        produced segments. `srt`: the input is the pipe that gate's next publisher is relayed into;
        `source_target_duration`: a pulled HLS source's, when known."""
        guard_options: list[str] = []
        if pull:
            try:
                input_url, guard_options = await self.pull_guard.ffmpeg_input(input_url)
            except (OSError, ValueError) as refused:  # NotPublicError (said already) is an OSError
                self._last_returncode = None
                if not isinstance(refused, NotPublicError):
                    self._pull_refused(f"{shown_url(input_url)}: {refused}")  # a name that does not resolve now
                return False
        self.session_number += 1
        self.player_joined.clear()  # this session's ffmpeg joins anew
        session_dir = self.work_dir / f"session_{self.session_number:04d}"
        for track in self.tracks.values():
            track.start_session()
        state = SessionState(outputs=[],
                             start_numbers={name: track.next_sequence for name, track in self.tracks.items()})
        announce = listener or pull
        readers: list[asyncio.Task[Any]] = []
        processes: SessionProcesses
        input_format = "mpegts" if srt is not None else None  # a pipe has no name to guess it from
        environment = None
        if pull:
            self.pull_guard.refusal_since()  # an earlier session's is not this one's
            # ffmpeg's TLS takes the guard from -http_proxy on its first connection only; one it opens
            # again (rtmps' authentication) reads http_proxy, which has to be the guard too.
            environment = {**self.pulling_environment, "http_proxy": self.pull_guard.proxy_url}
        stdin: int = asyncio.subprocess.DEVNULL
        if srt is not None:
            stdin, pipe = os.pipe()
        try:
            if self.config.passthrough:
                argv = build_remux_argv(input_url, live_listener=listener, input_format=input_format,
                                        guard_options=guard_options)
                log.info("session %d: %s", self.session_number, self._loggable(argv))
                passthrough = await PassthroughProcesses.start(argv, die_with_parent, stdin=stdin, env=environment)
                readers.append(asyncio.create_task(self._read_stderr(passthrough.remux, state, announce=announce)))
                processes = passthrough
                exited: asyncio.Task[Any] = asyncio.create_task(
                    self._package_passthrough(passthrough, state, session_dir, readers))
            else:
                state.outputs = self._make_outputs(session_dir, staying_fmp4=self.renditions_in_fmp4())
                argv = build_session_argv(
                    self.config,
                    input_url,
                    state.outputs,
                    state.start_numbers,
                    live_listener=listener,
                    input_format=input_format,
                    nvenc=self.nvenc,
                    cpus=self.cpus,
                    guard_options=guard_options,
                )
                log.info("session %d: %s", self.session_number, self._loggable(argv))
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,  # our SIGTERM must not reach ffmpeg before we stop it ourselves
                    preexec_fn=partial(niced_child, TRANSCODER_NICENESS), env=environment,
                )  # fmt: skip
                readers += [
                    asyncio.create_task(self._read_progress(process)),
                    asyncio.create_task(self._read_stderr(process, state, announce=announce)),
                ]
                processes = OneProcess(process)
                exited = asyncio.create_task(process.wait())
        except BaseException:
            if srt is not None:
                os.close(pipe)
            raise
        finally:
            if srt is not None:
                os.close(stdin)  # ffmpeg has its copy: the pipe ends when the relay closes its side
        unclaimed_pipe = [pipe] if srt is not None else []
        feeder = asyncio.create_task(self._feed_from_srt(srt, unclaimed_pipe)) if srt is not None else None
        produced_before = sum(status.segments_written for status in self.status.renditions.values())
        watcher = asyncio.create_task(self._watch_outputs(state))
        stop = asyncio.create_task(self.stop_requested.wait())
        ending: set[asyncio.Task[Any]] = {exited, stop}
        if pull:
            ending.add(asyncio.create_task(self._watch_for_a_frozen_source(state, source_target_duration)))
        # Cancelled when the session ends, as `ending` is; their end does not end it.
        hints = [] if pull or listener else [asyncio.create_task(self._say_when_no_key_frame_comes(state))]
        await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
        if feeder is not None:
            # ffmpeg blocked reading an idle pipe does not notice a signal; the end of its input it does.
            # A relay blocked writing to an ffmpeg that no longer reads is freed by killing ffmpeg (EPIPE).
            feeder.cancel()
            done, _ = await asyncio.wait({feeder}, timeout=FEEDER_STOP_SECONDS)
            if not done:
                processes.kill()
                await asyncio.gather(feeder, return_exceptions=True)
            for fd in unclaimed_pipe:  # no publisher came: ffmpeg sees the end of its input
                os.close(fd)
        if not exited.done():
            # SIGINT: ffmpeg closes the current segment and writes its playlist before exiting.
            processes.interrupt()
            try:
                await asyncio.wait_for(asyncio.shield(exited), FFMPEG_STOP_SECONDS)
            except TimeoutError:
                # An input stuck on the network: ended by force, and a passthrough's packager still
                # closes the segment it holds (killing it too would lose that segment).
                processes.kill_input()
                try:
                    await asyncio.wait_for(asyncio.shield(exited), PACKAGER_FLUSH_SECONDS)
                except TimeoutError:
                    processes.kill()
                    await exited
        for task in (*ending, *hints):
            task.cancel()
        await asyncio.gather(*readers, *hints, return_exceptions=True)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await self._scan_outputs(state)  # the segments ffmpeg closed while exiting
        self._last_returncode = processes.returncode
        if self._last_returncode not in (0, 255, -signal.SIGINT) and not self.stop_requested.is_set():
            log.warning("ffmpeg exited with %s: %s", self._last_returncode, self._loggable_output(state.stderr_tail))
        if state.connected:  # listeners and pulls; RTMP's connection state comes from nginx's hooks
            self._connected(False)
        produced = sum(status.segments_written for status in self.status.renditions.values()) > produced_before
        self._unusable_input = None if produced or self.stop_requested.is_set() else self._input_fault(state)
        if self._unusable_input is not None:
            log.warning("session %d: %s", self.session_number, self._unusable_input)
            self.status.set_state(self.status.state, self._unusable_input)
        return produced

    def _input_fault(self, state: SessionState) -> str | None:
        """What ffmpeg's description of an input it then could not encode says is wrong with it, or the
        pull guard's refusal of an address it was sent to."""
        if (refusal := self.pull_guard.refusal_since()) is not None:
            return refusal
        if self.config.passthrough:
            return state.input_fault  # otherwise a remux packages whatever streams there are
        described = parse_input_statistics(state.stderr_lines)  # kept until ffmpeg starts its output
        if described is None or described.video_codec is not None:
            return None
        self.status.statistics = described
        return NO_VIDEO_INPUT

    def renditions_in_fmp4(self) -> list[str]:
        """The renditions whose playlists name an fMP4 segment. They stay fMP4: an EXT-X-MAP applies to
        every segment after it, so MPEG-TS segments cannot follow."""
        return [name for name, track in self.tracks.items() if any(segment.init_uri for segment in track.segments)]

    def _make_outputs(self, session_dir: Path, passthrough_fmp4: bool = False,
                      staying_fmp4: Collection[str] = ()) -> list[SessionOutput]:
        outputs = session_outputs(self.config, session_dir, self.session_number, passthrough_fmp4, staying_fmp4)
        for output in outputs:
            output.directory.mkdir(parents=True, exist_ok=True)
        return outputs

    async def _package_passthrough(self, processes: PassthroughProcesses, state: SessionState, session_dir: Path,
                                   readers: list[asyncio.Task[Any]]) -> None:
        """A passthrough session once its remux runs: the segment type from the program it writes,
        then the packager. Returns when both have exited (or the remux ended before a program)."""
        try:
            program = await processes.read_program()
            if program is not None:
                state.input_fault = await self._passthrough_refusal(program, state)
            if state.input_fault is not None:
                processes.kill()
            elif program is not None:
                # A reconnect with H.264 after HEVC stays fMP4 (see renditions_in_fmp4).
                packaging = packaging_for(program, self.config.audio, fmp4=bool(self.renditions_in_fmp4()))
                self._probe_new_session()
                outputs = self._make_outputs(session_dir, packaging.fmp4)
                output = outputs[0]
                argv = build_packager_argv(output, packaging, self.config.segment_seconds,
                                           state.start_numbers[output.rendition])
                log.info("session %d: %s video, %s audio in %s segments: %s", self.session_number, program.video,
                         program.audio, "fMP4" if packaging.fmp4 else "MPEG-TS", " ".join(argv))
                packager = await processes.start_packager(argv, die_with_parent)
                state.outputs = outputs
                readers += [
                    asyncio.create_task(self._read_progress(packager)),
                    asyncio.create_task(self._read_stderr(packager, state, announce=False, describes_input=False)),
                ]
        except OSError as error:  # the packager could not start: end the session, the next one retries
            log.error("session %d: the packager did not start: %s", self.session_number, error)
            processes.kill()
        finally:
            processes.close()
        await processes.wait()

    async def _passthrough_refusal(self, program: ProgramStreams, state: SessionState) -> str | None:
        """Why the remuxed program cannot be passed through, if it cannot: a video stream the MPEG-TS
        remux could not label (VP9, AV1) comes out as data, and packaged without it the channel would
        go on as sound alone. A source of sound alone (radio) is passed through as it is."""
        if program.video is not None:
            return None
        # ffmpeg describes its input before it writes: the description is on its way, if not read yet.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.input_described.wait(), PASSTHROUGH_DESCRIPTION_SECONDS)
        statistics = self.status.statistics if state.input_described.is_set() else None  # this session's
        video = statistics.video_codec if statistics is not None else None
        if video is not None:
            return (f"the source's video is {video}, which inputClass Single cannot pass through (H.264 and HEVC it "
                    "can): give the job a jobTemplateId to encode it")
        if program.audio is None:
            return "the input has neither video nor audio"
        return None

    async def _watch_for_a_frozen_source(self, state: SessionState, source_target_duration: float) -> None:
        """Returns when a pulled source has stopped giving media: a stream that stalled, or an HLS
        playlist that ffmpeg did not give up on itself (its reloads take one or two extra target
        durations beyond FROZEN_SOURCE_SEGMENTS of them)."""
        limit = max(FROZEN_SOURCE_MIN_SECONDS, FROZEN_SOURCE_SEGMENTS * self.config.segment_seconds,
                    (FROZEN_SOURCE_SEGMENTS + 2) * source_target_duration)
        while True:
            await asyncio.sleep(POLL_INTERVAL * 10)
            if state.connected and time.monotonic() - state.last_media > limit:
                log.warning("the source gave no media for %.0fs: reconnecting", limit)
                return

    async def _say_when_no_key_frame_comes(self, state: SessionState) -> None:
        """An RTMP session: the job says so when its publisher gets nothing encoded (see NO_KEY_FRAME)."""
        session_started = datetime.now(UTC)  # a new ffmpeg under a publisher who stays waits for a key frame too
        patience = timedelta(seconds=NO_KEY_FRAME_SECONDS)
        while not state.input_described.is_set():
            connected_at = self.status.connected_at
            if (self.status.connected and connected_at is not None and not self.stop_requested.is_set()
                    and datetime.now(UTC) - max(connected_at, session_started) > patience):
                log.warning("session %d: %s", self.session_number, NO_KEY_FRAME)
                self.status.set_state(self.status.state, NO_KEY_FRAME)
                return
            await asyncio.sleep(POLL_INTERVAL * 10)

    async def _read_progress(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        parser = ProgressParser()
        base_dropped = self.status.dropped_frames
        async for raw in process.stdout:
            block = parser.feed(raw.decode(errors="replace"))
            if block is not None:
                self.status.dropped_frames = base_dropped + block.dropped_frames
                if block.speed is not None:
                    self.status.metrics.speed.set(block.speed)

    async def _read_stderr(self, process: asyncio.subprocess.Process, state: SessionState, announce: bool,
                           describes_input: bool = True) -> None:
        """Keeps a tail for error messages; turns ffmpeg's description of the input into the ingest
        statistics and, for listeners and pulls, into the "connected" signal (`describes_input`: the
        process reads the source itself, not a passthrough's remuxed copy)."""
        assert process.stderr is not None
        described = not describes_input
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            state.stderr_tail.append(line)
            if described:
                continue
            state.stderr_lines.append(line)
            if line.startswith(("Output #", "Stream mapping:")):
                described = True
                state.input_described.set()
                if self.status.message == NO_KEY_FRAME:  # it came late
                    self.status.set_state(self.status.state, PUBLISHER_CONNECTED)
                statistics = parse_input_statistics(state.stderr_lines)
                if statistics is not None:
                    self.status.statistics = statistics
                    if announce and not state.connected:
                        state.connected = True
                        state.last_media = time.monotonic()
                        self._connected(True)
                state.stderr_lines.clear()

    async def _watch_outputs(self, state: SessionState) -> None:
        while True:
            await self._scan_outputs(state)
            await asyncio.sleep(POLL_INTERVAL)

    async def _scan_outputs(self, state: SessionState) -> None:
        for output in state.outputs:
            name = output.rendition
            try:
                info = output.local_playlist.stat()
                stamp = (info.st_mtime_ns, info.st_size)
                if state.playlist_stamps.get(name) == stamp:
                    continue  # ffmpeg replaces the file (temp_file) only when a segment closes
                text = output.local_playlist.read_text()
            except FileNotFoundError:
                continue
            state.playlist_stamps[name] = stamp
            fresh, missed = unhandled_local_segments(parse_media_playlist(text), state.handled.get(name))
            if missed:
                # Slid out of ffmpeg's local window before we looked (the loop was stalled for the
                # length of the whole window): lost, and the playlist says so with a discontinuity.
                log.error("%s: local segments %d-%d were never seen", name, missed[0], missed[-1])
                self.tracks[name].skip()
            if fresh:
                state.last_media = time.monotonic()
            for segment in fresh:
                state.handled[name] = segment.sequence
                await self._publish_segment(output, state, segment, info.st_mtime)

    async def _publish_segment(
        self, output: SessionOutput, state: SessionState, local: Segment, modified: float
    ) -> None:
        name = output.rendition
        track = self.tracks[name]
        path = output.directory / local.uri
        size = path.stat().st_size if path.exists() else 0
        if local.duration < EMPTY_SEGMENT_SECONDS:
            # ffmpeg closes a segment with no media time when a session ends just after one began:
            # nothing to play, and players stall on it. Not a gap either, so no discontinuity.
            path.unlink(missing_ok=True)
            return
        self.status.renditions[name].last_closed_time = datetime.now(UTC)
        fate = self._fate(state, name, local, size)
        if fate != Fate.PUBLISH:
            # Not published, in every rendition alike; the playlist shows a discontinuity there.
            if fate == Fate.SPOOL_FULL:
                self.status.metrics.spool_dropped.inc()
            path.unlink(missing_ok=True)
            track.skip()
            self.status.renditions[name].segments_skipped += 1
            return
        init_uri = None
        if output.init_name:
            if name not in state.init_keys:
                # Named after the first segment using it: unique across sessions and Pod restarts.
                init_name = f"init_{track.next_sequence:06d}.mp4"
                state.init_keys[name] = init_name
                local_init = output.directory / output.init_name
                if self.keep_local_segments:  # the MP4 is joined from the local segments and the init
                    # they name in the playlist (mp4.write_mp4 looks for it beside them)
                    os.link(local_init, output.directory / init_name)
                self.uploader.put_file(self.config.key(name, init_name), local_init, remove_local=False)
            init_uri = state.init_keys[name]
        extension = output.segment_extension
        object_name = f"seg_{track.next_sequence:06d}.{extension}"
        # Closed when ffmpeg renamed its playlist (temp_file), not when we noticed: latency from there.
        closed_at = time.monotonic() - max(0.0, time.time() - modified)
        probe_copy = None
        if name in self._unprobed and name not in self._probing:
            # Probed off the upload path: the master follows once every rendition is known, and the
            # first segments are not delayed. Linked before the upload is queued, which removes the file.
            probe_copy = path.with_name(f"probe_{path.name}")
            os.link(path, probe_copy)
        segment = track.add(local.duration, object_name, local.program_date_time, init_uri, size)
        if self.config.kind == "RecordJob" and name == next(iter(self.tracks)):
            self.status.recorded_seconds = (self.status.recorded_seconds or 0.0) + local.duration
        self.uploader.put_file(self.config.key(name, object_name), path, remove_local=not self.keep_local_segments)
        if self.keep_local_segments:
            self.local_segments[name].append((segment, path))
        self._queue_playlists(name, closed_at=[closed_at])
        if probe_copy is not None:
            self._probing.add(name)
            init = output.directory / output.init_name if output.init_name else None
            task = asyncio.create_task(self._probe_variant(name, probe_copy, init, size, local.duration,
                                                           segment.sequence, self._variants_generation))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        expired = track.take_expired()
        for segment_gone in expired:
            self.uploader.delete(self.config.key(name, segment_gone.uri), track.hold_seconds(segment_gone))
        for init_gone in track.unused_init_segments(expired):
            # It goes with the last of its segments, when that one goes.
            self.uploader.delete(self.config.key(name, init_gone), track.hold_seconds(expired[-1]),
                                 self.config.key(name, expired[-1].uri))
        variant = self.variants.get(name)
        if variant is not None and (
                track.peak_bit_rate > variant.peak_bandwidth or self.master_body is None
                or variant.named_sessions(self._oldest_named(track)) != variant.described_sessions):
            # BANDWIDTH must be at least the peak segment bit rate (RFC 8216 4.3.4.2); the headroom
            # keeps small excursions from rewriting the master each time. The codecs follow as an older
            # session slides out of the playlist.
            variant.peak_bandwidth = max(variant.peak_bandwidth, int(track.peak_bit_rate * BANDWIDTH_HEADROOM))
            self._queue_master()
        rendition = self.status.renditions[name]
        rendition.segments_written += 1
        rendition.last_segment_time = datetime.now(UTC)
        rendition.status = "Running"
        self.status.metrics.segments.labels(name).inc()

    def _fate(self, state: SessionState, name: str, local: Segment, size: int) -> Fate:
        position = local.sequence - state.start_numbers.get(name, 0)
        decided = state.fates.get(position)
        if decided is None:
            if self.status.paused:
                fate = Fate.PAUSED
            elif not self.uploader.has_room_for(size * len(state.outputs)):
                fate = Fate.SPOOL_FULL
                self.status.spool_full = True
            else:
                fate = Fate.PUBLISH
            decided = state.fates[position] = SegmentFate(fate, len(state.outputs))
        decided.renditions_to_come -= 1
        if decided.renditions_to_come <= 0:
            del state.fates[position]
        return decided.fate

    def _update_spool_full(self) -> None:
        """Set when a segment is dropped; cleared once the spool has drained to half, so the
        condition does not flap with every segment while the store is still catching up."""
        if self.status.spool_full and self.uploader.spool_bytes <= self.uploader.spool_limit_bytes // 2:
            self.status.spool_full = False

    def _queue_playlists(self, name: str, closed_at: list[float] | None = None, ended: bool = False,
                         every: bool = False) -> None:
        """The rendition's playlists after a new segment; `every`: also a LiveJob's large event playlist
        that is not due yet (a Pod stopping leaves every playlist naming all it published)."""
        track = self.tracks[name]
        # Only a recording is ever final: a LiveJob that ended can be switched on again and continue
        # these playlists, and a year-long cache would keep its viewers on the ended version.
        final = ended and self.config.kind == "RecordJob"
        cache = FINAL_PLAYLIST_CACHE_CONTROL if final else LIVE_PLAYLIST_CACHE_CONTROL
        if self.config.outputs.event_playlist and (every or ended or track.event_playlist_due()):
            # Before the live playlist: a segment leaving the live window is in the stored event
            # playlist by then, also when the window moves by more than one (a short segment).
            event = track.event_playlist(ended=ended).encode()
            self.uploader.put_bytes(self.config.key(name, EVENT_PLAYLIST), event, cache)
        # A RecordJob's only playlist, the one its viewers reload: with every segment (RFC 8216 6.2.1).
        body = (track.event_playlist(ended=ended) if self.config.kind == "RecordJob"
                else track.live_playlist(ended=ended))
        unnamed = [self.config.key(name, uri) for uri in track.take_unnamed()]
        self.uploader.put_bytes(self.config.key(name, LIVE_PLAYLIST), body.encode(), cache, closed_at, unnamed)

    def _probe_new_session(self) -> None:
        """The codecs may have changed (a passthrough's new session): every rendition's first segment of
        it is probed, and the master lists its codecs beside those of the sessions still named."""
        self._unprobed = set(self.tracks)
        self._probing.clear()
        self._variants_generation += 1

    async def _probe_variant(self, name: str, path: Path, init: Path | None, size: int, duration: float,
                             first_sequence: int, generation: int) -> None:
        """CODECS, RESOLUTION and FRAME-RATE of the master from a session's first segment itself, whose
        sequence number is `first_sequence` (`generation`: of the sessions when it was published)."""
        try:
            probed = await probe_segment(path, init, partial(niced_child, PROBE_NICENESS))
        finally:
            if generation == self._variants_generation:
                self._probing.discard(name)  # a probe that failed is tried again with the next segment
        # Of an older session (a reconnect came while it ran): it tells about that session's segments,
        # and the new session is still to be probed.
        if generation == self._variants_generation:
            self._unprobed.discard(name)
        variant = self.variants.get(name)
        if variant is None:
            declared = None
            configured = None
            for rendition in self.config.renditions:
                if rendition.name == name:
                    declared = rendition.video_bitrate + self.config.audio.bitrate
                    configured = rendition.codec
            # The peak of the segments published while this probe ran too (they found no variant to raise).
            peak = self.tracks[name].peak_bit_rate or (int(size * 8 / duration) if duration > 0 else 0)
            variant = self.variants[name] = VariantInfo(
                dict(self._stored_sessions.get(name, {})), fallback_codecs(configured, self.config.audio.codec),
                peak_bandwidth=int(peak * BANDWIDTH_HEADROOM), declared_bandwidth=declared)
        variant.sessions[first_sequence] = probed
        self._queue_master()

    def _oldest_named(self, track: RenditionTrack) -> int | None:
        """The sequence number of the first segment in the playlist the master names (index.m3u8): a
        recording's names them all, a LiveJob's its live window."""
        start = 0 if self.config.kind == "RecordJob" else track.window_start
        return track.segments[start].sequence if start < len(track.segments) else None

    def _queue_master(self, complete: bool = False) -> None:
        if any(name not in self.variants for name in self.tracks):
            return  # written once every rendition has its first segment
        if self.config.outputs.master_at_completion and not complete:
            return
        variants = []
        for name, track in self.tracks.items():
            info = self.variants[name]
            codecs, resolution, frame_rate = info.described(self._oldest_named(track))
            bandwidth = max(info.peak_bandwidth, info.declared_bandwidth or 0)
            # A passthrough declares no bit rate: what its segments measure so far.
            average = info.declared_bandwidth or track.average_bit_rate()
            # A vod asset is finished: its master states what all of its segments measure (Apple's
            # authoring rules for VOD want both within 10%), not the ladder's nominal rates.
            measured = track.measured_bit_rates() if complete and self.config.outputs.master_at_completion else None
            if measured is not None:
                bandwidth, average = measured.peak, measured.average
            variants.append(
                Variant(
                    uri=f"{name}/{LIVE_PLAYLIST}",
                    bandwidth=bandwidth,
                    average_bandwidth=average,
                    codecs=codecs,
                    resolution=resolution,
                    frame_rate=frame_rate,
                )
            )
        body = render_master_playlist(variants, independent_segments=not self.config.passthrough).encode()
        if body != self.master_body:
            self.master_body = body
            self.uploader.put_bytes(self.config.key(MASTER_PLAYLIST), body, MASTER_PLAYLIST_CACHE_CONTROL)

    # --- resume and finish ------------------------------------------------------------------------

    def _store_wait_ends(self) -> asyncio.Event:
        """What ends the wait for the store: any stop, but for a LiveJob told to finish (POST /finish:
        switched off, its schedule over) only a signal. It has to close what earlier Pods stored, and
        reads it first, however long the store takes, until its time is up."""
        return self.signalled if self.config.kind == "LiveJob" and self.finishing else self.stop_requested

    async def _resume_from_store(self) -> None:
        """A previous Pod of this job may have published segments: continue its numbering. Only a
        missing playlist means a fresh start; while the store cannot answer, the encoder does not
        start, because numbering from 0 would overwrite the published segments."""
        unread = dict(self.tracks)
        delay = STORE_RETRY_FIRST_SECONDS
        waiting_message = self.status.message
        problem = (ConditionReason.BUCKET_UNREACHABLE, "the store did not answer")
        while unread and not self._store_wait_ends().is_set():
            for name, track in list(unread.items()):
                try:
                    event, live = [await asyncio.to_thread(self._stored_playlist, name, stored_name)
                                   for stored_name in (EVENT_PLAYLIST, LIVE_PLAYLIST)]
                except Exception as error:
                    log.warning("could not read the stored playlist of %s (retrying in %.1fs): %s", name, delay, error)
                    problem = storage_problem(error, self.config.storage.bucket)
                    continue
                del unread[name]
                if self.config.outputs.event_playlist:
                    # The event playlist has every segment, the live one only the window, but either can
                    # name a segment the other does not: the event playlist, once large, is uploaded less
                    # often, and before the live one.
                    stored = [playlist for playlist in (event, live) if playlist]
                else:
                    # A job that recorded before and no longer does: the recording stays as it is.
                    track.recorded = recorded_objects(event) if event else frozenset()
                    stored = [playlist for playlist in (live or event,) if playlist]
                if stored:
                    self._stored_recording_ended |= self.config.kind == "RecordJob" and stored[0].ended
                    RenditionTrack.resume(track, *stored)
                    if self.config.kind == "RecordJob" and name == next(iter(self.tracks)):
                        self.status.recorded_seconds = math.fsum(segment.duration for segment in track.segments)
                    self.status.renditions[name].segments_written = 0
                    log.info("resuming %s at segment %d", name, track.next_sequence)
                    sweep = asyncio.create_task(self._sweep_leftovers(name, track.orphans, track.retention_seconds()))
                    self._sweeps.add(sweep)
                    sweep.add_done_callback(self._sweeps.discard)
            if unread:
                # Before the state: a reader woken by the state sees the reason with it.
                self.status.set_storage_problem((str(problem[0]), problem[1]))
                self.status.set_state(EncoderState.WAITING, f"{problem[1]}: the encoder reads the stored playlists "
                                      "before it takes input, so that numbering continues")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._store_wait_ends().wait(), delay)
                delay = min(delay * 2, STORE_RETRY_MAX_SECONDS)
        if unread:  # stopped before the store answered: nothing is known of what earlier Pods stored
            return
        for behind in keep_in_step(self.tracks.values()):
            log.warning("%s resumes at segment %d, not in step with the job's other renditions: its stored "
                        "playlist lags theirs by more than a live window, or by segments they no longer name",
                        behind.name, behind.next_sequence)
        furthest = max(self.tracks.values(), key=lambda track: track.next_sequence)
        for track in self.tracks.values():
            if furthest.next_sequence and not track.next_sequence:
                track.join(furthest)
                log.info("%s is new to the job: it starts at segment %d with the others", track.name,
                         track.next_sequence)
        # What the stored playlists name, taken now: this Pod's own sessions are probed as they come.
        stored_sessions = {name: track.session_starts(self._oldest_named(track))[-MAX_PROBED_SESSIONS:]
                           for name, track in self.tracks.items()}
        if any(stored_sessions.values()):
            # Apart from the first-segment probes a stop waits for: only a vod asset's master waits on it.
            self._stored_probe = asyncio.create_task(self._probe_stored_sessions(stored_sessions))
        self.status.set_storage_problem(None)
        self.status.store_read = True
        if delay > STORE_RETRY_FIRST_SECONDS and not self.stop_requested.is_set():
            self.status.set_state(EncoderState.WAITING, waiting_message)

    async def _probe_stored_sessions(self, sessions: dict[str, list[tuple[int, Segment]]]) -> None:
        """The sessions an earlier Pod published that the playlists still name (a resumed recording, the
        live window), by rendition: the master lists their codecs, resolution and rate beside this Pod's
        own (RFC 8216 4.3.4.2: every format in the variant). Each from its first segment with media,
        fetched from the bucket, in the background: the ingest does not wait for it."""
        for name, starts in sessions.items():
            directory = self.work_dir / "probe" / name / "stored"
            directory.mkdir(parents=True, exist_ok=True)
            for first, segment in starts:
                try:
                    probed = await probe_stored_segment(self.store, partial(self.config.key, name), segment, directory)
                except Exception as error:  # the master lists what the probes that worked read
                    log.warning("could not probe %s of %s, published by an earlier Pod: %s", segment.uri, name, error)
                    continue
                finally:
                    for each in directory.iterdir():
                        each.unlink()
                self._stored_sessions.setdefault(name, {})[first] = probed
                variant = self.variants.get(name)
                if variant is not None:
                    variant.sessions.setdefault(first, probed)
                    self._queue_master()

    def _stored_playlist(self, rendition: str, name: str) -> MediaPlaylist | None:
        body = self.store.get(self.config.key(rendition, name))
        return numbered_by_name(parse_media_playlist(body.decode())) if body else None

    async def _sweep_leftovers(self, name: str, orphans: Callable[[list[str]], list[str]], wait: float) -> None:
        """Deletes what an earlier Pod retired from the live window and did not live to delete, once a
        player can no longer ask for it (`wait`: when it left the playlist is not known). In the
        background, beside the upload lanes: the ingest does not wait for the listing, and a DVR
        window's worth of deletes does not hold up the segments queued behind it. Left for the next
        Pod when the store cannot answer, or this Pod stops first."""
        try:
            leftovers = orphans(await asyncio.to_thread(self.store.list_names, self.config.key(name)))
            if not leftovers:
                return
            log.info("deleting %d objects of %s that an earlier Pod retired, in %.0fs", len(leftovers), name, wait)
            await asyncio.sleep(wait)
            await asyncio.to_thread(self.store.delete_many, [self.config.key(name, left) for left in leftovers])
        except Exception as error:
            log.warning("could not delete what an earlier Pod left of %s: %s", name, error)

    async def _finish(self) -> int:
        # The grace period runs from the signal (the session's ffmpeg took part of it to stop), or from
        # here when nothing signalled: /finish, the job's end time, the source's end.
        started = time.monotonic()
        grace_from = min(started, self.signalled_at) if self.signalled_at is not None else started
        deadline = grace_from + self.stop_grace_seconds - STOP_SPARE_SECONDS
        for sweep in self._sweeps:
            sweep.cancel()
        if self._background:  # first-segment probes still running: the master waits on them
            await asyncio.wait(self._background, timeout=max(0.0, min(5.0, deadline - time.monotonic())))
        for name, track in self.tracks.items():
            if track.segments:
                self._queue_playlists(name, ended=self.finishing, every=True)
        unwritten = None
        if self.finishing and self.keep_local_segments:
            unwritten = unwritten_mp4s(*await self._write_mp4s(deadline), retried=self._stored_recording_ended)
        if self.finishing:  # after the MP4s: a vod asset's master says it is complete
            if self.config.outputs.master_at_completion and self._stored_probe is not None:
                # Written once: with the earlier Pods' sessions, if they are probed in a share of the
                # grace period that leaves the rest of the finish its time.
                await asyncio.wait([self._stored_probe], timeout=min(STORED_PROBE_WAIT_SECONDS,
                                                                     max(0.0, (deadline - time.monotonic()) / 2)))
            await self._probe_stored_variants()
            if self.config.outputs.master_at_completion:
                await self._size_stored_segments(deadline)
            self._queue_master(complete=True)
        if self.front is not None:
            await self.front.stop()
        uploaded = await asyncio.to_thread(self.uploader.wait_idle, max(0.0, deadline - time.monotonic()))
        # Off the loop, which must stay free to run main's safety exit; a worker stuck in a request the
        # store never answers is left to its daemon thread rather than waited for past the deadline.
        await asyncio.to_thread(self.uploader.stop, max(0.0, deadline - time.monotonic()))
        if not uploaded:
            self.status.set_state(EncoderState.FAILED, "stopped before every segment was uploaded (store down)")
            log.error("exiting with %d uploads pending", self.uploader.pending())
            return self.exit_code(uploaded=False)
        if held := self.uploader.pending():
            log.info("leaving %d deletes of retired segments still in their hold to the job's next Pod", held)
        if unwritten is not None:
            self.status.set_state(EncoderState.FAILED, unwritten[0])
            log.error("%s", unwritten[0])
            return unwritten[1]
        if self.config.kind == "RecordJob" and not self.status.store_read:
            # Stopped while waiting for the store: what earlier attempts recorded is there, unclosed.
            self.status.set_state(EncoderState.FAILED, "stopped before the stored recording could be read (store "
                                  "down): the next attempt reads and finishes it")
            return EXIT_INTERRUPTED
        if self.config.kind == "RecordJob" and self.finishing and not any(
                with_media(track.segments) for track in self.tracks.values()):
            # Not Completed with a master, playlists and MP4 that were never written.
            why = ("the recording was paused for the whole of its time range" if self.status.paused_ranges
                   else "no media came from the source in the time range")
            self.status.set_state(EncoderState.FAILED, f"nothing was recorded: {why}")
            log.error("%s", self.status.message)
            return EXIT_BAD_CONFIG
        for rendition in self.status.renditions.values():
            rendition.status = "Completed"
        if self.config.kind == "LiveJob" and self.finishing and not self.status.store_read:
            # Nothing was closed: the operator does not take the playlists for closed.
            self.status.set_state(EncoderState.COMPLETED, "stopped before the stored playlists could be read (store "
                                  "down): they stay open")
            return self.exit_code()
        self.status.set_state(EncoderState.COMPLETED, FINISHED_MESSAGE if self.finishing else "stopped")
        return self.exit_code()

    async def _probe_stored_variants(self) -> None:
        """The master needs every rendition probed. One this process published nothing of (a recording
        continued after an eviction that ends at once) is probed from its last stored segment."""
        for name, track in self.tracks.items():
            segment = next((segment for segment in reversed(track.segments) if not segment.gap), None)
            if name in self.variants or name in self._probing or segment is None:
                continue
            directory = self.work_dir / "probe" / name
            directory.mkdir(parents=True, exist_ok=True)
            try:
                path = await asyncio.to_thread(fetch_segment, self.store, partial(self.config.key, name), segment,
                                               directory)
            except Exception as error:
                log.error("no master: %s could not be probed from the bucket: %s", name, error)
                continue
            init = directory / segment.init_uri if segment.init_uri else None
            await self._probe_variant(name, path, init, path.stat().st_size, segment.duration, segment.sequence,
                                      self._variants_generation)

    async def _size_stored_segments(self, deadline: float) -> None:
        """The sizes of the segments earlier Pods recorded, for the measured bit rates of a vod asset's
        master; without them (the store cannot list in time) the master keeps the nominal rates."""
        for name, track in self.tracks.items():
            if all(segment.size_bytes is not None or segment.gap for segment in track.segments):
                continue
            try:
                sizes = await asyncio.wait_for(asyncio.to_thread(self.store.sizes, self.config.key(name)),
                                               max(0.1, min(10.0, deadline - time.monotonic())))
            except Exception as error:
                log.warning("the master of %s states nominal bit rates: the store did not list it: %r", name, error)
                continue
            track.add_stored_sizes(sizes)

    def exit_code(self, uploaded: bool = True) -> int:
        """A recording stopped before its end (a bare SIGTERM: an eviction, a drain), or at its end
        with uploads left behind (the store down: the closed playlists, the MP4s, a vod asset's master),
        is not done: the operator starts another attempt, which continues its playlists from the
        bucket, and finishes them, its end being past."""
        if self.config.kind == "RecordJob" and not (self.finishing and uploaded):
            return EXIT_INTERRUPTED
        return EXIT_OK

    async def _write_mp4s(self, deadline: float) -> tuple[list[str], list[str]]:
        """RecordJob with format mp4: one MP4 per rendition from the recorded segments, no re-encode.
        Segments an earlier attempt recorded (before an eviction) are fetched back from the store.
        Returns those not written, as unwritten_mp4s takes them."""
        missing: list[str] = []
        impossible: list[str] = []
        for name, track in self.tracks.items():
            recorded_media = with_media(track.segments)
            if not recorded_media:
                continue
            directory = self.work_dir / "mp4" / name
            directory.mkdir(parents=True, exist_ok=True)
            recorded = {segment.sequence: path for segment, path in self.local_segments[name]}
            paths: list[Path] = []
            try:
                for segment in recorded_media:
                    path = recorded.get(segment.sequence)
                    if path is None:
                        path = await asyncio.to_thread(fetch_segment, self.store, partial(self.config.key, name),
                                                       segment, directory)
                    paths.append(path)
                mp4 = directory / f"{name}.mp4"
                if await write_mp4(paths, recorded_media, directory, mp4, deadline):
                    self.uploader.put_file(self.config.key(f"{name}.mp4"), mp4)
                else:
                    missing.append(name)
            except Mp4Impossible as error:  # the HLS recording stands; only its MP4 copy is missing
                log.error("no MP4 of %s: %s", name, error)
                impossible.append(f"{name}: {error}")
            except Exception as error:
                log.error("no MP4 of %s: %s", name, error)
                missing.append(name)
        return missing, impossible


def redacted(argv: list[str], *secrets: str | None) -> str:
    return redacted_text(" ".join(argv), *secrets)


def redacted_text(text: str, *secrets: str | None) -> str:
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text


def spool_limit_from_env() -> int:
    return int(os.environ.get("ONAIR_SPOOL_MAX_BYTES", str(2 * 1024**3)))
