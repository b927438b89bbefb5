"""Pure parts of the encoder: ffmpeg command lines, playlists, numbering, the ordered upload queue."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError
from localplatform.processes import free_port

from onair.encoder import main as encoder_main
from onair.encoder.clip import lost_beginning, stored_segments, to_common_end
from onair.encoder.config import ConfigError, IngestKind, load_job_config
from onair.encoder.ffmpeg import (
    ProgressParser,
    available_cpus,
    build_session_argv,
    gop_seconds,
    nvenc_available,
    parse_input_statistics,
    session_outputs,
    unhandled_local_segments,
    x264_threads,
)
from onair.encoder.hlssource import HEAD_BYTES, TAIL_BYTES, HlsSource, PlaylistReader, is_hls_url, read_hls_source
from onair.encoder.pipeline import Encoder, Ports, redacted
from onair.encoder.playlist import (
    MeasuredBitRates,
    MediaPlaylist,
    Segment,
    Variant,
    codec_tag,
    fallback_codecs,
    measured_bit_rates,
    parse_master_playlist,
    parse_media_playlist,
    render_master_playlist,
    render_media_playlist,
    renumbered_for_clip,
    select_clip_segments,
    target_duration,
)
from onair.encoder.rtmp import RtmpFrontConfig, render_nginx_config
from onair.encoder.status import RenditionStatus
from onair.encoder.tracks import (
    EVENT_PLAYLIST_BYTES_PER_SECOND,
    RenditionTrack,
    numbered_by_name,
    recorded_objects,
)
from onair.encoder.upload import UploadQueue, content_type_for, percentile, storage_problem
from onair.models import AudioCodec, Rendition, VideoCodec

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
TEMPLATE = {
    "id": 1, "name": "ladder", "segmentDurationSeconds": 4, "playlistWindow": 3,
    "renditions": [
        {"name": "720p", "width": 1280, "height": 720, "fps": 30, "videoBitrate": 3_000_000, "profile": "high"},
        {"name": "480p", "width": 854, "height": 480, "fps": 30, "videoBitrate": 1_200_000, "codec": "HEVC"},
        {"name": "240p", "width": 426, "height": 240, "fps": 30, "videoBitrate": 400_000, "codec": "VP9"},
    ],
}  # fmt: skip


def environment(kind: str = "LiveJob", spec: dict[str, object] | None = None, template: object = TEMPLATE,
                **extra: str) -> dict[str, str]:
    spec = spec or {"jobTemplateId": 1, "input": {"serverType": "RTMP"}, "destination": {"bucket": "media"}}
    config = {"kind": kind, "namespace": "ns", "name": "job", "attempt": 1, "spec": spec, "template": template,
              "storage": {"endpoint": "http://s3:8333", "bucket": "media", "prefix": "live/job", "region": "x"},
              "clip": None}
    return {"ONAIR_JOB_CONFIG": json.dumps(config), "ONAIR_STREAM_KEY": "key", "ONAIR_LISTEN_HOST": "127.0.0.9",
            **extra}


# --- configuration ---------------------------------------------------------------------------------

SRT_SPEC = {"jobTemplateId": 1, "input": {"serverType": "SRT"}, "destination": {"bucket": "media"}}


def test_config_of_an_rtmp_live_job() -> None:
    config = load_job_config(environment())
    assert config.ingest.kind == IngestKind.RTMP_LISTEN
    assert config.rendition_names == ["720p", "480p", "240p"]
    assert config.segment_seconds == 4 and config.listen_host == "127.0.0.9"
    assert config.key("720p", "index.m3u8") == "live/job/720p/index.m3u8"


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"ONAIR_JOB_CONFIG": "not json"},
        environment(template={"id": 1, "name": "x", "renditions": []}),
        {**environment(), "ONAIR_STREAM_KEY": ""},
        environment(kind="RecordJob", spec={"source": {"liveJobRef": "a"}, "output": {"bucket": "media"}}),
        {**environment(), "ONAIR_SRT_PASSPHRASE": "short"},
        {**environment(spec=SRT_SPEC), "ONAIR_STREAM_KEY": ""},
        {**environment(spec=SRT_SPEC), "ONAIR_STREAM_KEY": "", "ONAIR_SRT_PASSPHRASE": "a-passphrase"},
        {**environment(spec=SRT_SPEC), "ONAIR_STREAM_KEY": "short-key"},
        {**environment(), "ONAIR_TERMINATION_GRACE_SECONDS": "9"},
        {**environment(), "ONAIR_TERMINATION_GRACE_SECONDS": "30s"},
    ],
    ids=["missing", "not-json", "no-renditions", "rtmp-without-key", "clip-without-clip", "short-passphrase",
         "srt-without-key-or-passphrase", "srt-without-key-for-the-streamid", "srt-key-too-short-for-a-passphrase",
         "grace-period-too-short", "grace-period-not-seconds"],
)
def test_configs_that_can_never_work_raise_config_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_job_config(environ)


def test_srt_live_job_needs_the_key_and_a_passphrase_or_a_key_that_can_be_one() -> None:
    """The streamid is checked against the key; the passphrase is the job's, else the key itself."""
    assert load_job_config({**environment(spec=SRT_SPEC), "ONAIR_STREAM_KEY": "key"}
                           | {"ONAIR_SRT_PASSPHRASE": "a-passphrase"}).ingest.kind == IngestKind.SRT_LISTEN
    assert load_job_config({**environment(spec=SRT_SPEC), "ONAIR_STREAM_KEY": "0" * 36}).srt_passphrase is None


async def test_a_recording_that_follows_its_live_job_created_paused_is_paused_from_its_start(tmp_path: Path) -> None:
    spec = {"source": {"liveJobRef": "news"}, "timeRange": {"start": "2026-11-23T12:00:00Z"},
            "output": {"bucket": "media"}, "paused": True}
    env = environment("RecordJob", spec, None)
    envelope = json.loads(env["ONAIR_JOB_CONFIG"])
    envelope["clip"] = {"sourcePrefix": "live/news", "start": "2026-11-23T12:00:00Z"}
    following = load_job_config({**env, "ONAIR_JOB_CONFIG": json.dumps(envelope)})
    status = Encoder(following, Ports(), tmp_path, None, 10**6).status  # type: ignore[arg-type]
    assert status.paused and status.paused_ranges == [(datetime(2026, 11, 23, 12, tzinfo=UTC), None)]
    # A retry continues the ranges it is given, the open one included.
    envelope["pausedRanges"] = [{"start": "2026-11-23T12:00:00Z", "end": "2026-11-23T12:05:00Z"},
                                {"start": "2026-11-23T12:09:00Z"}]
    retried = load_job_config({**env, "ONAIR_JOB_CONFIG": json.dumps(envelope)})
    status = Encoder(retried, Ports(), tmp_path, None, 10**6).status  # type: ignore[arg-type]
    assert status.paused and [end for _, end in status.paused_ranges] == [datetime(2026, 11, 23, 12, 5, tzinfo=UTC),
                                                                          None]


def test_a_stop_takes_all_but_five_seconds_of_the_pods_grace_period(tmp_path: Path) -> None:
    assert Encoder(load_job_config(environment()), Ports(), tmp_path, None,  # type: ignore[arg-type]
                   10**6).stop_grace_seconds == 25
    config = load_job_config({**environment(), "ONAIR_TERMINATION_GRACE_SECONDS": "600"})
    assert config.termination_grace_seconds == 600
    assert Encoder(config, Ports(), tmp_path, None, 10**6).stop_grace_seconds == 595  # type: ignore[arg-type]


def test_record_job_on_a_stream_url_is_a_pausable_pull() -> None:
    spec = {"source": {"streamUrl": "srt://source:9000"}, "output": {"bucket": "media", "format": "mp4"},
            "paused": True}
    config = load_job_config(environment("RecordJob", spec, None))
    assert config.ingest.kind == IngestKind.PULL and config.passthrough
    assert config.outputs.pausable and config.outputs.keep_all_segments and config.start_paused


# --- ffmpeg command lines --------------------------------------------------------------------------


def test_ladder_is_one_decode_split_into_scaled_renditions_with_aligned_keyframes(tmp_path: Path) -> None:
    config = load_job_config(environment())
    outputs = session_outputs(config, tmp_path, 3)
    argv = build_session_argv(config, "rtmp://in", outputs, {"720p": 7, "480p": 7, "240p": 7}, live_listener=False)
    assert argv.count("-i") == 1
    graph = argv[argv.index("-filter_complex") + 1]
    assert graph.startswith("[0:v:0]split=3[split0][split1][split2]")
    assert "scale=1280:720" in graph and "scale=854:480" in graph and "scale=426:240" in graph
    assert argv.count("expr:gte(t,n_forced*4)") == 3  # a keyframe at every segment boundary, every rendition
    codecs = [argv[i + 1] for i, arg in enumerate(argv) if arg.startswith("-c:v:")]
    assert codecs == ["libx264", "libx265", "libvpx-vp9"]
    assert argv[argv.index("-sc_threshold:v:0") + 1] == "0"
    # x265: 30 fps x 2 s GOP, no scene cuts, forced keyframes IDR (tests/media/test_keyframe_grid.py
    # shows they stay on the grid)
    assert "keyint=60:min-keyint=1:scenecut=0" in " ".join(argv) and "-forced-idr:v:1" in argv
    # One audio encoder, and one tee output whose hls muxers each take a video stream and that audio
    # (tests/media/test_ladder_command.py runs it).
    assert argv.count("-c:a") == 1 and argv.count("-map") == 4 and argv[-3:-1] == ["-f", "tee"]
    slaves = argv[-1].split("|")
    assert [slave[: slave.index(":f=hls")] for slave in slaves] == [f"[select=v\\\\:{i},a" for i in range(3)]
    assert all(":start_number=7:" in slave for slave in slaves)
    assert [output.segment_extension for output in outputs] == ["ts", "m4s", "m4s"]
    assert outputs[1].init_name == "init_0003.mp4"
    assert [":hls_fmp4_init_filename=init_0003.mp4]" in slave for slave in slaves] == [False, True, True]


def test_a_rendition_whose_playlist_names_fmp4_segments_stays_fmp4(tmp_path: Path) -> None:
    """The template went from HEVC to H.264 under the job: the next Pod continues the stored playlist,
    whose EXT-X-MAP would cover MPEG-TS segments after it. H.264 goes into fMP4 there instead."""
    config = load_job_config(environment())
    encoder = Encoder(config, Ports(), tmp_path, None, 10**6)  # type: ignore[arg-type]
    assert encoder.renditions_in_fmp4() == []
    encoder.tracks["720p"].add(4.0, "seg_000000.m4s", T0, init_uri="init_000000.mp4")  # resumed from the store
    assert encoder.renditions_in_fmp4() == ["720p"]
    outputs = session_outputs(config, tmp_path, 4, staying_fmp4=encoder.renditions_in_fmp4())
    assert [(output.segment_extension, output.init_name) for output in outputs] == [
        ("m4s", "init_0004.mp4"), ("m4s", "init_0004.mp4"), ("m4s", "init_0004.mp4")]
    slaves = build_session_argv(config, "rtmp://in", outputs, {"720p": 1, "480p": 1, "240p": 1},
                                live_listener=False)[-1].split("|")
    assert "hls_segment_type=fmp4" in slaves[0]


def test_each_x264_gets_threads_by_its_share_of_the_ladder(tmp_path: Path) -> None:
    ladder = [Rendition(name=name, width=width, height=height, fps=fps, video_bitrate=1_000_000)
              for name, width, height, fps in (("720p", 1280, 720, 30), ("480p", 854, 480, 30), ("360p", 640, 360, 30))]
    assert x264_threads(ladder, 2) == [2, 1, 1]  # x264 alone would take 3 threads each
    assert x264_threads(ladder, 8) == [7, 3, 2]
    assert x264_threads(ladder[:1], 2) == [3]  # a single rendition: x264's own default, 1.5 per core
    config = load_job_config(environment())
    argv = build_session_argv(config, "rtmp://in", session_outputs(config, tmp_path, 1),
                              {"720p": 0, "480p": 0, "240p": 0}, live_listener=False, cpus=4)
    assert argv[argv.index("-threads:v:0") + 1] == "4"
    assert "-threads:v:1" not in argv and "-threads:v:2" not in argv  # x265 and VP9 keep their own


def test_available_cpus_are_capped_by_the_cgroup_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert available_cpus(cpu_max) == min(1.5, len(os.sched_getaffinity(0)))
    cpu_max.write_text("max 100000\n")
    assert available_cpus(cpu_max) == len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


def test_nvenc_encodes_h264_and_hevc_on_the_gpu_with_the_same_keyframe_grid(tmp_path: Path) -> None:
    config = load_job_config(environment())
    outputs = session_outputs(config, tmp_path, 1)
    starts = {"720p": 0, "480p": 0, "240p": 0}
    software = build_session_argv(config, "rtmp://in", outputs, starts, live_listener=False)
    gpu = build_session_argv(config, "rtmp://in", outputs, starts, live_listener=False, nvenc=True)
    assert "h264_nvenc" not in software and "hevc_nvenc" not in software
    assert [gpu[i + 1] for i, arg in enumerate(gpu) if arg.startswith("-c:v:")] == ["h264_nvenc", "hevc_nvenc",
                                                                                     "libvpx-vp9"]
    assert "-forced-idr:v:0" in gpu and "-no-scenecut:v:0" in gpu and "-no-scenecut:v:1" in gpu
    assert gpu.count("expr:gte(t,n_forced*4)") == 3  # the same segment-aligned keyframes as in software
    assert gpu.count("-filter_complex") == 1 and gpu.count("-i") == 1  # still one decode


def test_nvenc_needs_the_nvidia_device(tmp_path: Path) -> None:
    assert nvenc_available(device=tmp_path / "nvidiactl") is False


def test_gop_must_divide_the_segment_duration() -> None:
    rendition = Rendition(name="a", width=64, height=64, fps=30, video_bitrate=100_000, gop_seconds=2)
    assert gop_seconds(rendition, 4) == 2
    assert gop_seconds(rendition.model_copy(update={"gop_seconds": 3}), 4) == 4


STDERR = """Input #0, flv, from 'rtmp://127.0.0.2:1935/live/key':
  Metadata:
    |RtmpSampleAccess: true
    encoder         : obs-output module (libobs version 30.0.2)
  Duration: 00:00:00.00, start: 0.000000, bitrate: N/A
  Stream #0:0: Audio: aac (LC), 48000 Hz, stereo, fltp, 160 kb/s
  Stream #0:1: Video: h264 (High), yuv420p(tv, bt709, progressive), 1280x720 [SAR 1:1 DAR 16:9], 2500 kb/s, 29.97 fps, 29.97 tbr, 1k tbn
Stream mapping:
"""  # noqa: E501


def test_ingest_statistics_from_ffmpegs_input_description() -> None:
    statistics = parse_input_statistics(STDERR.splitlines())
    assert statistics is not None
    assert statistics.to_json() == {
        "width": 1280, "height": 720, "framerate": 29.97, "videoDataRate": 2500, "videoCodecId": 7,
        "audioDataRate": 160, "audioSampleRate": 48000, "audioSampleSize": 32, "audioCodecId": 10,
        "audioChannels": 2, "stereo": True, "encoder": "obs-output module (libobs version 30.0.2)",
    }  # fmt: skip
    assert parse_input_statistics(["[tcp] connecting"]) is None


def test_progress_blocks() -> None:
    parser = ProgressParser()
    blocks = [parser.feed(line) for line in ["frame=10", "drop_frames=2", "speed=1.01x", "progress=continue"]]
    assert blocks[:3] == [None, None, None]
    block = blocks[3]
    assert block is not None and block.frame == 10 and block.dropped_frames == 2 and block.speed == 1.01


# --- playlists -------------------------------------------------------------------------------------


def segments(count: int, start: int = 0, duration: float = 4.0) -> list[Segment]:
    return [Segment(start + i, duration, f"seg_{start + i:06d}.ts", T0 + timedelta(seconds=(start + i) * duration))
            for i in range(count)]


def test_an_hls_pull_gives_up_on_an_origin_that_never_answers() -> None:
    """ffmpeg waits for ever on a request an origin took and does not answer: the pull's read timeout
    ends the session, and the pull is tried again."""
    from onair.encoder.ffmpeg import PULL_READ_TIMEOUT_US, input_args
    pulled = input_args("https://origin.example/live.m3u8", live_listener=False)
    assert pulled[pulled.index("-rw_timeout") + 1] == str(PULL_READ_TIMEOUT_US) == "10000000"
    # A playlist with no new segment for 3 of its target durations (6 reloads, half one apart) ends it too.
    assert pulled[pulled.index("-m3u8_hold_counters") + 1] == "6"
    assert "-rw_timeout" not in input_args("rtmp://127.0.0.1/live/key", live_listener=False)


class AtOnce(asyncio.Event):
    """A stop event whose waits (the pull's back-offs) end at once; whether it is set stays true."""

    async def wait(self) -> bool:
        await asyncio.sleep(0)
        return True


LIVE_AT_5 = HlsSource(ended=False, target_duration=4.0, newest_segment=(5, "seg_5.ts"))
LIVE_AT_6 = HlsSource(ended=False, target_duration=4.0, newest_segment=(6, "seg_6.ts"))
ENDED = HlsSource(ended=True)


@pytest.mark.parametrize(("kind", "answers", "pulls", "finished", "returncode"), [
    # The playlist ended while a session that failed (or that the watchdog stopped) was being replaced:
    # not pulled again, which would record it again from its first segment.
    ("RecordJob", [LIVE_AT_5, LIVE_AT_5, ENDED], 1, True, 255),
    ("LiveJob", [LIVE_AT_5, LIVE_AT_5, ENDED, None, ENDED], 1, False, 255),
    # ffmpeg also ends with 0 when an origin answers 503 for a few seconds: a recording with no end
    # goes on while the playlist cannot be read (None) or is live, and ends at its ENDLIST.
    ("RecordJob", [LIVE_AT_5, None, LIVE_AT_5, LIVE_AT_6, None, ENDED], 2, True, 0),
    # A LiveJob whose Pod starts after its source ended waits (no pull from the first segment), also
    # while the playlist cannot be read; pulled once it is live; waits again once it ends.
    ("LiveJob", [ENDED, None, LIVE_AT_5, None, ENDED, None, ENDED], 1, False, 0),
    # A frozen source (live, no new segment) is not pulled again, which would encode its newest segment
    # again, until it has a new one.
    ("LiveJob", [LIVE_AT_5, LIVE_AT_5, LIVE_AT_5, None, LIVE_AT_5, LIVE_AT_6], 2, False, 0),
    ("RecordJob", [LIVE_AT_5, LIVE_AT_5, LIVE_AT_5, None, ENDED], 1, True, 0),  # it ended while frozen
])
async def test_a_pull_ends_only_when_its_source_playlist_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, answers: list[HlsSource | None], pulls: int,
        finished: bool, returncode: int) -> None:
    from onair.encoder import pipeline
    url = "https://origin.example/live.m3u8"
    if kind == "RecordJob":
        spec: dict[str, object] = {"source": {"streamUrl": url}, "output": {"bucket": "media"}}
    else:
        spec = {"jobTemplateId": 1, "input": {"serverType": "HLS", "url": url}, "destination": {"bucket": "media"}}
    encoder = Encoder(load_job_config(environment(kind, spec, None if kind == "RecordJob" else TEMPLATE)), Ports(),
                      tmp_path, None, 10**6)  # type: ignore[arg-type]
    encoder.stop_requested = AtOnce()
    told = iter(answers)
    sessions = 0

    async def session(url: str, *, listener: bool, pull: bool = False, source_target_duration: float = 0.0) -> bool:
        nonlocal sessions
        sessions += 1
        assert source_target_duration == 4.0  # the source's, read before: the frozen-source watchdog's unit
        encoder._last_returncode = returncode  # 0: as ffmpeg ends after a reload failure, a frozen playlist, an ENDLIST
        return True

    async def asked(url: str, **options: object) -> HlsSource | None:
        try:
            return next(told)
        except StopIteration:
            encoder.stop_requested.set()  # every answer given: the job is stopped
            return ENDED

    monkeypatch.setattr(encoder, "_run_session", session)
    monkeypatch.setattr(pipeline, "read_hls_source", asked)
    await asyncio.wait_for(encoder._run_pull(), 5)
    assert (sessions, encoder.finishing) == (pulls, finished)
    assert next(told, "all asked") == "all asked"


async def test_a_recording_continued_after_its_source_ended_finishes_without_pulling_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its last Pod was evicted, and the source ended meanwhile: pulled, the ended playlist would be
    recorded again from its first segment."""
    from onair.encoder import pipeline
    spec = {"source": {"streamUrl": "https://origin.example/live.m3u8"}, "output": {"bucket": "media"}}
    encoder = Encoder(load_job_config(environment("RecordJob", spec, None)), Ports(), tmp_path, None, 10**6)  # type: ignore[arg-type]
    encoder.stop_requested = AtOnce()
    sessions: list[str] = []

    async def session(url: str, **options: object) -> bool:
        sessions.append(url)
        return True

    async def ended(url: str, **options: object) -> HlsSource:
        return ENDED

    monkeypatch.setattr(encoder, "_run_session", session)
    monkeypatch.setattr(pipeline, "read_hls_source", ended)
    next(iter(encoder.tracks.values())).add(2.0, "seg_000000.ts", T0)  # what the evicted Pod recorded
    await asyncio.wait_for(encoder._run_pull(), 5)
    assert sessions == [] and encoder.finishing


def test_a_source_url_is_shown_without_its_credentials() -> None:
    """Messages with the URL reach the job's status and its webhooks; the log shows the command line."""
    from onair.urls import shown_url
    assert shown_url("https://user:s3cret@origin.example:8443/live/index.m3u8?token=t0ken") \
        == "https://origin.example:8443/live/index.m3u8"
    assert shown_url("http://[::1]/a.m3u8") == "http://[::1]/a.m3u8" and shown_url("seg_5.ts?k=1") == "seg_5.ts"
    spec = {"source": {"streamUrl": "https://user:s3cret@origin.example/live.m3u8"}, "output": {"bucket": "media"}}
    encoder = Encoder(load_job_config(environment("RecordJob", spec, None)), Ports(), Path("/nonexistent"), None,
                      10**6)  # type: ignore[arg-type]
    assert "s3cret" not in encoder._loggable(["ffmpeg", "-i", "https://user:s3cret@origin.example/live.m3u8"])


def test_what_ffmpeg_says_reaches_the_log_without_the_credentials_of_the_urls_it_names() -> None:
    """ffmpeg's errors name the URLs it opens: the RTMP play URL (the stream key and the play token), a
    pulled source's and its segments' (a password, a signed query)."""
    rtmp = Encoder(load_job_config(environment(ONAIR_STREAM_KEY="stream-key-0123456789")), Ports(),
                   Path("/nonexistent"), None, 10**6)  # type: ignore[arg-type]
    said = rtmp._loggable_output([f"rtmp://127.0.0.9:1935/live/stream-key-0123456789?onair_token={rtmp.play_token}: "
                                  "Connection refused", "Error opening input files: Connection refused"])
    assert "stream-key-0123456789" not in said and rtmp.play_token not in said
    assert said.endswith("Connection refused\nError opening input files: Connection refused")
    spec = {"source": {"streamUrl": "https://user:s3cret@origin.example/live.m3u8?sig=abc"},
            "output": {"bucket": "media"}}
    pull = Encoder(load_job_config(environment("RecordJob", spec, None)), Ports(), Path("/nonexistent"), None,
                   10**6)  # type: ignore[arg-type]
    said = pull._loggable_output(["[hls @ 0x55] Opening 'https://cdn.example/seg_5.ts?token=t0ken' for reading",
                                  "https://user:s3cret@origin.example/live.m3u8?sig=abc: Server returned 403",
                                  "Opening 'https://cdn:pa@ss@edge.example/v2.m3u8' for reading"])
    assert "s3cret" not in said and "sig=abc" not in said and "t0ken" not in said and "ss@" not in said
    assert "Opening 'https://cdn.example/seg_5.ts' for reading" in said and "live.m3u8: Server returned 403" in said


def test_one_mp4_takes_sessions_whose_media_match_where_both_say() -> None:
    from onair.encoder.mp4 import same_media
    first = (("video", "h264", 320, 180, None, None), ("audio", "aac", None, None, "48000", 2))
    audio_not_started = (("video", "h264", 320, 180, None, None), ("audio", "aac", None, None, None, None))
    assert same_media(first, audio_not_started)
    assert not same_media(first, (("video", "h264", 640, 360, None, None), first[1]))
    assert not same_media(first, (first[0], ("audio", "aac", None, None, "44100", 2)))
    assert not same_media(first, first[:1])


def test_no_s3_endpoint_means_aws_s3_of_the_region() -> None:
    """The chart's default s3.endpoint is empty: the encoder then talks to AWS S3, not crash on it."""
    from onair.encoder.upload import S3Store
    assert S3Store("", "media", "eu-west-1").client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    assert S3Store("http://s3.local:8333", "media", "us-east-1").client.meta.endpoint_url == "http://s3.local:8333"


def test_a_body_that_is_not_a_playlist_is_refused_without_quoting_it() -> None:
    """A job's URL may point the encoder at any server: what it answered must not reach the job's
    status (which the REST API shows) through the parse error."""
    for parse, body in ((parse_media_playlist, "db_password=hunter2\n"),
                        (parse_media_playlist, "#EXTM3U\n#EXTINF:secret,\nx.ts\n"),
                        (parse_master_playlist, "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=secret\nv.m3u8\n")):
        with pytest.raises(ValueError) as error:
            parse(body)
        assert "secret" not in str(error.value) and "hunter2" not in str(error.value)
        assert str(error.value).startswith("not an HLS ")


def test_media_playlist_round_trips() -> None:
    items = segments(3, start=10)
    items[1] = Segment(11, 4.0, "seg_000011.m4s", items[1].program_date_time, discontinuity=True, init_uri="init.mp4")
    items[2] = Segment(12, 4.0, "seg_000012.m4s", items[2].program_date_time, init_uri="init.mp4")
    text = render_media_playlist(items, nominal_duration=4, discontinuity_sequence=2, ended=True)
    assert "#EXT-X-TARGETDURATION:4" in text and "#EXT-X-MEDIA-SEQUENCE:10" in text
    assert text.index("#EXT-X-DISCONTINUITY\n") < text.index('#EXT-X-MAP:URI="init.mp4"') < text.index("seg_000011")
    assert text.count("#EXT-X-PROGRAM-DATE-TIME:2026-01-01T12:00:4") == 3
    parsed = parse_media_playlist(text)
    assert parsed.ended and parsed.discontinuity_sequence == 2
    assert parsed.segments == items


def test_parses_ffmpegs_local_playlist() -> None:
    text = ("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:2.000000,\n"
            "#EXT-X-PROGRAM-DATE-TIME:2026-11-23T16:32:12.258+0000\nseg_000005.ts\n#EXTINF:1.5,\nseg_000006.ts\n")
    parsed = parse_media_playlist(text)
    assert [(s.sequence, s.duration) for s in parsed.segments] == [(5, 2.0), (6, 1.5)]
    assert parsed.segments[1].program_date_time == datetime(2026, 11, 23, 16, 32, 14, 258000, tzinfo=UTC)


def local_window(first: int, count: int) -> MediaPlaylist:
    return MediaPlaylist(media_sequence=first, segments=[Segment(first + i, 2.0, f"seg_{first + i:06d}.ts")
                                                         for i in range(count)])


def test_ffmpegs_sliding_local_window_is_read_by_sequence_number() -> None:
    fresh, missed = unhandled_local_segments(local_window(5, 3), None)  # a session's first look
    assert [s.sequence for s in fresh] == [5, 6, 7] and not missed
    fresh, missed = unhandled_local_segments(local_window(6, 3), 7)  # one more closed, one slid out
    assert [s.sequence for s in fresh] == [8] and not missed
    assert unhandled_local_segments(local_window(6, 3), 8) == ([], range(0))  # nothing new
    fresh, missed = unhandled_local_segments(local_window(40, 3), 8)  # stalled for a whole window
    assert [s.sequence for s in fresh] == [40, 41, 42] and list(missed) == list(range(9, 40))


def test_target_duration_covers_every_rounded_segment() -> None:
    assert target_duration([Segment(0, 4.6, "a")], 4) == 5
    assert target_duration([Segment(0, 4.4, "a")], 4) == 4
    # A player rounds the EXTINF it reads, halves up: 4.5 needs 5 (Python's round() gives 4), and
    # 4.4996 is written 4.500.
    assert target_duration([Segment(0, 4.5, "a")], 4) == 5
    assert target_duration([Segment(0, 6.5, "a")], 4) == 7
    assert target_duration([Segment(0, 4.4996, "a")], 4) == 5
    assert target_duration([], 2) == 2


def test_master_playlist_has_bandwidth_resolution_codecs() -> None:
    variants = [Variant("720p/index.m3u8", 3_300_000, 3_128_000, "avc1.64001f,mp4a.40.2", (1280, 720), 30.0)]
    text = render_master_playlist(variants)
    assert ('#EXT-X-STREAM-INF:BANDWIDTH=3300000,AVERAGE-BANDWIDTH=3128000,CODECS="avc1.64001f,mp4a.40.2",'
            "RESOLUTION=1280x720,FRAME-RATE=30.000") in text
    assert parse_master_playlist(text) == variants


def test_codec_tags() -> None:
    assert codec_tag({"codec_name": "h264", "profile": "High", "level": 31}) == "avc1.64001f"
    assert codec_tag({"codec_name": "h264", "profile": "Constrained Baseline", "level": 30}) == "avc1.42c01e"
    assert codec_tag({"codec_name": "hevc", "profile": "Main", "level": 93}) == "hvc1.1.6.L93.B0"
    assert codec_tag({"codec_name": "vp9", "profile": "Profile 0", "pix_fmt": "yuv420p"}) == "vp09.00.31.08"
    # VP9's level from the picture size and frame rate (ffprobe reports none)
    vp9 = {"codec_name": "vp9", "profile": "Profile 0", "pix_fmt": "yuv420p"}
    assert codec_tag({**vp9, "width": 640, "height": 360, "avg_frame_rate": "30/1"}) == "vp09.00.21.08"
    assert codec_tag({**vp9, "width": 1920, "height": 1080, "avg_frame_rate": "30/1"}) == "vp09.00.40.08"
    assert codec_tag({**vp9, "width": 1920, "height": 1080, "avg_frame_rate": "60000/1001"}) == "vp09.00.41.08"
    assert codec_tag({"codec_name": "aac", "profile": "HE-AACv2"}) == "mp4a.40.29"
    # Unprobed, the master names the template's codecs, not always H.264 and AAC
    assert fallback_codecs(VideoCodec.HEVC, AudioCodec.OPUS) == "hvc1.1.6.L93.B0,Opus"
    assert fallback_codecs(None, AudioCodec.AAC) == "avc1.64001f,mp4a.40.2"
    assert codec_tag({"codec_name": "h264", "profile": "High 4:2:2", "level": 41}) == "avc1.7a0029"
    assert codec_tag({"codec_name": "aac", "profile": "LC"}) == "mp4a.40.2"
    assert codec_tag({"codec_name": "hevc", "profile": "Main 10", "level": 120}) == "hvc1.2.4.L120.B0"
    assert (codec_tag({"codec_name": "ac3"}), codec_tag({"codec_name": "eac3"})) == ("ac-3", "ec-3")


def test_clip_is_exact_to_segment_boundaries() -> None:
    items = segments(6)
    chosen = select_clip_segments(items, T0 + timedelta(seconds=5), T0 + timedelta(seconds=13))
    assert [s.sequence for s in chosen] == [1, 2, 3]  # 4-8, 8-12, 12-16
    assert [s.sequence for s in select_clip_segments(items, T0 + timedelta(seconds=8), T0 + timedelta(seconds=12))] \
        == [2]
    clip = renumbered_for_clip([items[1], items[3]], ["a.ts", "b.ts"])
    assert [(s.sequence, s.uri, s.discontinuity) for s in clip] == [(0, "a.ts", False), (1, "b.ts", True)]


def test_a_clip_starting_at_a_segments_own_time_starts_with_that_segment() -> None:
    """ffmpeg stamps each PROGRAM-DATE-TIME to the millisecond, and EXTINF is rounded too: 29.97 fps
    segments of 60 and 61 frames put a segment's computed end a millisecond past the next one's start."""
    first = Segment(0, 2.002, "seg_000000.ts", T0)
    second = Segment(1, 2.035, "seg_000001.ts", T0 + timedelta(seconds=2.001))
    third = Segment(2, 2.002, "seg_000002.ts", T0 + timedelta(seconds=4.035), discontinuity=True)
    items = [first, second, third]
    assert first.end_time and second.program_date_time and first.end_time > second.program_date_time
    assert select_clip_segments(items, second.program_date_time, None) == [second, third]
    assert select_clip_segments(items, T0 + timedelta(seconds=2.0015), None) == [second, third]
    assert select_clip_segments(items, T0 + timedelta(seconds=2.0005), None) == items  # still in the first
    assert select_clip_segments(items, T0, second.program_date_time) == [first]
    # An end on a segment's own (truncated) stamp, give or take its millisecond, does not take it.
    stamped = [Segment(0, 2.0, "a.ts", T0), Segment(1, 2.0, "b.ts", T0 + timedelta(seconds=1.999))]
    assert select_clip_segments(stamped, T0, T0 + timedelta(seconds=2)) == stamped[:1]
    assert select_clip_segments(stamped, T0, T0 + timedelta(seconds=2.5)) == stamped
    # Across a discontinuity the next start says nothing about this segment's end.
    assert select_clip_segments(items, T0 + timedelta(seconds=4.0355), None) == [second, third]


def test_a_pause_leaves_out_the_segments_wholly_inside_it() -> None:
    items = segments(6)  # 0-4, 4-8, ... 20-24
    # Paused at 5, resumed at 13: like a range's ends, the segments holding those instants stay.
    paused = [(T0 + timedelta(seconds=5), T0 + timedelta(seconds=13))]
    assert [s.sequence for s in select_clip_segments(items, T0, None, paused)] == [0, 1, 3, 4, 5]
    still_paused = [(T0 + timedelta(seconds=3), T0 + timedelta(seconds=4)), (T0 + timedelta(seconds=16), None)]
    assert [s.sequence for s in select_clip_segments(items, T0, None, still_paused)] == [0, 1, 2, 3]


# --- numbering and the window ----------------------------------------------------------------------


def test_track_numbers_continue_across_sessions_with_a_discontinuity() -> None:
    track = RenditionTrack("720p", nominal_duration=4, window=3)
    track.start_session()
    for i in range(2):
        track.add(4, f"seg_{i:06d}.ts", T0)
    track.start_session()
    third = track.add(4, "seg_000002.ts", T0)
    assert third.sequence == 2 and third.discontinuity
    assert track.add(4, "seg_000003.ts", T0).discontinuity is False


def test_sliding_window_deletes_a_segment_once_no_player_can_ask_for_it() -> None:
    track = RenditionTrack("720p", nominal_duration=4, window=3)
    deleted = []
    for i in range(10):
        track.add(4, f"seg_{i:06d}.ts", T0)
        deleted += [s.sequence for s in track.take_expired()]
    assert [s.sequence for s in track.live_segments] == [7, 8, 9]
    # RFC 8216 6.2.2: available for its duration (4 s) plus the playlist's (12 s) after it left.
    # Segment 3 left when 6 arrived; 7, 8 and 9 since make only 12 s.
    assert deleted == [0, 1, 2]
    assert "#EXT-X-MEDIA-SEQUENCE:7" in track.live_playlist()


def test_each_live_playlist_says_which_segments_it_no_longer_names_and_for_how_long_they_stay() -> None:
    """What the uploader needs to start a segment's hold when that playlist lands, not before."""
    track = RenditionTrack("720p", nominal_duration=4, window=3)
    unnamed = []
    for i in range(5):
        track.add(4, f"seg_{i:06d}.ts", T0)
        unnamed.append(track.take_unnamed())
    assert unnamed == [[], [], [], ["seg_000000.ts"], ["seg_000001.ts"]]
    # Its duration plus the longest playlist's, the wait take_expired keeps on the media clock.
    assert track.hold_seconds(track.live_segments[0]) == 4 + 12
    recording = RenditionTrack("720p", nominal_duration=4, window=3, keep_all=True)
    for i in range(5):
        recording.add(4, f"seg_{i:06d}.ts", T0)
    assert recording.take_unnamed() == []  # a recording keeps every segment


def test_segments_a_resume_with_a_shorter_window_takes_out_wait_as_long_as_the_stored_playlist() -> None:
    # The stored playlist lasted 60 s (10 x 6 s); the template now keeps 3. Players that hold the stored
    # playlist may ask for any of its segments for 6 + 60 s after the new Pod took them out.
    old = RenditionTrack("a", nominal_duration=6, window=10)
    for number in range(20):
        old.add(6, f"seg_{number:06d}.ts", T0)
    new = RenditionTrack.resume(RenditionTrack("a", nominal_duration=6, window=3),
                                parse_media_playlist(old.live_playlist()))
    deleted: list[int] = []
    for number in range(20, 31):
        new.add(6, f"seg_{number:06d}.ts", T0)
        deleted += [segment.sequence for segment in new.take_expired()]
        if number == 29:  # 60 s of new media: nothing taken out at the resume may go yet
            assert deleted == [], deleted
    assert deleted[:1] == [10], "66 s after it left, the first of them goes"


def test_a_dvr_window_keeps_its_segments_for_as_long_as_the_playlist_is() -> None:
    track = RenditionTrack("720p", nominal_duration=2, window=3, dvr_seconds=20)
    deleted = []
    for i in range(40):
        track.add(2, f"seg_{i:06d}.ts", T0)
        deleted += [s.sequence for s in track.take_expired()]
    assert [s.sequence for s in track.live_segments] == list(range(30, 40))  # 20 s
    # Each must stay 2 + 20 s after it left: 19 left when 29 arrived, 20 s ago; 18 left 22 s ago.
    assert deleted == list(range(19))


def test_target_duration_never_goes_down_as_a_long_segment_slides_out() -> None:
    track = RenditionTrack("720p", nominal_duration=2, window=3)
    track.add(2, "a", T0)
    track.add(6.2, "b", T0)  # the last segment of a session that ended mid-GOP
    assert "#EXT-X-TARGETDURATION:6" in track.live_playlist()
    newer = [f"n{i}" for i in range(9)]
    for uri in newer:
        track.add(2, uri, T0)
        track.live_playlist()
    # b slides out only once the playlist lasts three target durations without it (RFC 8216 6.2.2)
    assert [s.uri for s in track.live_segments] == newer
    assert "#EXT-X-TARGETDURATION:6" in track.live_playlist()  # RFC 8216 6.2.1: it MUST NOT change
    resumed = RenditionTrack.resume(RenditionTrack("720p", nominal_duration=2, window=3),
                                    parse_media_playlist(track.live_playlist()))
    resumed.add(2, "e", T0)
    assert "#EXT-X-TARGETDURATION:6" in resumed.live_playlist()  # and not after a Pod restart either


def test_discontinuity_sequence_counts_tags_that_slid_out() -> None:
    track = RenditionTrack("720p", nominal_duration=4, window=3)
    track.add(4, "a", T0)
    track.start_session()
    for uri in "bcde":
        track.add(4, uri, T0)
    assert track.discontinuity_sequence == 1
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in track.live_playlist()


def test_peak_bit_rate_counts_a_short_segment_with_the_one_before_it() -> None:
    """RFC 8216 4.1: the peak is over runs of 0.5 to 1.5 target durations. A single-frame segment
    (what ffmpeg closes when the publisher drops) alone would claim 24 Mbit/s for a 4 Mbit/s stream."""
    track = RenditionTrack("a", nominal_duration=4, window=5)
    track.add(0.033, "tiny-first", T0, size_bytes=100_000)
    assert track.newest_bit_rate() is None  # no run of half a target duration yet
    track.add(4, "full", T0, size_bytes=2_000_000)
    assert track.newest_bit_rate() == track.peak_bit_rate == 4_000_000
    track.add(0.033, "tiny", T0, size_bytes=100_000)
    assert track.newest_bit_rate() == track.peak_bit_rate == int((2_000_000 + 100_000) * 8 / 4.033)
    track.add(2.5, "short-but-long-enough", T0, size_bytes=1_000_000)
    assert track.newest_bit_rate() == 3_200_000  # the peak stays the highest so far
    assert track.peak_bit_rate == int((2_000_000 + 100_000) * 8 / 4.033)
    resumed = RenditionTrack.resume(RenditionTrack("b", nominal_duration=4, window=5),
                                    parse_media_playlist(render_media_playlist(segments(3), nominal_duration=4)))
    resumed.add(0.5, "after-a-restart", T0, size_bytes=100_000)
    assert resumed.newest_bit_rate() is None  # the sizes of an earlier Pod's segments are not known
    assert resumed.average_bit_rate() == 1_600_000  # the mean of those it knows
    assert track.average_bit_rate() == int(3_200_000 * 8 / (0.033 + 4 + 0.033 + 2.5))


def test_a_finished_playlist_measures_its_peak_over_runs_of_half_to_one_and_a_half_targets() -> None:
    """The VOD master's BANDWIDTH and AVERAGE-BANDWIDTH (RFC 8216 4.1's peak; Apple's authoring rules
    want both within 10% of what the segments measure)."""
    sized = [replace(segment, size_bytes=size) for segment, size in
             zip(segments(4), [1_000_000, 2_000_000, 1_000_000, 500_000], strict=True)]
    assert measured_bit_rates(sized, 4) == MeasuredBitRates(peak=4_000_000, average=int(4_500_000 * 8 / 16))
    # A one-frame last segment counts with the one before it, not alone (2 MB in 0.04 s: 400 Mbit/s).
    tail = Segment(4, 0.04, "seg_000004.ts", None, size_bytes=2_000_000)
    assert measured_bit_rates([*sized, tail], 4) == MeasuredBitRates(
        peak=int((500_000 + 2_000_000) * 8 / 4.04), average=int(6_500_000 * 8 / 16.04))
    # Shorter than half a target in all: its only run is the whole of it.
    assert measured_bit_rates([tail], 4) == MeasuredBitRates(peak=400_000_000, average=400_000_000)
    assert measured_bit_rates([*sized, replace(tail, size_bytes=None)], 4) is None
    assert measured_bit_rates([], 4) is None


def test_a_track_measures_an_earlier_pods_segments_from_the_stores_sizes() -> None:
    track = RenditionTrack.resume(RenditionTrack("a", nominal_duration=4, window=5, keep_all=True),
                                  parse_media_playlist(render_media_playlist(segments(2), nominal_duration=4)))
    track.add(4, "seg_000002.ts", T0, size_bytes=2_000_000)
    assert track.measured_bit_rates() is None
    track.add_stored_sizes({"seg_000000.ts": 1_000_000, "seg_000001.ts": 1_500_000, "seg_000002.ts": 1})
    assert [segment.size_bytes for segment in track.segments] == [1_000_000, 1_500_000, 2_000_000]
    assert track.measured_bit_rates() == MeasuredBitRates(peak=4_000_000, average=int(4_500_000 * 8 / 12))


def test_a_recording_resumed_by_a_new_pod_continues_its_live_playlists_sequence_numbers() -> None:
    # A publisher reconnect, then a segment longer than the target: the window grew, and what had slid
    # out stays out. A new Pod reads the event playlist (every segment) and the live one.
    old = RenditionTrack("720p", nominal_duration=2, window=3, keep_all=True)
    moment = T0
    for number, duration in enumerate([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 4.6]):
        if number == 2:
            old.start_session()
        old.add(duration, f"seg_{number:06d}.ts", moment)
        moment += timedelta(seconds=duration)
    stored = parse_media_playlist(old.live_playlist())
    assert (stored.media_sequence, stored.discontinuity_sequence) == (3, 1)
    new = RenditionTrack.resume(RenditionTrack("720p", nominal_duration=2, window=3, keep_all=True),
                                parse_media_playlist(old.event_playlist()), stored)
    new.start_session()
    new.add(2.0, "seg_000007.ts", moment)
    continued = parse_media_playlist(new.live_playlist())
    # RFC 8216 6.2.1: neither number goes back, and no segment that slid out comes back.
    assert (continued.media_sequence, continued.discontinuity_sequence) == (3, 1)
    assert [segment.uri for segment in continued.segments] == [f"seg_{n:06d}.ts" for n in range(3, 8)]
    assert len(parse_media_playlist(new.event_playlist()).segments) == 8


def test_a_store_error_names_the_buckets_problem() -> None:
    def client_error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "refused"}}, "GetObject")

    assert storage_problem(client_error("NoSuchBucket"), "media") == ("BucketNotFound", "bucket 'media' does not exist")
    reason, message = storage_problem(client_error("InvalidAccessKeyId"), "media")
    assert reason == "AccessDenied" and "InvalidAccessKeyId" in message
    reason, message = storage_problem(EndpointConnectionError(endpoint_url="http://s3:8333"), "media")
    assert reason == "BucketUnreachable" and "http://s3:8333" in message


def test_a_live_window_lasts_at_least_three_target_durations() -> None:
    """RFC 8216 6.2.2: a segment stays while the playlist would last less than three target
    durations without it; a long GOP raises the target above the nominal segment."""
    track = RenditionTrack("a", nominal_duration=2, window=3)
    for uri, seconds in (("a", 2), ("b", 7), ("c", 2), ("d", 2)):
        track.add(seconds, uri, T0)
        track.live_playlist()
    live = parse_media_playlist(track.live_playlist())
    assert live.target_duration == 7 and [s.uri for s in live.segments] == ["a", "b", "c", "d"]
    for index in range(20):
        track.add(2, f"n{index}", T0)
        live = parse_media_playlist(track.live_playlist())
        if live.media_sequence > 0:  # something was removed: what is left lasts three targets
            assert sum(s.duration for s in live.segments) >= 3 * (live.target_duration or 0), index
    assert len(live.segments) == 11  # 22 s >= 21 s, where 10 segments (20 s) would be too short


def test_recording_keeps_every_segment_and_dvr_keeps_seconds() -> None:
    recording = RenditionTrack("a", nominal_duration=4, window=3, keep_all=True)
    dvr = RenditionTrack("b", nominal_duration=4, window=3, dvr_seconds=20)
    for i in range(10):
        recording.add(4, f"{i}", T0)
        dvr.add(4, f"{i}", T0)
    assert len(recording.segments) == 10 and len(recording.live_segments) == 3 and not recording.take_expired()
    assert len(dvr.live_segments) == 5
    # Closed with ENDLIST, its type unchanged (RFC 8216 6.2.1): EVENT while recording and after.
    ended = recording.event_playlist(ended=True)
    assert ended == recording.event_playlist() + "#EXT-X-ENDLIST\n"
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in ended


def test_a_growing_event_playlist_reads_as_one_rendered_whole_after_every_segment() -> None:
    """The event playlist is written segment by segment (GrowingPlaylist), not rendered whole each
    time; what it says must still be exactly the whole rendering: gaps, new init segments (a new
    session), a long segment that raises the target, and a list replaced by a resume."""
    track = RenditionTrack("v", nominal_duration=4, window=3, keep_all=True)
    texts = []
    for n in range(30):
        if n in (7, 19):
            track.start_session()  # a reconnect: a new ffmpeg and its own init segment
        if n == 12:
            track.skip()  # a paused or dropped segment: the next one follows a gap
        duration = 9.6 if n == 15 else 4.0
        track.add(duration, f"seg_{n:06d}.m4s", T0 + timedelta(seconds=4 * n), init_uri=f"init_{(n // 7) * 7:06d}.mp4")
        texts.append(track.event_playlist())
        whole = render_media_playlist(track.segments, nominal_duration=4, playlist_type="EVENT")
        assert texts[-1] == whole
        assert track.event_playlist(ended=True) == whole + "#EXT-X-ENDLIST\n"
    assert "#EXT-X-TARGETDURATION:10" in texts[-1] and texts[-1].count("#EXT-X-DISCONTINUITY\n") == 3
    # A resume replaces the segments it grew from: the text starts over from them.
    resumed = RenditionTrack.resume(track, parse_media_playlist(texts[10]))
    assert resumed.event_playlist() == texts[10]
    resumed.add(4, "seg_000011.m4s", T0 + timedelta(seconds=44), init_uri="init_000011.mp4")
    assert resumed.event_playlist() == render_media_playlist(resumed.segments, nominal_duration=4,
                                                             playlist_type="EVENT")


def test_a_long_recordings_event_playlist_is_rendered_again_once_enough_media_came_for_its_size() -> None:
    track = RenditionTrack("v", nominal_duration=2, window=10**6, keep_all=True)  # a window that never slides
    renders: list[tuple[int, int]] = []  # (segments, bytes)
    for n in range(3000):
        track.add(2.0, f"{'long-name-' * 40}{n:06d}.ts", T0 + timedelta(seconds=2 * n))
        if track.event_playlist_due():
            renders.append((n + 1, len(track.event_playlist())))
    # Each segment while the playlist is small enough to go out every 2 s at the rate...
    small = [count for count, size in renders if size <= 2 * EVENT_PLAYLIST_BYTES_PER_SECOND]
    assert small == list(range(1, len(small) + 1)) and len(small) > 100
    # ...then only once the media since the last one is worth its size: a fraction of the segments.
    for (count, size), (next_count, _) in itertools.pairwise(renders):
        assert 2.0 * (next_count - count) >= size / EVENT_PLAYLIST_BYTES_PER_SECOND
    assert renders[-1][1] > 2 * 2 * EVENT_PLAYLIST_BYTES_PER_SECOND and len(renders) < 3000 * 2 // 3


@pytest.mark.parametrize("kind", ["LiveJob", "RecordJob"])
def test_a_large_event_playlist_goes_out_when_due_and_whole_when_the_pod_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    if kind == "LiveJob":
        spec: dict[str, object] = {"jobTemplateId": 1, "input": {"serverType": "RTMP"},
                                   "destination": {"bucket": "media"}, "recording": True}
    else:
        spec = {"source": {"streamUrl": "rtmp://origin/live/a"}, "output": {"bucket": "media"}}
    encoder = Encoder(load_job_config(environment(kind, spec, TEMPLATE if kind == "LiveJob" else None)), Ports(),
                      tmp_path, None, 10**6)  # type: ignore[arg-type]
    uploaded: list[tuple[str, bytes, list[float]]] = []
    monkeypatch.setattr(encoder.uploader, "put_bytes", lambda key, body, cache, closed_at=None, unnames=None:
                        uploaded.append((key.rsplit("/", 1)[1], body, list(closed_at or []))))
    name, track = next(iter(encoder.tracks.items()))
    count = 1200 if kind == "LiveJob" else 100
    # About 3 KB a segment, 3.6 MB in all: at the end, what the rate allows lags more than the live
    # window's 12 s (3 target durations) behind. Now and then a short segment (a reconnect's last):
    # the window then moves by two.
    for n in range(count):
        track.add(0.3 if n % 97 == 96 else 2.0, f"{'long-name-' * 300}{n:06d}.ts", T0 + timedelta(seconds=2 * n))
        encoder._queue_playlists(name, closed_at=[float(n)])
    # The playlist viewers reload (a RecordJob's only one, a LiveJob's live window): with every segment,
    # each segment's close time marked on the first that names it (its latency).
    marks = [mark for key, _, closed_at in uploaded if key == "index.m3u8" for mark in closed_at]
    assert marks == [float(n) for n in range(count)]
    if kind == "RecordJob":
        assert {key for key, _, _ in uploaded} == {"index.m3u8"}
        return
    events = [body for key, body, _ in uploaded if key == "event.m3u8"]
    assert len(parse_media_playlist(events[0].decode()).segments) == 1 and len(events) < count * 2 // 3
    # A segment leaves the live window only once the stored event playlist names it: a clip, which reads
    # the two, finds every segment, whatever moment it reads them.
    stored: dict[str, MediaPlaylist] = {}
    for key, body, _ in uploaded:
        stored[key] = parse_media_playlist(body.decode())
        if len(stored) == 2:
            assert stored["event.m3u8"].segments[-1].sequence + 1 >= stored["index.m3u8"].media_sequence
    encoder._queue_playlists(name, every=True)  # the Pod stops: every playlist names all it published
    last = next(body for key, body, _ in reversed(uploaded) if key == "event.m3u8")
    assert len(parse_media_playlist(last.decode()).segments) == count


def test_a_clip_cut_while_the_stream_goes_on_ends_all_its_variants_at_the_same_segment() -> None:
    """/finish: the variants' playlists are read one after another, and the one read last may have a
    segment more. Renditions cut at the same moments give or take a frame."""
    def run(count: int, jitter: float) -> list[Segment]:
        return [Segment(n, 4.0, f"seg_{n:06d}.ts", T0 + timedelta(seconds=4 * n + jitter)) for n in range(count)]

    first, second, third = run(5, 0.0), run(6, 0.02), run(6, -0.02)
    assert to_common_end([first, second, third]) == [first, second[:5], third[:5]]
    # Already at one end: nothing is left out; without PROGRAM-DATE-TIME, nothing is compared.
    assert to_common_end([first, run(5, 0.03)]) == [first, run(5, 0.03)]
    undated = [Segment(n, 4.0, f"seg_{n:06d}.ts") for n in range(6)]
    assert to_common_end([first, undated]) == [first, undated]


def test_what_an_earlier_pod_retired_and_left_is_found_among_the_stored_objects() -> None:
    stored = MediaPlaylist(target_duration=4, media_sequence=5, segments=[
        Segment(sequence=n, duration=4, uri=f"seg_{n:06d}.m4s", program_date_time=T0, init_uri="init_000003.mp4")
        for n in (5, 6, 7)])
    listing = ["index.m3u8", "init_000000.mp4", "init_000003.mp4", "seg_000002.m4s", "seg_000003.m4s",
               "seg_000004.m4s", "seg_000005.m4s", "seg_000007.m4s", "seg_000008.m4s", "notes.txt"]
    resumed = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=3), stored)
    # Numbered before the oldest segment held, and no init segment a held segment still uses; a segment
    # numbered after the window (uploaded before the playlist naming it) is overwritten, not deleted.
    assert resumed.orphans(listing) == ["init_000000.mp4", "seg_000002.m4s", "seg_000003.m4s", "seg_000004.m4s"]
    assert resumed.retention_seconds() == 4 + 12
    # Recording switched on: the new recording starts with the window; what the window left before is
    # named by no playlist either.
    recording = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=3, keep_all=True), stored)
    assert recording.orphans(listing) == ["init_000000.mp4", "seg_000002.m4s", "seg_000003.m4s", "seg_000004.m4s"]
    # A job that recorded once and no longer does: what its event playlist names is no leftover.
    resumed.recorded = frozenset({"init_000000.mp4", "seg_000002.m4s", "seg_000003.m4s"})
    assert resumed.orphans([*listing, "event.m3u8"]) == ["seg_000004.m4s"]


def recorded_then_not(recorded_until: int, live_from: int, live_count: int) -> tuple[MediaPlaylist, MediaPlaylist]:
    """The stored playlists of a job that recorded segments 0 to `recorded_until`, then stopped
    recording and streamed on: the event playlist and the live window as the bucket holds them."""
    track = RenditionTrack("v", nominal_duration=4, window=3, keep_all=True)
    for n in range(recorded_until + 1):
        track.add(4, f"seg_{n:06d}.ts", T0 + timedelta(seconds=4 * n))
    event = parse_media_playlist(track.event_playlist())
    window = range(live_from, live_from + live_count)
    live = parse_media_playlist(render_media_playlist(
        [Segment(n, 4, f"seg_{n:06d}.ts", T0 + timedelta(seconds=4 * n)) for n in window], nominal_duration=4))
    return event, live


def test_a_job_that_stopped_recording_slides_past_the_recording_without_deleting_it() -> None:
    event, live = recorded_then_not(recorded_until=5, live_from=3, live_count=3)  # the window when it stopped
    track = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=3), live)
    track.recorded = recorded_objects(event)
    deleted: list[int] = []
    for n in range(6, 20):
        track.add(4, f"seg_{n:06d}.ts", T0)
        deleted += [segment.sequence for segment in track.take_expired()]
    assert deleted and min(deleted) == 6 and deleted == list(range(6, 6 + len(deleted)))


def test_recording_switched_on_again_goes_on_after_a_gap_with_a_discontinuity() -> None:
    event, live = recorded_then_not(recorded_until=2, live_from=10, live_count=3)
    track = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=3, keep_all=True), event, live)
    assert track.next_sequence == 13
    # The live window is the one stored, unchanged: no tag before its first segment.
    assert "#EXT-X-DISCONTINUITY\n" not in track.live_playlist()
    assert parse_media_playlist(track.live_playlist()).media_sequence == 10
    track.add(4, "seg_000013.ts", T0)
    stored_event = parse_media_playlist(track.event_playlist())
    assert [segment.discontinuity for segment in stored_event.segments] == [False] * 3 + [True] + [False, False, True]
    # Read back by the next Pod, the event playlist keeps the numbers its object names carry.
    numbered = numbered_by_name(stored_event)
    assert [segment.sequence for segment in numbered.segments] == [0, 1, 2, 10, 11, 12, 13]
    again = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=3, keep_all=True), numbered,
                                  parse_media_playlist(track.live_playlist()))
    assert again.next_sequence == 14 and len(again.segments) == 7


def test_a_recording_resumed_after_a_gap_deletes_what_the_gap_left_and_nothing_it_names() -> None:
    """Recording on, off (its Pod retired segments 3 to 9 from the window and stopped before deleting
    the last of them), on again: the new recording Pod deletes those, a window's time after, and keeps
    every segment the event playlist or the live window names."""
    event, live = recorded_then_not(recorded_until=2, live_from=10, live_count=3)
    track = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=3, keep_all=True), event, live)
    listing = ["event.m3u8", "index.m3u8", *(f"seg_{n:06d}.ts" for n in (0, 1, 2, 7, 8, 9, 10, 11, 12, 13))]
    assert track.orphans(listing) == ["seg_000007.ts", "seg_000008.ts", "seg_000009.ts"]
    for n in range(13, 20):  # recording on: what it adds is held, never found
        track.add(4, f"seg_{n:06d}.ts", T0)
    assert track.orphans([*listing, *(f"seg_{n:06d}.ts" for n in range(14, 20))]) == [
        "seg_000007.ts", "seg_000008.ts", "seg_000009.ts"]
    # The wait is the live window's (RFC 8216 6.2.2), not the whole recording's.
    assert track.retention_seconds() == 4 + 3 * 4


def test_a_recording_resumed_after_its_gap_publishes_the_same_live_window() -> None:
    """The event playlist tags the gap where the job did not record; the live stream never had that
    tag, so a Pod resuming from the event playlist must not add it to the live window (RFC 8216 6.2.1)
    nor count it in DISCONTINUITY-SEQUENCE when the segment slides out."""
    event, live = recorded_then_not(recorded_until=2, live_from=10, live_count=3)
    first = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=3, keep_all=True), event, live)
    published = first.live_playlist()
    stored_event = numbered_by_name(parse_media_playlist(first.event_playlist()))
    assert stored_event.segments[3].sequence == 10 and stored_event.segments[3].discontinuity
    again = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=3, keep_all=True), stored_event,
                                  parse_media_playlist(published))
    assert again.live_playlist() == published
    for n in range(13, 16):  # segment 10 slides out; 13 starts a new session, its tag still in the window
        again.add(4, f"seg_{n:06d}.ts", T0)
    assert parse_media_playlist(again.live_playlist()).discontinuity_sequence == 0


def test_a_clip_reads_the_recording_and_the_live_window_after_it() -> None:
    event, live = recorded_then_not(recorded_until=2, live_from=10, live_count=3)
    live.ended = True
    joined = stored_segments(numbered_by_name(event), numbered_by_name(live))
    assert joined is not None and joined.ended  # the stale event playlist never says so
    assert [segment.sequence for segment in joined.segments] == [0, 1, 2, 10, 11, 12]
    chosen = select_clip_segments(joined.segments, T0 + timedelta(seconds=5), T0 + timedelta(seconds=45))
    assert [(s.sequence, s.discontinuity) for s in renumbered_for_clip(chosen, ["a", "b", "c", "d"])] == [
        (0, False), (1, False), (2, True), (3, False)]
    # A job recording now: the live window is at most a segment ahead of its event playlist.
    event, live = recorded_then_not(recorded_until=5, live_from=3, live_count=4)
    joined = stored_segments(event, live)
    assert joined is not None and [segment.sequence for segment in joined.segments] == list(range(7))
    assert stored_segments(None, live) is live and stored_segments(event, None) is event


def test_a_clip_says_when_the_live_window_had_slid_past_its_start() -> None:
    event, live = recorded_then_not(recorded_until=2, live_from=10, live_count=3)
    joined = stored_segments(event, live)
    assert joined is not None
    assert lost_beginning(joined, T0 + timedelta(seconds=5)) is None  # the recording holds it
    assert lost_beginning(live, T0 + timedelta(seconds=41)) is None  # segment 10 holds it
    assert lost_beginning(live, T0 + timedelta(seconds=30)) == T0 + timedelta(seconds=40)  # 7 to 9 are gone
    # A stream that began after the range's start lost nothing: its first segment is still there.
    _, young = recorded_then_not(recorded_until=0, live_from=0, live_count=3)
    assert lost_beginning(young, T0 - timedelta(minutes=5)) is None


def test_resume_never_reuses_a_number_the_live_playlist_published_after_the_event_playlist() -> None:
    """A recording LiveJob uploads index.m3u8, then event.m3u8: a Pod stopped between the two
    leaves the event playlist a segment behind. The next Pod continues after the newer one."""
    track = RenditionTrack("v", nominal_duration=4, window=6, keep_all=True)
    for i in range(5):
        track.add(4, f"seg_{i:06d}.ts", T0)
    event_stored = parse_media_playlist(track.event_playlist())
    track.add(4, "seg_000005.ts", T0)
    index_stored = parse_media_playlist(track.live_playlist())
    resumed = RenditionTrack.resume(RenditionTrack("v", nominal_duration=4, window=6, keep_all=True),
                                    event_stored, index_stored)
    assert resumed.next_sequence == 6
    assert [segment.uri for segment in resumed.segments] == [f"seg_{i:06d}.ts" for i in range(6)]


def test_resume_continues_a_stored_playlist() -> None:
    stored = parse_media_playlist(render_media_playlist(segments(3, start=40), nominal_duration=4))
    track = RenditionTrack.resume(RenditionTrack("a", nominal_duration=4, window=3), stored)
    segment = track.add(4, "x", T0)
    assert segment.sequence == 43 and segment.discontinuity


def test_a_rendition_new_to_the_job_starts_in_step_with_the_ones_that_go_on() -> None:
    """A template change gave the ladder a rendition with nothing stored: its first segment has the
    sequence and discontinuity numbers, and the playlist the target, of the same content in the others
    (RFC 8216 6.2.4), not 0 where they say 43."""
    stored_segments = segments(3, start=40)
    stored_segments[1] = replace(stored_segments[1], discontinuity=True)  # a reconnect, still in the window
    stored = parse_media_playlist(render_media_playlist(stored_segments, nominal_duration=6,
                                                        discontinuity_sequence=4))
    going_on = RenditionTrack.resume(RenditionTrack("720p", nominal_duration=4, window=3), stored)
    added = RenditionTrack("1080p", nominal_duration=4, window=3)
    added.join(going_on)

    def newest(track: RenditionTrack, new_session: bool = False) -> tuple[int, int, int]:
        if new_session:
            track.start_session()
        track.add(4, f"seg_{track.next_sequence:06d}.ts", T0)
        playlist = parse_media_playlist(track.live_playlist())
        numbered = playlist.media_sequence + len(playlist.segments) - 1
        discontinuities = playlist.discontinuity_sequence + sum(s.discontinuity for s in playlist.segments)
        return numbered, discontinuities, playlist.target_duration

    assert newest(added, new_session=True) == newest(going_on, new_session=True) == (43, 6, 6)
    for sequence in (44, 45, 46):  # and they stay so as the windows slide
        assert newest(added) == newest(going_on) == (sequence, 6, 6)


def test_a_rendition_new_to_a_recording_starts_in_step_in_its_event_playlist_too() -> None:
    """A RecordJob's index.m3u8 is its event playlist, every segment from the first: the new rendition's
    continues the others' discontinuity count and target there."""
    stored_segments = segments(4, start=0)
    stored_segments[1] = replace(stored_segments[1], duration=7.0)  # a long GOP then: the target is 7
    stored_segments[2] = replace(stored_segments[2], discontinuity=True)
    stored = parse_media_playlist(render_media_playlist(stored_segments, nominal_duration=4, playlist_type="EVENT"))
    going_on = RenditionTrack.resume(RenditionTrack("720p", nominal_duration=4, window=3, keep_all=True), stored)
    added = RenditionTrack("1080p", nominal_duration=4, window=3, keep_all=True)
    added.join(going_on)
    numbers = []
    for track in (added, going_on):
        track.start_session()
        track.add(4, f"seg_{track.next_sequence:06d}.ts", T0)
        playlist = parse_media_playlist(track.event_playlist())
        numbers.append((playlist.media_sequence + len(playlist.segments) - 1,
                        playlist.discontinuity_sequence + sum(s.discontinuity for s in playlist.segments),
                        playlist.target_duration))
    assert numbers[0] == numbers[1] == (4, 2, 7)


# --- the upload queue ------------------------------------------------------------------------------


class FlakyStore:
    """Fails the first `failures` calls, then records what lands."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.landed: list[str] = []
        self.lock = threading.Lock()

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("store down")
            self.landed.append(f"put {key}")

    def delete(self, key: str) -> None:
        with self.lock:
            self.landed.append(f"delete {key}")


def queue_segments(queue: UploadQueue, tmp_path: Path, count: int) -> None:
    for i in range(count):
        path = tmp_path / f"seg{i}.ts"
        path.write_bytes(b"x" * 100)
        queue.put_file(f"r/seg{i}.ts", path)
        queue.put_bytes("r/index.m3u8", f"names seg{i}".encode(), "max-age=1", closed_at=[0.0])
    queue.delete("r/seg0.ts")


def test_outage_keeps_order_and_coalesces_playlists(tmp_path: Path) -> None:
    store = FlakyStore(failures=3)
    queue = UploadQueue(store, spool_limit_bytes=10_000, initial_backoff=0.01, max_backoff=0.02)
    queue_segments(queue, tmp_path, 4)  # queued while "down": the worker has not started yet
    assert queue.spool_bytes == 400
    queue.start()
    assert queue.wait_idle(5)
    queue.stop()
    # Every segment, in order; the playlist once, after every segment it names; the delete last.
    assert store.landed == [
        "put r/seg0.ts", "put r/seg1.ts", "put r/seg2.ts", "put r/seg3.ts", "put r/index.m3u8", "delete r/seg0.ts"
    ]  # fmt: skip
    assert queue.stats.failures == 3 and queue.spool_bytes == 0
    assert not any(tmp_path.glob("seg*.ts"))  # uploaded files leave the spool
    assert len(queue.stats.latencies_ms) == 4  # one availability figure per segment, through the coalescing


def test_spool_limit(tmp_path: Path) -> None:
    queue = UploadQueue(FlakyStore(), spool_limit_bytes=250)
    queue_segments(queue, tmp_path, 2)
    assert queue.has_room_for(50) and not queue.has_room_for(51)


def test_content_types_and_percentiles() -> None:
    assert content_type_for("a/index.m3u8") == "application/vnd.apple.mpegurl"
    assert content_type_for("a/seg.m4s") == "video/iso.segment"
    assert content_type_for("a/seg.ts") == "video/mp2t"
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([], 50) is None


def test_nginx_front_config_asks_our_hooks() -> None:
    text = render_nginx_config(RtmpFrontConfig("127.0.0.9", 1935, "http://127.0.0.1:5000", Path("/w"), Path("/m.so")))
    assert "listen 127.0.0.9:1935;" in text and "on_publish http://127.0.0.1:5000/rtmp/publish;" in text
    assert "idle_streams on;" in text and "load_module /m.so;" in text  # our ffmpeg waits for the publisher
    # nginx's control API (it can drop any client) only on a Unix socket in the work directory.
    assert "listen unix:/w/control.sock;" in text and "rtmp_control all;" in text
    assert text.count("listen ") == 2


def test_logged_command_lines_carry_no_credentials() -> None:
    argv = ["ffmpeg", "-i", "rtmp://127.0.0.9:1935/live/stream-key-guid?token=play-token", "out.m3u8"]
    text = redacted(argv, "stream-key-guid", "play-token", None)
    assert text == "ffmpeg -i rtmp://127.0.0.9:1935/live/***?token=*** out.m3u8"


def test_a_rendition_of_a_paused_recording_is_running_not_stalled() -> None:
    """Paused, its segments are closed and left out: the encoder is not stuck. Stalled is for no
    segment at all while the input is connected."""
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    rendition = RenditionStatus(name="720p")
    assert rendition.state(True, 2.0, start) == "Pending"
    rendition.last_segment_time = rendition.last_closed_time = start
    paused_minute = start + timedelta(minutes=1)
    rendition.last_closed_time = paused_minute - timedelta(seconds=1)  # left out, paused
    assert rendition.state(True, 2.0, paused_minute) == "Running"
    assert rendition.state(True, 2.0, paused_minute + timedelta(seconds=7)) == "Stalled"  # nothing closed since
    assert rendition.state(False, 2.0, paused_minute + timedelta(minutes=5)) == "Running"  # no input: not stuck


async def test_an_ended_hls_source_is_told_from_one_still_going_through_its_master() -> None:
    playlists = {
        "/ended/master.m3u8": '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n360p/index.m3u8\n',
        "/ended/360p/index.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg_0.ts\n#EXT-X-ENDLIST\n",
        "/live/master.m3u8": '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n360p/index.m3u8\n',
        "/live/360p/index.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n"
                                 "#EXTINF:2,\nseg_7.ts\n#EXTINF:2,\nseg_8.ts\n",
        "/garbage.m3u8": "<html>an error page</html>",
        # Long playlists (a day of 1-s segments named at length): read into bounded memory, still told.
        "/long.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + "".join(
            f"#EXTINF:1,\nseg_{i}.ts?token={'t' * 200}\n" for i in range(86_400)),
        "/long-ended.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + "#EXTINF:1,\nseg.ts\n" * 1_000_000
                            + "#EXT-X-ENDLIST\n",
    }

    async def serve(request: web.Request) -> web.Response:
        if request.path.startswith("/failing/"):
            raise web.HTTPServiceUnavailable()
        if request.path not in playlists:
            raise web.HTTPNotFound()
        return web.Response(text=playlists[request.path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert await read_hls_source(f"{base}/ended/master.m3u8") == ENDED
        assert await read_hls_source(f"{base}/ended/360p/index.m3u8") == ENDED
        assert await read_hls_source(f"{base}/live/master.m3u8") == HlsSource(ended=False, target_duration=2.0,
                                                                              newest_segment=(8, "seg_8.ts"))
        assert await read_hls_source(f"{base}/gone/master.m3u8") == ENDED  # taken down (404): over
        assert await read_hls_source(f"{base}/failing/master.m3u8") is None  # 503: not known either way
        assert await read_hls_source(f"{base}/garbage.m3u8") is None
        assert await read_hls_source(f"{base}/long.m3u8") == HlsSource(
            ended=False, target_duration=2.0, newest_segment=(86_399, f"seg_86399.ts?token={'t' * 200}"))
        assert await read_hls_source(f"{base}/long-ended.m3u8") == ENDED
    finally:
        await runner.cleanup()
    assert is_hls_url("https://cdn.example/live.m3u8") and not is_hls_url("rtmp://origin/live/x")


@pytest.mark.parametrize("form", ["as rendered", "no media sequence", "CRLF", "space after the colon"])
def test_a_day_long_source_playlist_read_into_bounded_memory_gives_the_same_newest_segment(form: str) -> None:
    start = datetime(2026, 12, 7, tzinfo=UTC)
    segments = [Segment(1000 + i, 2.0, f"seg_{1000 + i}.ts", start + timedelta(seconds=2 * i),
                        discontinuity=i == 40_000) for i in range(43_200)]
    text = render_media_playlist(segments, nominal_duration=2)
    if form == "no media sequence":  # the first segment is then 0
        text = text.replace("#EXT-X-MEDIA-SEQUENCE:1000\n", "")
    elif form == "CRLF":
        text = text.replace("\n", "\r\n")
    elif form == "space after the colon":
        text = text.replace("#EXT-X-MEDIA-SEQUENCE:1000", "#EXT-X-MEDIA-SEQUENCE: 1000")
    full = parse_media_playlist(text)
    expected = (full.segments[-1].sequence, full.segments[-1].uri)
    assert expected == ((0 if form == "no media sequence" else 1000) + 43_199, "seg_44199.ts")
    body = text.encode()
    for chunk_size in (1_000, 7, 65_536):
        reader = PlaylistReader()
        for offset in range(0, len(body), chunk_size):
            reader.feed(body[offset:offset + chunk_size])
        assert len(reader.head) + len(reader.tail) <= HEAD_BYTES + TAIL_BYTES < len(body) / 10
        assert HlsSource.from_media_playlist(reader.text()) == HlsSource(
            ended=False, target_duration=2.0, newest_segment=expected), (form, chunk_size)


def test_the_last_word_of_a_run_goes_where_its_pod_status_reads_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet's file at /dev/termination-log, or the one ONAIR_TERMINATION_MESSAGE_PATH names; cut
    to what the kubelet keeps; and nothing written where neither is there."""
    kubelets = tmp_path / "termination-log"
    monkeypatch.setattr(encoder_main, "TERMINATION_LOG", str(kubelets))
    monkeypatch.delenv("ONAIR_TERMINATION_MESSAGE_PATH", raising=False)
    encoder_main.write_termination_message("clip of 7 segments written")
    assert not kubelets.exists()  # no kubelet mounted one: nothing is made
    kubelets.touch()
    encoder_main.write_termination_message("clip of 7 segments written")
    assert kubelets.read_text() == "clip of 7 segments written"

    named = tmp_path / "named"
    monkeypatch.setenv("ONAIR_TERMINATION_MESSAGE_PATH", str(named))
    encoder_main.write_termination_message("x" * 5000)
    assert named.read_bytes() == b"x" * encoder_main.TERMINATION_MESSAGE_BYTES
    assert kubelets.read_text() == "clip of 7 segments written"
