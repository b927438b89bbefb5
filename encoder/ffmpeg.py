"""ffmpeg command lines and ffmpeg output parsing. Pure functions, no processes.

One ffmpeg process per ingest session: it decodes the input once, `split`s the decoded video into
one scaler and one encoder per rendition, encodes the audio once, and writes each rendition (its video
and that one audio) with its own hls muxer, behind a tee, into a local directory (a passthrough is two
processes instead: passthrough.py). The pipeline watches those local playlists and publishes the
segments; ffmpeg's own playlists never leave the Pod.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from onair.models import AudioCodec, Rendition, VideoCodec

from .config import JobConfig
from .playlist import MediaPlaylist, Segment

LOCAL_PLAYLIST = "local.m3u8"
SEGMENT_PATTERN = "seg_%06d"
LOCAL_PLAYLIST_ENTRIES = 30

# Faster than real time on 2 cores for a 3-rendition 720p ladder (x264 veryfast); the template has
# no preset field, and quality is steered by bitrate/CRF.
X264_PRESET = "veryfast"
X265_PRESET = "ultrafast"


@dataclass(frozen=True)
class SessionOutput:
    """Where one rendition of one ingest session goes on local disk."""

    rendition: str
    directory: Path
    segment_extension: str  # "ts" or "m4s"
    init_name: str | None  # fMP4 init segment file name, None for MPEG-TS

    @property
    def local_playlist(self) -> Path:
        return self.directory / LOCAL_PLAYLIST


def uses_fmp4(rendition: Rendition | None, audio_codec: AudioCodec) -> bool:
    """HEVC and VP9 go in fragmented MP4 (Apple's HLS spec; MPEG-TS cannot carry VP9), as does Opus."""
    if audio_codec == AudioCodec.OPUS:
        return True
    return rendition is not None and rendition.codec in (VideoCodec.HEVC, VideoCodec.VP9)


def session_outputs(
    config: JobConfig, session_dir: Path, session: int, passthrough_fmp4: bool = False,
    staying_fmp4: Collection[str] = (),
) -> list[SessionOutput]:
    """`passthrough_fmp4`: a passthrough's segment type, which its source's codec decides (passthrough.py).
    `staying_fmp4`: renditions whose playlists name an fMP4 segment already. They stay fMP4 (H.264 too):
    an EXT-X-MAP applies to every segment after it, so MPEG-TS segments cannot follow (the template
    changed from HEVC to H.264 under a job whose next Pod continues its playlists)."""
    outputs = []
    renditions: list[Rendition | None] = list(config.renditions) or [None]
    for rendition, name in zip(renditions, config.rendition_names, strict=True):
        fmp4 = passthrough_fmp4 if config.passthrough else (
            uses_fmp4(rendition, config.audio.codec) or name in staying_fmp4)
        outputs.append(
            SessionOutput(
                rendition=name,
                directory=session_dir / name,
                segment_extension="m4s" if fmp4 else "ts",
                # The session number is in the name: each ffmpeg run has its own init segment.
                init_name=f"init_{session:04d}.mp4" if fmp4 else None,
            )
        )
    return outputs


def gop_seconds(rendition: Rendition, segment_seconds: int) -> float:
    """Keyframe interval: the template's GOP if it divides the segment duration, else the segment
    duration, so that every segment boundary falls on a keyframe in every rendition."""
    gop = rendition.gop_seconds
    ratio = segment_seconds / gop
    return gop if abs(ratio - round(ratio)) < 1e-6 else float(segment_seconds)


NVENC_ENCODERS = {VideoCodec.H264: "h264_nvenc", VideoCodec.HEVC: "hevc_nvenc"}


def nvenc_available(ffmpeg: str = "ffmpeg", device: Path = Path("/dev/nvidiactl")) -> bool:
    """An NVIDIA device in the container and an ffmpeg built with NVENC: both are needed."""
    if not device.exists():
        return False
    try:
        listing = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return all(name in listing.stdout for name in NVENC_ENCODERS.values())


def available_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> float:
    """The CPUs this process may use: its affinity, capped by its cgroup's CPU quota (a Pod's limit),
    which the thread counts of libraries that count the machine's cores do not see."""
    cpus = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = cgroup_cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return max(1.0, cpus)


def x264_threads(renditions: list[Rendition], cpus: float) -> list[int]:
    """Threads for each rendition's encoder. x264 alone takes 1.5 threads per core, counting the
    node's cores, not the Pod's CPU limit: a 3-rendition ladder on a 64-core node would start nearly
    300 threads for 2 CPUs. Each encoder gets that budget for the CPUs this process may use, in
    proportion to its share of the ladder's pixel rate, at least one."""
    rates = [rendition.width * rendition.height * rendition.fps for rendition in renditions]
    return [max(1, math.floor(1.5 * cpus * rate / sum(rates) + 0.5)) for rate in rates]


def video_codec_args(
    rendition: Rendition, segment_seconds: int, nvenc: bool = False, *, stream: str = ":v", threads: int | None = None
) -> list[str]:
    """The encoder options of one rendition's video stream (`stream`: its specifier in the output);
    `nvenc`: H.264 and HEVC on the GPU; `threads`: libx264's thread count (None: its own default)."""
    fps = rendition.fps
    keyint = max(1, round(fps * gop_seconds(rendition, segment_seconds)))
    bitrate = rendition.video_bitrate
    rate_control: list[str]
    if rendition.crf is not None:
        rate_control = [f"-crf{stream}", str(rendition.crf), f"-maxrate{stream}", str(bitrate)]
    else:
        rate_control = [f"-b{stream}", str(bitrate), f"-maxrate{stream}", str(round(bitrate * 1.1))]
    rate_control += [f"-bufsize{stream}", str(bitrate * 2)]
    # Keyframes on the segment grid in every rendition: one forced at each multiple of the segment
    # duration, a fixed GOP in between, and no scene-cut keyframes that would drift the GOPs apart.
    force = ["-force_key_frames" + stream, f"expr:gte(t,n_forced*{segment_seconds})"]
    if nvenc and rendition.codec in NVENC_ENCODERS:
        return _nvenc_args(rendition, keyint, bitrate, stream) + force
    match rendition.codec:
        case VideoCodec.H264:
            args = ["-c" + stream, "libx264", "-preset" + stream, X264_PRESET]
            if threads is not None:
                args += ["-threads" + stream, str(threads)]
            if rendition.profile:
                args += ["-profile" + stream, rendition.profile.value]
            args += ["-g" + stream, str(keyint), "-keyint_min" + stream, str(keyint), "-sc_threshold" + stream, "0"]
            args += ["-pix_fmt" + stream, "yuv420p"]
        case VideoCodec.HEVC:
            args = ["-c" + stream, "libx265", "-preset" + stream, X265_PRESET, "-tag" + stream, "hvc1"]
            if rendition.profile:
                args += ["-profile" + stream, rendition.profile.value]
            # x265 ignores a forced keyframe closer than min-keyint to the last one, and at 29.97 fps
            # the grid's keyframes are sometimes one frame closer than round(fps * gop): its GOP would
            # drift off the grid (a frame every 33 s). scenecut=0 keeps it from adding keyframes of
            # its own; forced ones are IDR, as segment starts must be.
            params = f"keyint={keyint}:min-keyint=1:scenecut=0:open-gop=0:log-level=error"
            args += ["-x265-params" + stream, params, "-forced-idr" + stream, "1"]
            args += ["-pix_fmt" + stream, "yuv420p10le" if rendition.profile == "main10" else "yuv420p"]
        case VideoCodec.VP9:
            args = ["-c" + stream, "libvpx-vp9", "-deadline" + stream, "realtime", "-cpu-used" + stream, "8"]
            args += ["-row-mt" + stream, "1", "-g" + stream, str(keyint), "-keyint_min" + stream, str(keyint)]
            args += ["-pix_fmt" + stream, "yuv420p"]
    return args + rate_control + force


def _nvenc_args(rendition: Rendition, keyint: int, bitrate: int, stream: str) -> list[str]:
    args = ["-c" + stream, NVENC_ENCODERS[rendition.codec], "-preset" + stream, "p4", "-tune" + stream, "ll"]
    if rendition.codec == VideoCodec.HEVC:
        args += ["-tag" + stream, "hvc1"]
    if rendition.profile:
        args += ["-profile" + stream, rendition.profile.value]
    # Forced keyframes must be IDR frames and no scene cut may add one: aligned segments, as in software.
    args += ["-g" + stream, str(keyint), "-strict_gop" + stream, "1", "-no-scenecut" + stream, "1",
             "-forced-idr" + stream, "1"]
    if rendition.crf is not None:  # constant quality, NVENC's -cq
        args += ["-rc" + stream, "vbr", "-cq" + stream, str(rendition.crf), "-maxrate" + stream, str(bitrate)]
    else:
        args += ["-rc" + stream, "cbr", "-b" + stream, str(bitrate), "-maxrate" + stream, str(bitrate)]
    args += ["-bufsize" + stream, str(bitrate * 2)]
    args += ["-pix_fmt" + stream, "p010le" if rendition.profile == "main10" else "yuv420p"]
    return args


def audio_codec_args(config: JobConfig) -> list[str]:
    audio = config.audio
    codec = "libopus" if audio.codec == AudioCodec.OPUS else "aac"
    return ["-c:a", codec, "-b:a", str(audio.bitrate), "-ar", str(audio.sample_rate), "-ac", str(audio.channels)]


def hls_muxer_options(output: SessionOutput, segment_seconds: int, start_number: int) -> list[tuple[str, str]]:
    """The hls muxer's options for one rendition's local directory."""
    options = [
        ("hls_time", str(segment_seconds)),
        # A short local window: the encoder reads it on every change, and keeps the real playlists.
        ("hls_list_size", str(LOCAL_PLAYLIST_ENTRIES)),
        # temp_file: segments and the local playlist appear by rename, so the watcher never reads a
        # half-written playlist or uploads a half-written segment.
        ("hls_flags", "program_date_time+independent_segments+temp_file"),
        ("start_number", str(start_number)),
        ("hls_segment_filename", str(output.directory / f"{SEGMENT_PATTERN}.{output.segment_extension}")),
    ]
    if output.init_name:
        options += [("hls_segment_type", "fmp4"), ("hls_fmp4_init_filename", output.init_name)]
    return options


def hls_muxer_args(output: SessionOutput, segment_seconds: int, start_number: int) -> list[str]:
    """One output file of hls: the muxer's options on the command line."""
    args = ["-f", "hls"]
    for name, value in hls_muxer_options(output, segment_seconds, start_number):
        args += ["-" + name, value]
    return [*args, str(output.local_playlist)]


# What a backslash escapes: in a tee slave's option value, and in a slave within the tee's list.
TEE_OPTION_SPECIAL = "\\':=[]|"
TEE_SLAVE_SPECIAL = "\\'|"


def _escaped(text: str, special: str) -> str:
    return "".join("\\" + character if character in special else character for character in text)


def tee_slave(output: SessionOutput, streams: str, segment_seconds: int, start_number: int) -> str:
    """One hls output of a tee muxer: the streams it takes (`streams`, a stream specifier list such as
    "v:1,a") and the muxer's options. Option values are escaped for the tee's option parser, and the
    whole slave for its splitting on "|" (libavformat/tee.c: both levels take backslash escapes)."""
    options = [("select", streams), ("f", "hls"), *hls_muxer_options(output, segment_seconds, start_number)]
    inner = ":".join(f"{name}={_escaped(value, TEE_OPTION_SPECIAL)}" for name, value in options)
    return _escaped(f"[{inner}]{output.local_playlist}", TEE_SLAVE_SPECIAL)


PULL_READ_TIMEOUT_US = 10_000_000  # ffmpeg's -rw_timeout, in microseconds
# A live HLS source with no new segment for this many of its target durations has frozen (its origin
# died without EXT-X-ENDLIST).
FROZEN_SOURCE_SEGMENTS = 3
# ffmpeg reloads a playlist with no new segment every half target duration; after this many reloads
# it ends its input, as at an ENDLIST, and closes the segment it was writing. Stopped by us instead, it
# would not: one SIGINT does not interrupt the demuxer's reload wait, and it is killed.
PULL_HOLD_RELOADS = 2 * FROZEN_SOURCE_SEGMENTS


def input_args(input_url: str, *, live_listener: bool, input_format: str | None = None,
               guard_options: Sequence[str] = ()) -> list[str]:
    """Reading the ingest. Short probing: the state turns Live (SRT) when ffmpeg reports the input,
    and the first segment should not wait for a long analysis. `guard_options`: a pull's, from the
    pull guard (PullGuard.ffmpeg_input): for HLS, what keeps every request of it inside the guard (the
    HLS demuxer passes them on to its playlists, segments and keys); for rtmps, the guard's tunnel;
    for rtmp, the tcUrl that keeps the name."""
    args = ["-analyzeduration", "1500000", "-probesize", "2000000"]
    if input_format:  # a pipe has no name to guess the format from
        args += ["-f", input_format]
    if not live_listener and input_url.startswith(("http://", "https://")):
        # An HLS pull: start at the live edge rather than three segments back; reconnect on errors; an
        # origin that takes the request and never answers ends the session (and the pull is tried again),
        # and so does a playlist that stopped giving new segments.
        args += ["-live_start_index", "-1", "-reconnect", "1", "-reconnect_streamed", "1",
                 "-rw_timeout", str(PULL_READ_TIMEOUT_US), "-m3u8_hold_counters", str(PULL_HOLD_RELOADS)]
    return [*args, *guard_options, "-i", input_url]


def build_session_argv(
    config: JobConfig,
    input_url: str,
    outputs: list[SessionOutput],
    start_numbers: dict[str, int],
    *,
    live_listener: bool,
    input_format: str | None = None,
    ffmpeg: str = "ffmpeg",
    nvenc: bool = False,
    cpus: float = 2.0,
    guard_options: Sequence[str] = (),
) -> list[str]:
    """The whole ffmpeg command of one ingest session (`nvenc`: the template asks for NVENC and this
    machine has it; `input_format`: the input's demuxer, for a pipe; `cpus`: what the encoders may use,
    available_cpus(); `guard_options`: see input_args)."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "info", "-nostats", "-progress", "pipe:1"]
    argv += ["-stats_period", "0.5"]
    argv += input_args(input_url, live_listener=live_listener, input_format=input_format,
                       guard_options=guard_options)
    segment_seconds = config.segment_seconds
    if config.passthrough:
        raise ValueError("a passthrough session is a remux and a packager process: see passthrough.py")
    renditions = config.renditions
    graph = [f"[0:v:0]split={len(renditions)}" + "".join(f"[split{index}]" for index in range(len(renditions)))]
    for index, rendition in enumerate(renditions):
        graph.append(
            f"[split{index}]fps={rendition.fps:g},scale={rendition.width}:{rendition.height},setsar=1[video{index}]"
        )
    argv += ["-filter_complex", ";".join(graph)]
    # One output, a tee: video stream i is rendition i's, and the one audio stream, encoded once, goes
    # into every rendition (each rendition's segments carry audio and video, as players expect of a
    # ladder without separate audio renditions).
    for index in range(len(renditions)):
        argv += ["-map", f"[video{index}]"]
    argv += ["-map", "0:a:0?"]
    threads = x264_threads(list(renditions), cpus)
    for index, rendition in enumerate(renditions):
        argv += video_codec_args(rendition, segment_seconds, nvenc, stream=f":v:{index}", threads=threads[index])
    argv += audio_codec_args(config)
    slaves = [tee_slave(output, f"v:{index},a", segment_seconds, start_numbers[output.rendition])
              for index, output in enumerate(outputs)]
    return [*argv, "-f", "tee", "|".join(slaves)]


# --- Parsing ffmpeg's output -------------------------------------------------------------------


def unhandled_local_segments(local: MediaPlaylist, handled: int | None) -> tuple[list[Segment], range]:
    """The segments of ffmpeg's local playlist (a sliding window of LOCAL_PLAYLIST_ENTRIES) after the
    last one handled, and the sequence numbers that slid out of the window unseen (normally none)."""
    fresh = [segment for segment in local.segments if handled is None or segment.sequence > handled]
    if handled is None or not fresh:
        return fresh, range(0)
    return fresh, range(handled + 1, fresh[0].sequence)


# FLV codec ids, which the REST statistics use for every protocol (as the /stats reference does).
FLV_VIDEO_CODEC_IDS = {"h263": 2, "flv1": 2, "vp6f": 4, "vp6": 4, "h264": 7, "hevc": 12, "av1": 13, "vp9": 14}
FLV_AUDIO_CODEC_IDS = {"pcm_s16le": 3, "mp3": 2, "nellymoser": 6, "pcm_alaw": 7, "pcm_mulaw": 8, "aac": 10,
                       "speex": 11, "opus": 13}
_SAMPLE_BITS = {"u8": 8, "s16": 16, "s16p": 16, "s32": 32, "s32p": 32, "flt": 32, "fltp": 32, "dbl": 64, "dblp": 64}

_STREAM_LINE = re.compile(r"^\s*Stream #0:\d+(?:\[[^\]]*\])?(?:\([^)]*\))?: (Video|Audio): (.*)$")


@dataclass
class InputStatistics:
    """The ingest statistics of the status endpoint (the fields of the REST /stats resource)."""

    width: int | None = None
    height: int | None = None
    framerate: float | None = None
    video_data_rate: int | None = None  # kbit/s
    video_codec_id: int | None = None
    audio_data_rate: int | None = None  # kbit/s
    audio_sample_rate: int | None = None
    audio_sample_size: int | None = None
    audio_codec_id: int | None = None
    audio_channels: int | None = None
    stereo: bool | None = None
    encoder: str | None = None
    video_codec: str | None = None
    audio_codec: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "framerate": self.framerate,
            "videoDataRate": self.video_data_rate,
            "videoCodecId": self.video_codec_id,
            "audioDataRate": self.audio_data_rate,
            "audioSampleRate": self.audio_sample_rate,
            "audioSampleSize": self.audio_sample_size,
            "audioCodecId": self.audio_codec_id,
            "audioChannels": self.audio_channels,
            "stereo": self.stereo,
            "encoder": self.encoder,
        }


def _split_top_level(text: str) -> list[str]:
    """Split ffmpeg's stream description on commas outside parentheses/brackets."""
    parts, depth, current = [], 0, ""
    for character in text:
        if character in "([":
            depth += 1
        elif character in ")]":
            depth -= 1
        if character == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += character
    if current.strip():
        parts.append(current.strip())
    return parts


def parse_input_statistics(stderr_lines: list[str]) -> InputStatistics | None:
    """Ingest statistics from ffmpeg's description of input #0 (its stderr at loglevel info). None
    until ffmpeg has described the input."""
    statistics: InputStatistics | None = None
    in_input = in_metadata = False
    for line in stderr_lines:
        if line.startswith("Input #0"):
            statistics, in_input = InputStatistics(), True
            continue
        if line.startswith(("Output #", "Input #1", "Stream mapping:")):
            in_input = False
        if not in_input or statistics is None:
            continue
        stripped = line.strip()
        if stripped == "Metadata:" and line.startswith("  ") and not line.startswith("    "):
            in_metadata = True
            continue
        if in_metadata and line.startswith("    ") and ":" in stripped:
            key, value = (part.strip() for part in stripped.split(":", 1))
            if key == "encoder" and statistics.encoder is None:
                statistics.encoder = value
            continue
        in_metadata = False
        match = _STREAM_LINE.match(line)
        if not match:
            continue
        kind, description = match.groups()
        parts = _split_top_level(description)
        codec = parts[0].split()[0] if parts else ""
        if kind == "Video" and statistics.video_codec is None:
            statistics.video_codec = codec
            statistics.video_codec_id = FLV_VIDEO_CODEC_IDS.get(codec)
            for part in parts[1:]:
                size = re.match(r"^(\d+)x(\d+)", part)
                if size and statistics.width is None:
                    statistics.width, statistics.height = int(size.group(1)), int(size.group(2))
                elif part.endswith(" kb/s"):
                    statistics.video_data_rate = int(float(part.split()[0]))
                elif part.endswith(" fps"):
                    statistics.framerate = float(part.split()[0])
                elif part.endswith(" tbr") and statistics.framerate is None:
                    statistics.framerate = float(part.split()[0].rstrip("k"))
        elif kind == "Audio" and statistics.audio_codec is None:
            statistics.audio_codec = codec
            statistics.audio_codec_id = FLV_AUDIO_CODEC_IDS.get(codec)
            for part in parts[1:]:
                if part.endswith(" Hz"):
                    statistics.audio_sample_rate = int(part.split()[0])
                elif part in ("mono", "stereo") or "channels" in part or part.startswith(("5.1", "7.1")):
                    statistics.audio_channels = {"mono": 1, "stereo": 2}.get(part) or _channel_count(part)
                    statistics.stereo = part == "stereo"
                elif part.endswith(" kb/s"):
                    statistics.audio_data_rate = int(float(part.split()[0]))
                elif part.split(" ")[0] in _SAMPLE_BITS:
                    statistics.audio_sample_size = _SAMPLE_BITS[part.split(" ")[0]]
    return statistics


def _channel_count(layout: str) -> int | None:
    match = re.match(r"^(\d+) channels", layout)
    if match:
        return int(match.group(1))
    match = re.match(r"^(\d+)\.(\d+)", layout)
    return int(match.group(1)) + int(match.group(2)) if match else None


@dataclass
class Progress:
    """One block of `-progress` output."""

    values: dict[str, str] = field(default_factory=dict)

    @property
    def frame(self) -> int:
        return int(self.values.get("frame", "0") or 0)

    @property
    def dropped_frames(self) -> int:
        return int(self.values.get("drop_frames", "0") or 0)

    @property
    def out_time_seconds(self) -> float | None:
        micros = self.values.get("out_time_us") or self.values.get("out_time_ms")
        if micros is None or not micros.lstrip("-").isdigit():
            return None
        return int(micros) / 1_000_000

    @property
    def speed(self) -> float | None:
        speed = self.values.get("speed", "").rstrip("x").strip()
        try:
            return float(speed)
        except ValueError:
            return None

    @property
    def ended(self) -> bool:
        return self.values.get("progress") == "end"


class ProgressParser:
    """Feeds `-progress pipe:1` lines; returns a Progress at the end of each block."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def feed(self, line: str) -> Progress | None:
        key, _, value = line.strip().partition("=")
        if not key:
            return None
        self._values[key] = value.strip()
        if key == "progress":
            block, self._values = Progress(self._values), {}
            return block
        return None
