"""inputClass Single: the source passed through, with real ffmpeg publishers and a real S3 server.
HEVC is packaged as Apple's HLS authoring rules ask (fMP4, `hvc1`); H.264 stays MPEG-TS."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from media_helpers import (
    GOES_LIVE_WITHIN_S,
    EncoderProcess,
    ObjectStore,
    check_rendition,
    ffprobe,
    free_port,
    live_spec,
    pattern_input,
    publish,
)
from waiting import wait_until

from onair.encoder.playlist import format_program_date_time, parse_master_playlist, parse_media_playlist

PASSPHRASE = "passthrough-passphrase"
HEVC_FLV_CODEC_ID = 12  # the videoCodecId of the /stats resource


def single_srt_spec(**extra: Any) -> dict[str, Any]:
    return live_spec(input={"serverType": "SRT", "inputClass": "Single"}, **extra)


def srt_publish_url(encoder: EncoderProcess) -> str:
    return f"srt://{encoder.host}:{encoder.srt_port}?streamid={encoder.stream_key}&passphrase={PASSPHRASE}&pbkeylen=16"


def publish_session(encoder: EncoderProcess, seconds: float, **pattern: Any) -> None:
    """One publish over SRT, from connect to the encoder seeing the publisher leave."""
    publisher = publish(srt_publish_url(encoder), seconds, container="mpegts", **pattern)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert publisher.wait(30) == 0, publisher.stderr.read() if publisher.stderr else ""
    encoder.wait_state("reconnecting", 8)


def head(store: ObjectStore, encoder: EncoderProcess, key: str) -> dict[str, Any]:
    response: dict[str, Any] = store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/{key}")
    return response


def test_single_hevc_is_fmp4_hls_with_a_new_map_per_session_and_clips_as_vod(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    encoder = start_encoder("LiveJob", single_srt_spec(recording=True), None, srt_passphrase=PASSPHRASE)
    publisher = publish(srt_publish_url(encoder), 6, container="mpegts", video="hevc", size="480x270")
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    statistics = wait_until(lambda: encoder.status()["ingest"]["statistics"], 10, "ingest statistics")
    assert (statistics["width"], statistics["height"], statistics["videoCodecId"]) == (480, 270, HEVC_FLV_CODEC_ID)
    assert publisher.wait(30) == 0
    encoder.wait_state("reconnecting", 8)
    publish_session(encoder, 5, video="hevc", size="480x270")  # the publisher reconnects
    assert encoder.post("/finish").status_code == 202
    assert encoder.process.wait(30) == 0, encoder.log()[-3000:]
    assert encoder.states_seen[:4] == ["waiting", "live", "reconnecting", "live"]

    text = object_store.get_text(encoder.bucket, f"{encoder.prefix}/source/index.m3u8") or ""
    lines = text.splitlines()
    # EXT-X-MAP without I-frames-only needs version 6 or higher (RFC 8216 section 7).
    assert int(next(line for line in lines if line.startswith("#EXT-X-VERSION:")).split(":")[1]) >= 6
    playlist = parse_media_playlist(text)
    assert all(segment.uri.endswith(".m4s") and segment.init_uri for segment in playlist.segments), text
    maps = [line for line in lines if line.startswith("#EXT-X-MAP:")]
    assert lines.index(maps[0]) < lines.index(playlist.segments[0].uri)  # the map comes before any segment
    # The reconnect: a discontinuity, numbering goes on, and the new session's own init segment.
    numbers = [segment.sequence for segment in playlist.segments]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    reconnected = [segment for segment in playlist.segments if segment.discontinuity]
    assert len(reconnected) == 1 and len(maps) == 2, text
    before = playlist.segments[playlist.segments.index(reconnected[0]) - 1]
    assert reconnected[0].init_uri != before.init_uri
    for init in {segment.init_uri for segment in playlist.segments}:
        assert head(object_store, encoder, f"source/{init}")["ContentType"] == "video/mp4"
    assert head(object_store, encoder, f"source/{playlist.segments[0].uri}")["ContentType"] == "video/iso.segment"

    master_text = object_store.get_text(encoder.bucket, f"{encoder.prefix}/master.m3u8") or ""
    variants = parse_master_playlist(master_text)
    assert len(variants) == 1 and variants[0].codecs.startswith("hvc1.") and "mp4a.40.2" in variants[0].codecs
    # Segmented at the source's own keyframes (x265's CRA may open a GOP): no claim of independence.
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in master_text and not playlist.independent_segments
    assert variants[0].resolution == (480, 270)
    # No template bit rate to declare: the average its segments measured, under the peak.
    assert variants[0].average_bandwidth and 0 < variants[0].average_bandwidth <= variants[0].bandwidth
    # Every segment behind its init segment: HEVC in an hvc1 sample entry, AAC, a keyframe first.
    check_rendition(object_store, encoder, "source", 480, 270, "hevc", tmp_path / "live", ended=True,
                    video_tag="hvc1")

    # A clip of a past range across the reconnect: a VOD playlist with each session's map, and an MP4.
    event = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/source/event.m3u8") or "")
    index = event.segments.index(next(segment for segment in event.segments if segment.discontinuity))
    chosen = event.segments[index - 1 : index + 1]
    assert chosen[0].program_date_time is not None and chosen[-1].end_time is not None
    start, end = chosen[0].program_date_time, chosen[-1].end_time - timedelta(seconds=0.1)
    clip_prefix = f"{encoder.prefix}-clip"
    record_spec = {"source": {"liveJobRef": "match"}, "timeRange": {"start": start.isoformat(), "end": end.isoformat()},
                   "output": {"bucket": encoder.bucket, "path": clip_prefix, "format": "mp4"}}
    clip = {"sourcePrefix": encoder.prefix, "start": format_program_date_time(start),
            "end": format_program_date_time(end)}
    recorder = start_encoder("RecordJob", record_spec, None, bucket=encoder.bucket, prefix=clip_prefix, clip=clip,
                             wait_healthy=False)
    assert recorder.process.wait(60) == 0, recorder.log()[-3000:]
    clip_playlist = parse_media_playlist(object_store.get_text(encoder.bucket, f"{clip_prefix}/source/index.m3u8")
                                         or "")
    assert clip_playlist.ended and clip_playlist.playlist_type == "VOD" and not clip_playlist.independent_segments
    assert [segment.init_uri for segment in clip_playlist.segments] == [segment.init_uri for segment in chosen]
    object_store.download_prefix(encoder.bucket, clip_prefix, tmp_path / "clip")
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(tmp_path / "clip" / "source" / "index.m3u8"), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert decoded.returncode == 0 and not decoded.stderr.strip(), decoded.stderr
    mp4 = ffprobe(tmp_path / "clip" / "source.mp4")
    assert abs(float(mp4["format"]["duration"]) - sum(segment.duration for segment in chosen)) < 0.5
    assert {stream["codec_name"] for stream in mp4["streams"]} == {"hevc", "aac"}


def test_a_new_pods_master_lists_the_codecs_of_the_sessions_an_earlier_pod_published(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """A passthrough's master lists every format its playlist names (RFC 8216 4.3.4.2), also those of
    the sessions an earlier Pod of the job published and the live window still names: HEVC at 480x270
    before the Pod was replaced, H.264 at 320x180 after it."""
    first = start_encoder("LiveJob", single_srt_spec(), None, srt_passphrase=PASSPHRASE, prefix="live/two-pods")
    publish_session(first, 4, video="hevc", size="480x270")
    assert first.stop() == 0
    second = start_encoder("LiveJob", single_srt_spec(), None, srt_passphrase=PASSPHRASE, prefix="live/two-pods")
    publish_session(second, 4, size="320x180")

    def window() -> list[Any]:
        return parse_media_playlist(object_store.get_text(second.bucket, "live/two-pods/source/index.m3u8")
                                    or "").segments

    # Both Pods' sessions in the live window, once the second Pod's segments are uploaded.
    wait_until(lambda: any(segment.discontinuity for segment in window()[1:]), 15,
               "the second Pod's session in the live window")

    def master() -> list[Any]:
        return parse_master_playlist(object_store.get_text(second.bucket, "live/two-pods/master.m3u8") or "")

    # The first Pod's master said HEVC alone; the second Pod's own session alone would be H.264 alone.
    variants = wait_until(lambda: (found := master()) and {"hvc1", "avc1"} <= {
        codec.split(".")[0] for codec in found[0].codecs.split(",")} and found, 15,
        "the master to list the earlier Pod's HEVC beside this Pod's H.264")
    assert len(variants) == 1 and "mp4a.40.2" in variants[0].codecs
    assert variants[0].resolution == (480, 270)  # the largest picture the playlist names
    assert second.stop() == 0


def test_single_h264_over_rtmp_stays_mpeg_ts(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    encoder = start_encoder("LiveJob", live_spec(input={"serverType": "RTMP", "inputClass": "Single"}), None)
    publisher = publish(encoder.rtmp_url, 4, size="320x180")
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert publisher.wait(30) == 0
    encoder.wait_state("reconnecting", 5)
    assert encoder.stop() == 0, encoder.log()[-3000:]
    text = object_store.get_text(encoder.bucket, f"{encoder.prefix}/source/index.m3u8") or ""
    assert "#EXT-X-MAP" not in text
    playlist = parse_media_playlist(text)
    assert playlist.segments and all(segment.uri.endswith(".ts") for segment in playlist.segments), text
    assert head(object_store, encoder, f"source/{playlist.segments[0].uri}")["ContentType"] == "video/mp2t"
    variants = parse_master_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/master.m3u8") or "")
    assert variants[0].codecs.startswith("avc1.")
    check_rendition(object_store, encoder, "source", 320, 180, "h264", tmp_path, ended=False)


def test_hevc_recording_with_mp2_audio_gets_aac_and_an_mp4(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    """A RecordJob copying an HEVC stream whose audio is MPEG-1 Layer II: Apple players do not play
    MP2 from fMP4, so the audio alone is re-encoded to AAC; the recording's MP4 joins the fMP4
    segments to their init segment."""
    port = free_port()
    source = publish(f"srt://127.0.0.1:{port}?mode=listener", 30, container="mpegts", video="hevc", audio="mp2",
                     size="320x180")
    spec = {"source": {"streamUrl": f"srt://127.0.0.1:{port}"}, "output": {"bucket": "ignored", "format": "mp4"}}
    recorder = start_encoder("RecordJob", spec, None)
    try:
        recorder.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: recorder.status()["renditions"][0]["segmentsWritten"] >= 3, 20, "recorded segments")
        assert recorder.post("/finish").status_code == 202
        assert recorder.process.wait(30) == 0, recorder.log()[-3000:]
    finally:
        source.kill()
        source.wait()
    playlist = parse_media_playlist(object_store.get_text(recorder.bucket, f"{recorder.prefix}/source/index.m3u8")
                                    or "")
    assert playlist.ended and all(segment.init_uri for segment in playlist.segments)
    check_rendition(object_store, recorder, "source", 320, 180, "hevc", tmp_path / "hls", ended=True,
                    video_tag="hvc1")  # audio: aac
    object_store.client.download_file(recorder.bucket, f"{recorder.prefix}/source.mp4", str(tmp_path / "source.mp4"))
    mp4 = ffprobe(tmp_path / "source.mp4")
    assert {stream["codec_name"] for stream in mp4["streams"]} == {"hevc", "aac"}
    assert abs(float(mp4["format"]["duration"]) - sum(segment.duration for segment in playlist.segments)) < 1.0


@contextlib.contextmanager
def fmp4_hls_origin(hls_origin: tuple[str, Path], source: list[str]) -> Iterator[dict[str, Any]]:
    """An origin serving a live fMP4 HLS stream ffmpeg makes of `source` (its input and codec options),
    while the block runs: the spec of a Single LiveJob that pulls it."""
    base_url, root = hls_origin
    origin = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *source,
         "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments",
         "-hls_segment_type", "fmp4", str(root / "live.m3u8")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: (root / "live.m3u8").exists(), 15, "the origin's first playlist")
        yield live_spec(input={"serverType": "HLS", "inputClass": "Single", "url": f"{base_url}/live.m3u8"})
    finally:
        origin.kill()
        origin.wait(10)


def test_a_pulled_hevc_hls_source_is_passed_through_as_fmp4(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, hls_origin: tuple[str, Path],
    tmp_path: Path,
) -> None:
    """A LiveJob pulling an HEVC HLS stream (itself fMP4, as an Apple-conformant origin serves it)."""
    with fmp4_hls_origin(hls_origin, [*pattern_input(10, size="320x180", video="hevc"), "-tag:v", "hvc1"]) as spec:
        encoder = start_encoder("LiveJob", spec, None)
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 2, 30, "two pulled segments")
    assert encoder.stop() == 0, encoder.log()[-3000:]
    text = object_store.get_text(encoder.bucket, f"{encoder.prefix}/source/index.m3u8") or ""
    assert text.count("#EXT-X-MAP:") >= 1 and ".m4s" in text, text
    check_rendition(object_store, encoder, "source", 320, 180, "hevc", tmp_path, ended=False, video_tag="hvc1")


def two_segments_over_srt(start_encoder: Callable[..., EncoderProcess], **pattern: Any) -> EncoderProcess:
    """A Single job over SRT that published two segments of `pattern`, then stopped."""
    encoder = start_encoder("LiveJob", single_srt_spec(), None, srt_passphrase=PASSPHRASE)
    publisher = publish(srt_publish_url(encoder), 30, container="mpegts", **pattern)
    try:
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 2, 20, "two segments")
    finally:
        publisher.kill()
        publisher.wait()
    assert encoder.stop() == 0, encoder.log()[-3000:]
    return encoder


def test_a_source_of_sound_alone_is_passed_through(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """A radio-style SRT publisher: inputClass Single copies what there is, the master says audio."""
    encoder = two_segments_over_srt(start_encoder, video=None)
    variants = parse_master_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/master.m3u8") or "")
    assert [(variant.codecs, variant.resolution) for variant in variants] == [("mp4a.40.2", None)]


def test_a_pulled_vp9_source_is_refused_with_its_reason_not_passed_on_as_sound(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, hls_origin: tuple[str, Path],
) -> None:
    """VP9 (as AV1) cannot go through the MPEG-TS remux: without a refusal the channel would go on as
    sound alone."""
    vp9 = ["-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi",
           "-i", "sine=frequency=440:sample_rate=48000", "-t", "30", "-c:v", "libvpx-vp9", "-deadline", "realtime",
           "-cpu-used", "8", "-g", "25", "-b:v", "300k", "-c:a", "aac"]
    with fmp4_hls_origin(hls_origin, vp9) as spec:
        encoder = start_encoder("LiveJob", spec, None)
        message = wait_until(lambda: (m := encoder.status()["message"]) and "vp9" in m and m, 30, "the refusal")
        assert "jobTemplateId" in message
        assert encoder.status()["renditions"][0]["segmentsWritten"] == 0
    assert encoder.stop() == 0, encoder.log()[-3000:]
    assert object_store.get_text(encoder.bucket, f"{encoder.prefix}/master.m3u8") is None


@pytest.mark.parametrize("audio", ["libopus", "mp2"], ids=["Opus", "MP2"])
def test_audio_players_cannot_play_from_mpeg_ts_gets_aac(
    audio: str, start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    """OBS sends Opus over SRT, a contribution encoder MP2: copied into MPEG-TS, players would play the
    picture in silence (Safari plays no MP2, hls.js no Opus)."""
    encoder = two_segments_over_srt(start_encoder, audio=audio, size="320x180")
    check_rendition(object_store, encoder, "source", 320, 180, "h264", tmp_path, ended=False)  # AAC audio
