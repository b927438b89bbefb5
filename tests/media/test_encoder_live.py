"""The encoder with real ffmpeg publishers and a real S3 server: what a user of a LiveJob checks."""

from __future__ import annotations

import math
import os
import shlex
import shutil
import signal
import ssl
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from localplatform.pki import LocalPKI
from media_helpers import (
    GOES_LIVE_WITHIN_S,
    H264_LADDER,
    SEGMENT_SECONDS,
    EncoderProcess,
    ObjectStore,
    check_rendition,
    children_named,
    ffprobe,
    ladder_template,
    live_spec,
    max_age,
    pattern_input,
    publish,
    serve_directory,
)
from waiting import wait_until

from onair.encoder.playlist import parse_master_playlist, parse_media_playlist
from onair.exitcodes import EXIT_BAD_CONFIG


def test_rtmp_ladder_playlists_and_segments_validate(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    # Every ffprobe the encoder runs (the master's probes) notes its niceness, then probes.
    probe_niceness, wrappers, real_ffprobe = tmp_path / "probe-niceness", tmp_path / "bin", shutil.which("ffprobe")
    assert real_ffprobe is not None
    wrappers.mkdir()
    (wrappers / "ffprobe").write_text(f"#!/bin/sh\ncut -d' ' -f19 /proc/$$/stat >> {shlex.quote(str(probe_niceness))}\n"
                                      f"exec {shlex.quote(real_ffprobe)} \"$@\"\n")
    (wrappers / "ffprobe").chmod(0o755)
    encoder = start_encoder("LiveJob", live_spec(), H264_LADDER,
                            extra_env={"PATH": f"{wrappers}{os.pathsep}{os.environ['PATH']}"})
    assert encoder.status()["state"] == "waiting"
    publisher = publish(encoder.rtmp_url, 9)
    live = encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert live["ingest"]["connected"] is True
    wait_until(lambda: encoder.status()["ingest"]["statistics"]["width"], 10, "ingest statistics")
    statistics = encoder.status()["ingest"]["statistics"]
    assert (statistics["width"], statistics["height"], statistics["videoCodecId"]) == (640, 360, 7)
    assert (statistics["audioCodecId"], statistics["audioSampleRate"], statistics["audioChannels"]) == (10, 48000, 2)
    assert statistics["stereo"] is True
    # One ffmpeg encodes the ladder, below the encoder's priority (its uploader goes first on full cores).
    [transcoder] = [pid for pid, argv in children_named(encoder.process.pid, "ffmpeg").items() if "tee" in argv]
    encoder_niceness = os.getpriority(os.PRIO_PROCESS, encoder.process.pid)
    assert os.getpriority(os.PRIO_PROCESS, transcoder) == encoder_niceness + 5
    assert publisher.wait(30) == 0, publisher.stderr.read() if publisher.stderr else ""
    encoder.wait_state("reconnecting", 5)
    assert encoder.post("/finish").status_code == 202
    assert encoder.process.wait(30) == 0, encoder.log()[-3000:]

    master_text = object_store.get_text(encoder.bucket, f"{encoder.prefix}/master.m3u8")
    assert master_text is not None
    # One probe per rendition, below the transcode: they must not delay the first segments' uploads.
    assert probe_niceness.read_text().split() == [str(encoder_niceness + 10)] * 3
    variants = parse_master_playlist(master_text)
    assert [variant.uri for variant in variants] == ["360p/index.m3u8", "270p/index.m3u8", "180p/index.m3u8"]
    assert [variant.resolution for variant in variants] == [(640, 360), (480, 270), (320, 180)]
    assert all(variant.codecs.startswith("avc1.") and "mp4a.40.2" in variant.codecs for variant in variants)
    # The ladder's keyframes are IDRs on the segment grid: every segment decodes on its own.
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in master_text
    for variant in variants:  # BANDWIDTH is at least the peak segment bit rate (RFC 8216 4.3.4.2)
        playlist = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/{variant.uri}") or "")
        assert playlist.target_duration is not None and playlist.independent_segments
        peak = max(
            object_store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/"
                                            f"{variant.uri.split('/')[0]}/{segment.uri}")["ContentLength"] * 8
            / segment.duration
            for segment in playlist.segments if segment.duration >= playlist.target_duration / 2
        )
        assert variant.bandwidth >= peak, (variant.uri, variant.bandwidth, peak)
    head = object_store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/master.m3u8")
    assert head["ContentType"] == "application/vnd.apple.mpegurl"
    for name, width, height in (("360p", 640, 360), ("270p", 480, 270), ("180p", 320, 180)):
        check_rendition(object_store, encoder, name, width, height, "h264", tmp_path, ended=True)
    segment_head = object_store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/180p/seg_000001.ts")
    assert segment_head["ContentType"] == "video/mp2t"
    assert "immutable" in segment_head["CacheControl"]
    # Ended, but a LiveJob can be switched on again and continue it: never cached as final.
    playlist_head = object_store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/180p/index.m3u8")
    target = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/index.m3u8") or "")
    assert "immutable" not in playlist_head["CacheControl"]
    assert 0 < max_age(playlist_head["CacheControl"]) <= (target.target_duration or 1) / 2


def test_an_encoder_in_the_work_directory_of_a_killed_one_encodes_only_its_own_segments(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    shared = {"ONAIR_WORK_DIR": str(tmp_path / "w")}
    killed = start_encoder("LiveJob", live_spec(), H264_LADDER, extra_env=shared)
    first = publish(killed.rtmp_url, 30)
    wait_until(lambda: killed.status()["renditions"][0]["segmentsWritten"] >= 2, 20, "the first run's segments")
    killed.process.kill()  # its local playlists and segments stay where it left them
    killed.process.wait(10)
    first.kill()

    encoder = start_encoder("LiveJob", live_spec(), H264_LADDER, extra_env=shared)
    publisher = publish(encoder.rtmp_url, 5)
    assert publisher.wait(30) == 0, publisher.stderr.read() if publisher.stderr else ""
    encoder.wait_state("reconnecting", 5)
    assert encoder.post("/finish").status_code == 202
    assert encoder.process.wait(30) == 0, encoder.log()[-3000:]

    segments = check_rendition(object_store, encoder, "360p", 640, 360, "h264", tmp_path, ended=True)
    assert sum(float(ffprobe(path)["format"]["duration"]) for path in segments) == pytest.approx(5, abs=1.5)
    assert list((tmp_path / "w").iterdir()) != [], "the killed run's directory is left alone"


def test_a_work_directory_too_long_for_the_rtmp_front_s_socket_is_named_in_a_clear_error(
    start_encoder: Callable[..., EncoderProcess], tmp_path: Path
) -> None:
    long_path = {"ONAIR_WORK_DIR": str(tmp_path / ("w" * 100))}
    encoder = start_encoder("LiveJob", live_spec(), H264_LADDER, extra_env=long_path, wait_healthy=False)
    assert encoder.process.wait(20) == EXIT_BAD_CONFIG
    assert "ONAIR_WORK_DIR: too long for nginx's control socket" in encoder.log()


def test_hevc_and_vp9_renditions(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    template = ladder_template(("hevc", 320, 180, "HEVC"), ("vp9", 256, 144, "VP9"))
    encoder = start_encoder("LiveJob", live_spec(), template)
    publisher = publish(encoder.rtmp_url, 6)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert publisher.wait(30) == 0
    encoder.wait_state("reconnecting", 5)
    assert encoder.post("/finish").status_code == 202
    assert encoder.process.wait(30) == 0, encoder.log()[-3000:]
    variants = parse_master_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/master.m3u8") or "")
    assert [variant.codecs.split(".")[0] for variant in variants] == ["hvc1", "vp09"]
    check_rendition(object_store, encoder, "hevc", 320, 180, "hevc", tmp_path, ended=True)
    check_rendition(object_store, encoder, "vp9", 256, 144, "vp9", tmp_path, ended=True)


def test_every_publish_is_encoded_from_its_first_frame(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """Nothing of the broadcast is lost: the encoder is on the stream before the publisher arrives,
    so two 4-s publishes (with 1-s GOPs) make 8 s of output, not 8 s less a GOP each."""
    encoder = start_encoder("LiveJob", live_spec(), ladder_template(("180p", 320, 180, "H264")))

    def encoded_seconds() -> float:
        text = object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/index.m3u8") or "#EXTM3U"
        return math.fsum(segment.duration for segment in parse_media_playlist(text).segments)

    def encoded_at_least(seconds: float) -> bool:
        return encoded_seconds() >= seconds

    for publishes in (1, 2):
        publisher = publish(encoder.rtmp_url, 4)
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        assert publisher.wait(30) == 0
        encoder.wait_state("reconnecting", 5)
        wait_until(partial(encoded_at_least, 4.0 * publishes - 0.1), 20, f"{4 * publishes} s of output")
    assert encoded_seconds() <= 8.1  # and nothing twice


def test_wrong_stream_key_is_refused(start_encoder: Callable[..., EncoderProcess]) -> None:
    encoder = start_encoder("LiveJob", live_spec(), H264_LADDER)
    wrong = encoder.rtmp_url.rsplit("/", 1)[0] + "/not-the-key"
    publisher = publish(wrong, 3)
    assert publisher.wait(20) != 0
    status = encoder.status()
    assert status["state"] == "waiting" and status["ingest"]["connected"] is False
    assert all(rendition["segmentsWritten"] == 0 for rendition in status["renditions"])
    assert encoder.stop() == 0


def test_an_rtmp_publisher_without_video_is_told_why_nothing_is_encoded(
        start_encoder: Callable[..., EncoderProcess]) -> None:
    """nginx holds a publish back until its first video key frame: audio alone never reaches ffmpeg."""
    encoder = start_encoder("LiveJob", live_spec(), ladder_template(("180p", 320, 180, "H264")))
    publisher = publish(encoder.rtmp_url, 60, video=None)
    try:
        wait_until(lambda: "no video key frame" in encoder.status()["message"], 25, "a message: no video came")
        status = encoder.status()
        assert status["state"] == "live"  # the publisher is connected: it is its stream that cannot be used
        assert all(rendition["segmentsWritten"] == 0 for rendition in status["renditions"])
    finally:
        publisher.kill()
        publisher.wait(10)
    encoder.wait_state("reconnecting", 10)
    with_video = publish(encoder.rtmp_url, 4)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert with_video.wait(30) == 0
    assert encoder.status()["message"] == "input dropped; waiting for it to come back"
    assert encoder.stop() == 0


def assert_encodes_nothing_of_an_audio_only_input(status: dict[str, Any]) -> None:
    assert status["ingest"]["statistics"]["audioChannels"] == 2  # what it does send
    assert status["ingest"]["statistics"]["width"] is None
    assert all(rendition["segmentsWritten"] == 0 for rendition in status["renditions"])


def test_an_srt_publisher_without_video_is_told_why_nothing_is_encoded(
        start_encoder: Callable[..., EncoderProcess]) -> None:
    encoder = start_encoder("LiveJob", live_spec("SRT"), ladder_template(("180p", 320, 180, "H264")))
    publisher = publish(srt_publish_url(encoder, encoder.stream_key), 60, container="mpegts", video=None)
    try:
        wait_until(lambda: "no video stream" in encoder.status()["message"], 20, "a message: the input has no video")
        assert_encodes_nothing_of_an_audio_only_input(encoder.status())
    finally:
        publisher.kill()
        publisher.wait(10)
    assert encoder.stop() == 0


def test_a_pulled_source_without_video_is_told_why_nothing_is_encoded(
        start_encoder: Callable[..., EncoderProcess], hls_origin: tuple[str, Path]) -> None:
    base_url, root = hls_origin
    source = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *pattern_input(60, video=None),
         "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", str(root / "radio.m3u8")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: (root / "radio.m3u8").exists(), 15, "the origin's first playlist")
        spec = live_spec(input={"serverType": "HLS", "url": f"{base_url}/radio.m3u8"})
        encoder = start_encoder("LiveJob", spec, ladder_template(("180p", 320, 180, "H264")))
        wait_until(lambda: "no video stream" in encoder.status()["message"], 20, "a message: the input has no video")
        # Pulled again (each time the source has a new segment), it keeps saying so.
        wait_until(lambda: encoder.log().count("the input has no video stream") >= 2, 20, "a second try")
        status = encoder.status()
        assert "no video stream" in status["message"]
        assert_encodes_nothing_of_an_audio_only_input(status)
    finally:
        source.kill()
        source.wait(10)
    assert encoder.stop() == 0


def _write_live_hls(root: Path, *hls_options: str) -> subprocess.Popen[bytes]:
    """A live source: ffmpeg writing a test pattern as 1-s HLS segments into `root`, in real time."""
    source = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", *pattern_input(60),
         "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", *hls_options, str(root / "live.m3u8")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_until(lambda: (root / "live.m3u8").exists(), 15, "the origin's first playlist")
    return source


@pytest.mark.parametrize("scheme", ["http", "httpproxy"])  # httpproxy: ffmpeg's own proxy client, refused by it
def test_a_pulled_source_whose_segments_are_at_a_refused_address_encodes_nothing_and_says_why(
        start_encoder: Callable[..., EncoderProcess], hls_origin: tuple[str, Path],
        hls_origin_requests: list[str], scheme: str) -> None:
    """The playlist comes from an address the installation allows, its segments from one it does not
    (as a redirect or a crafted playlist would send ffmpeg to the cluster's own services)."""
    base_url, root = hls_origin
    segments_host, segments_requested = serve_directory(root, "127.0.0.2")
    source = _write_live_hls(root, "-hls_base_url", f"{scheme}://127.0.0.2:{segments_host.server_address[1]}/")
    try:
        spec = live_spec(input={"serverType": "HLS", "url": f"{base_url}/live.m3u8"})
        encoder = start_encoder("LiveJob", spec, ladder_template(("180p", 320, 180, "H264")),
                                pull_allowed_networks=("127.0.0.1/32",))
        if scheme == "http":
            wait_until(lambda: "127.0.0.2 is no public address" in encoder.status()["message"], 30,
                       "a message: the segments' address is refused")
        else:
            wait_until(lambda: hls_origin_requests.count("/live.m3u8") >= 4, 30, "ffmpeg reading the playlist")
        status = encoder.status()
        assert status["state"] in ("waiting", "reconnecting")
        assert all(rendition["segmentsWritten"] == 0 for rendition in status["renditions"])
        assert "/live.m3u8" in hls_origin_requests  # the allowed origin was asked, through the guard
        assert segments_requested == []  # the refused one never
    finally:
        source.kill()
        source.wait(10)
        segments_host.shutdown()
        segments_host.server_close()
    assert encoder.stop() == 0


@pytest.mark.parametrize(("host", "refusal"), [("127.0.0.1", "127.0.0.1 is no public address"),
                                               ("localhost", "localhost resolves to no public address")])
def test_a_job_naming_a_store_at_a_private_address_fails_naming_the_field(
        start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, host: str, refusal: str) -> None:
    """An address fails when the configuration is read, a name once resolved at the start: no request
    is made to a store the installation does not allow."""
    named = object_store.endpoint.replace("127.0.0.1", host)
    encoder = start_encoder("LiveJob", live_spec(), H264_LADDER, endpoint_named_by_job=named, wait_healthy=False)
    assert encoder.process.wait(20) == EXIT_BAD_CONFIG
    assert f"spec.destination.endpoint: {refusal}" in encoder.log()


def test_a_job_naming_a_store_in_a_network_the_installation_allows_is_encoded_into_it(
        start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore) -> None:
    named = object_store.endpoint.replace("127.0.0.1", "localhost")
    encoder = start_encoder("LiveJob", live_spec(), ladder_template(("180p", 320, 180, "H264")),
                            endpoint_named_by_job=named, storage_allowed_networks=("127.0.0.0/8",))
    publisher = publish(encoder.rtmp_url, 6)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 1, 15, "a segment in the store")
    assert publisher.wait(30) == 0
    assert encoder.stop() == 0
    playlist = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/index.m3u8") or "")
    assert playlist.segments
    for segment in playlist.segments:  # every one it names is there, written through the checked connections
        object_store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/180p/{segment.uri}")


def test_an_https_source_is_fetched_by_the_guard_over_verified_tls_and_encoded(
        start_encoder: Callable[..., EncoderProcess], tmp_path: Path) -> None:
    pki = LocalPKI(tmp_path / "pki")
    pki.ensure([])  # its server certificate names 127.0.0.1
    root = tmp_path / "tls-origin"
    root.mkdir()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki.path("apiserver.crt"), pki.path("apiserver.key"))
    # The origin asks for the credentials the job's URL gives: the guard passes them on to it (and
    # would to no other origin: see tests/unit/test_encoder_pullguard.py). Its segments also need the
    # cookie its playlist sets, for a Domain and Path ffmpeg would not send it back to through the guard
    # as it was set.
    origin, requested = serve_directory(root, tls=tls, user="viewer:s3cret",
                                        cookie="viewer-session=v1; Domain=origin.example; Path=/live; Secure")
    source = _write_live_hls(root)
    try:
        port = origin.server_address[1]
        spec = live_spec(input={"serverType": "HLS", "url": f"https://viewer:s3cret@127.0.0.1:{port}/live.m3u8"})
        encoder = start_encoder("LiveJob", spec, ladder_template(("180p", 320, 180, "H264")),
                                extra_env={"SSL_CERT_FILE": str(pki.path("ca.crt"))})  # the guard verifies the origin
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        pulls = [argv for argv in children_named(encoder.process.pid, "ffmpeg").values() if "-http_proxy" in argv]
        assert pulls and pulls[0][pulls[0].index("-i") + 1].startswith("http://viewer:s3cret@127.0.0.1:")  # the guard
        wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 2, 20, "encoded segments")
        assert any(path.endswith(".ts") for path in requested)
    finally:
        source.kill()
        source.wait(10)
        origin.shutdown()
        origin.server_close()
    assert encoder.stop() == 0


def test_an_encoder_whose_rtmp_front_died_exits_instead_of_staying_live(
        start_encoder: Callable[..., EncoderProcess]) -> None:
    """No publisher reaches the encoder without nginx, and the one that was is gone: the encoder exits 1
    (its Pod restarts) rather than saying `live` for ever."""
    encoder = start_encoder("LiveJob", live_spec(), ladder_template(("180p", 320, 180, "H264")))
    publisher = publish(encoder.rtmp_url, 60)
    try:
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        front = subprocess.run(["pgrep", "-P", str(encoder.process.pid), "-x", "nginx"], capture_output=True,
                               text=True, check=True).stdout.split()
        assert len(front) == 1, front  # the front's master process, started by the encoder
        os.kill(int(front[0]), signal.SIGKILL)
        assert encoder.process.wait(20) == 1, encoder.log()[-3000:]
        assert "the RTMP front (nginx) exited" in encoder.log()
    finally:
        publisher.kill()
        publisher.wait(10)


def test_reconnect_continues_one_playlist_with_a_discontinuity(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    template = ladder_template(("180p", 320, 180, "H264"))
    encoder = start_encoder("LiveJob", live_spec(), template)
    first = publish(encoder.rtmp_url, 5)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert first.wait(30) == 0
    encoder.wait_state("reconnecting", 10)
    second = publish(encoder.rtmp_url, 5)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert second.wait(30) == 0
    encoder.wait_state("reconnecting", 3)
    assert encoder.stop() == 0
    assert encoder.states_seen[:4] == ["waiting", "live", "reconnecting", "live"]
    playlist = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/index.m3u8") or "")
    numbers = [segment.sequence for segment in playlist.segments]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    discontinuities = [segment.sequence for segment in playlist.segments if segment.discontinuity]
    # Exactly one: where the second publish starts, after the first publish's segments.
    assert len(discontinuities) == 1 and numbers[0] < discontinuities[0] <= numbers[-1], (discontinuities, numbers)
    assert not playlist.ended  # a plain SIGTERM (not /finish) leaves the live playlist open


def test_an_encoder_made_only_to_finish_closes_the_playlists_an_evicted_one_left_open(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """A LiveJob switched off while its encoder waits out a restart's back-off: the operator makes one
    that reads the playlists the dead encoder left open, writes EXT-X-ENDLIST and exits by itself,
    taking no input."""
    template = ladder_template(("180p", 320, 180, "H264"))
    spec = live_spec(recording=True)
    evicted = start_encoder("LiveJob", spec, template)
    publisher = publish(evicted.rtmp_url, 5)
    evicted.wait_state("live", GOES_LIVE_WITHIN_S)
    assert publisher.wait(30) == 0
    assert evicted.stop() == 0  # a bare SIGTERM: the playlists stay open
    keys = [f"{evicted.prefix}/180p/{name}" for name in ("index.m3u8", "event.m3u8")]
    left = [parse_media_playlist(object_store.get_text(evicted.bucket, key) or "") for key in keys]
    assert all(playlist.segments and not playlist.ended for playlist in left), left

    closer = start_encoder("LiveJob", spec, template, prefix=evicted.prefix, finish_only=True, wait_healthy=False)
    assert closer.process.wait(30) == 0, closer.log()[-3000:]
    for key, before in zip(keys, left, strict=True):
        closed = parse_media_playlist(object_store.get_text(evicted.bucket, key) or "")
        assert closed.ended, key
        # The same segments, nothing new: the closer took no input.
        assert [(s.sequence, s.uri) for s in closed.segments] == [(s.sequence, s.uri) for s in before.segments], key


def test_srt_ingest_with_passphrase(start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore) -> None:
    passphrase = "correct-horse-battery"
    template = ladder_template(("180p", 320, 180, "H264"))
    encoder = start_encoder("LiveJob", live_spec("SRT"), template, srt_passphrase=passphrase)
    base = f"srt://{encoder.host}:{encoder.srt_port}?streamid={encoder.stream_key}&pbkeylen=16"
    wrong = publish(f"{base}&passphrase=wrong-passphrase-x", 2, container="mpegts")
    assert wrong.wait(30) != 0
    # With its own passphrase the job still wants the key, in the streamid.
    keyless = publish(f"srt://{encoder.host}:{encoder.srt_port}?passphrase={passphrase}", 2, container="mpegts")
    assert keyless.wait(30) != 0
    assert encoder.status()["ingest"]["connected"] is False
    publisher = publish(f"{base}&passphrase={passphrase}", 6, container="mpegts")
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 1, 15, "a segment over SRT")
    assert publisher.wait(30) == 0
    encoder.wait_state("reconnecting", 8)
    assert encoder.stop() == 0
    playlist = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/index.m3u8") or "")
    assert math.fsum(segment.duration for segment in playlist.segments) >= 4


def test_srt_without_a_passphrase_needs_the_stream_key(start_encoder: Callable[..., EncoderProcess]) -> None:
    """With no passphrase the stream key is the SRT passphrase, so nobody publishes without the key; and
    it takes no streamid, which would show the key to whoever sees the handshake (the passphrase never
    travels)."""
    template = ladder_template(("180p", 320, 180, "H264"))
    encoder = start_encoder("LiveJob", live_spec("SRT"), template)
    listener = f"srt://{encoder.host}:{encoder.srt_port}"
    base = f"{listener}?streamid={encoder.stream_key}"
    for refused in (base, f"{base}&passphrase=not-the-stream-key&pbkeylen=16", listener,
                    f"{listener}?passphrase=not-the-stream-key"):
        assert publish(refused, 2, container="mpegts").wait(30) != 0, refused
        assert encoder.status()["ingest"]["connected"] is False
    publisher = publish(f"{listener}?passphrase={encoder.stream_key}&pbkeylen=16", 4, container="mpegts")
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 1, 15, "a segment over SRT")
    assert publisher.wait(30) == 0
    assert encoder.stop() == 0


def srt_publish_url(encoder: EncoderProcess, streamid: str | None, passphrase: str | None = None) -> str:
    """What a publisher gives ffmpeg: the job's SRT listener, a streamid and the passphrase (by default
    the stream key). ffmpeg takes the streamid as written, up to the next `&`."""
    passphrase = encoder.stream_key if passphrase is None else passphrase
    options = ([f"streamid={streamid}"] if streamid is not None else []) + [f"passphrase={passphrase}"]
    return f"srt://{encoder.host}:{encoder.srt_port}?{'&'.join(options)}"


SRT_CALLBACK_REJECTION = b"Application-defined rejection reason"  # what ffmpeg's libsrt prints


def test_srt_caller_without_the_stream_key_in_its_streamid_is_rejected_in_the_handshake(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """Each caller has the right passphrase (the stream key), so only the streamid check can refuse it,
    and it does so in the handshake: ffmpeg reports the listener's rejection, not a time-out or a drop."""
    encoder = start_encoder("LiveJob", live_spec("SRT"), ladder_template(("180p", 320, 180, "H264")))
    key = encoder.stream_key
    refused = ["not-the-key", f"{key}x", "#!::r=not-the-key,m=publish", f"#!::u={key},m=publish",
               f"#!::r={key},m=request", f"#!::r={key},m=bidirectional"]
    for streamid in refused:
        publisher = publish(srt_publish_url(encoder, streamid), 3, container="mpegts")
        assert publisher.wait(20) != 0, streamid
        stderr = publisher.stderr.read() if publisher.stderr else b""
        assert SRT_CALLBACK_REJECTION in stderr, (streamid, stderr)
    status = encoder.status()
    assert status["state"] == "waiting" and status["ingest"]["connected"] is False
    assert all(rendition["segmentsWritten"] == 0 for rendition in status["renditions"])
    listing = object_store.client.list_objects_v2(Bucket=encoder.bucket, Prefix=f"{encoder.prefix}/")
    assert listing["KeyCount"] == 0, [entry["Key"] for entry in listing.get("Contents", [])]
    # The same listener takes the key: the refusals were the streamid check, not a broken ingest.
    publisher = publish(srt_publish_url(encoder, key), 3, container="mpegts")
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert publisher.wait(30) == 0
    assert encoder.stop() == 0


def test_srt_publishes_with_either_streamid_form_and_a_reconnect_is_a_discontinuity(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    """The bare stream key, then the SRT Access Control form (other keys ignored): both publish into
    one playlist per rendition, the second after a discontinuity, and the ladder validates."""
    encoder = start_encoder("LiveJob", live_spec("SRT"), {**H264_LADDER, "playlistWindow": 20})  # keeps all
    key = encoder.stream_key
    for number, streamid in enumerate((key, f"#!::u=reporter,r={key},m=publish,h=ingest.example"), start=1):
        publisher = publish(srt_publish_url(encoder, streamid), 5, container="mpegts")
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        if number == 1:
            wait_until(lambda: encoder.status()["ingest"]["statistics"]["width"], 10, "ingest statistics")
            statistics = encoder.status()["ingest"]["statistics"]
            assert (statistics["width"], statistics["height"], statistics["videoCodecId"]) == (640, 360, 7)
            assert (statistics["audioCodecId"], statistics["audioChannels"]) == (10, 2)
        assert publisher.wait(30) == 0, publisher.stderr.read() if publisher.stderr else ""
        encoder.wait_state("reconnecting", 8)
    assert encoder.post("/finish").status_code == 202
    assert encoder.process.wait(30) == 0, encoder.log()[-3000:]
    assert encoder.states_seen[:4] == ["waiting", "live", "reconnecting", "live"]

    variants = parse_master_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/master.m3u8") or "")
    assert [variant.resolution for variant in variants] == [(640, 360), (480, 270), (320, 180)]
    for name, width, height in (("360p", 640, 360), ("270p", 480, 270), ("180p", 320, 180)):
        check_rendition(object_store, encoder, name, width, height, "h264", tmp_path, ended=True)
        text = object_store.get_text(encoder.bucket, f"{encoder.prefix}/{name}/index.m3u8") or ""
        playlist = parse_media_playlist(text)
        numbers = [segment.sequence for segment in playlist.segments]
        discontinuities = [segment.sequence for segment in playlist.segments if segment.discontinuity]
        # Exactly one: where the second publish starts, after the first publish's segments.
        assert len(discontinuities) == 1 and numbers[0] < discontinuities[0] <= numbers[-1], (name, text)
        assert numbers[0] == 0 and math.fsum(segment.duration for segment in playlist.segments) >= 8, (name, text)


def test_srt_second_publisher_is_refused_while_one_publishes(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    encoder = start_encoder("LiveJob", live_spec("SRT"), ladder_template(("180p", 320, 180, "H264")))
    first = publish(srt_publish_url(encoder, encoder.stream_key), 6, container="mpegts")
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    second = publish(srt_publish_url(encoder, encoder.stream_key), 3, container="mpegts")
    assert second.wait(20) != 0
    assert SRT_CALLBACK_REJECTION in (second.stderr.read() if second.stderr else b"")
    assert encoder.status()["state"] == "live"
    assert first.wait(30) == 0  # undisturbed to its end
    encoder.wait_state("reconnecting", 8)
    assert encoder.stop() == 0
    playlist = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/index.m3u8") or "")
    assert not any(segment.discontinuity for segment in playlist.segments)
    assert math.fsum(segment.duration for segment in playlist.segments) >= 5


def test_hls_pull_is_encoded_into_the_ladder_and_a_frozen_source_is_pulled_again(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, hls_origin: tuple[str, Path],
    hls_origin_requests: list[str], tmp_path: Path,
) -> None:
    base_url, root = hls_origin

    def start_origin() -> subprocess.Popen[bytes]:
        """A live source: ffmpeg writes a sliding-window HLS stream in real time, the encoder pulls it."""
        return subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *pattern_input(14, size="480x270"),
             "-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments",
             str(root / "live.m3u8")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    source = start_origin()
    try:
        wait_until(lambda: (root / "live.m3u8").exists(), 15, "the origin's first playlist")
        template = ladder_template(("270p", 480, 270, "H264"), ("180p", 320, 180, "H264"))
        spec = live_spec(input={"serverType": "HLS", "url": f"{base_url}/live.m3u8"})
        encoder = start_encoder("LiveJob", spec, template)
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: min(r["segmentsWritten"] for r in encoder.status()["renditions"]) >= 2, 30,
                   "two segments of each rendition from the pulled source")
        statistics = encoder.status()["ingest"]["statistics"]
        assert (statistics["width"], statistics["height"]) == (480, 270)
        # The origin dies without ENDLIST: its playlist stays, frozen. The job says so, and pulls
        # again until the origin is back.
        source.kill()
        source.wait(10)
        encoder.wait_state("reconnecting", 20)
        wait_until(lambda: "no new segment" in encoder.status()["message"], 10, "the job to say its source froze")
        # ffmpeg gave the frozen playlist up itself, its last segment closed, instead of being killed;
        # the playlist is then only watched: pulled, its newest segment would be encoded again.
        assert "ffmpeg exited with" not in encoder.log()
        written = [rendition["segmentsWritten"] for rendition in encoder.status()["renditions"]]
        asked = len(hls_origin_requests)
        wait_until(lambda: hls_origin_requests[asked:].count("/live.m3u8") >= 2, 15,
                   "two more reads of the frozen playlist")
        assert not [path for path in hls_origin_requests[asked:] if path != "/live.m3u8"]
        status = encoder.status()
        assert status["state"] == "reconnecting"
        assert [rendition["segmentsWritten"] for rendition in status["renditions"]] == written
        source = start_origin()
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    finally:
        source.kill()
        source.wait(10)
    assert encoder.stop() == 0, encoder.log()[-3000:]
    variants = parse_master_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/master.m3u8") or "")
    assert [variant.resolution for variant in variants] == [(480, 270), (320, 180)]
    check_rendition(object_store, encoder, "270p", 480, 270, "h264", tmp_path, ended=False)
    check_rendition(object_store, encoder, "180p", 320, 180, "h264", tmp_path, ended=False)


def test_an_hls_source_that_ended_its_broadcast_is_not_replayed_and_is_pulled_when_live_again(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, hls_origin: tuple[str, Path],
) -> None:
    """Pulled again, a playlist with ENDLIST is read from its first segment: the viewers would see the
    broadcast once more, and again after each pull. The job waits for the source to go live again."""
    base_url, root = hls_origin

    def broadcast(seconds: float, segment_names: str, ended: bool) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *pattern_input(seconds, size="320x180"),
             "-f", "hls", "-hls_time", "1", "-hls_list_size", "0" if ended else "6",
             "-hls_segment_filename", str(root / segment_names), str(root / "source.m3u8")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    first = broadcast(4, "first_%03d.ts", ended=True)  # ffmpeg closes the playlist with ENDLIST when done
    wait_until(lambda: (root / "source.m3u8").exists(), 15, "the source's first playlist")
    template = ladder_template(("180p", 320, 180, "H264"))
    encoder = start_encoder("LiveJob", live_spec(input={"serverType": "HLS", "url": f"{base_url}/source.m3u8"},
                                                 recording=True), template)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert first.wait(30) == 0
    assert "#EXT-X-ENDLIST" in (root / "source.m3u8").read_text()
    wait_until(lambda: "has ended" in encoder.status()["message"], 30, "the job to say its source ended")
    second = broadcast(30, "second_%03d.ts", ended=False)
    try:
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 8, 30, "the second broadcast")
    finally:
        second.kill()
        second.wait(10)
    assert encoder.stop() == 0, encoder.log()[-3000:]
    event = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/event.m3u8") or "")
    breaks = [index for index, segment in enumerate(event.segments) if segment.discontinuity]
    assert len(breaks) == 1, [(segment.uri, segment.discontinuity) for segment in event.segments]
    assert math.fsum(segment.duration for segment in event.segments[:breaks[0]]) < 6  # the first 4 s, once


def test_dvr_window_keeps_that_many_seconds_in_the_live_playlist(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    template = {**ladder_template(("180p", 320, 180, "H264")), "playlistWindow": 3}
    dvr_seconds = 8
    encoder = start_encoder("LiveJob", live_spec(dvrWindowSeconds=dvr_seconds), template)
    publisher = publish(encoder.rtmp_url, 26)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    assert publisher.wait(40) == 0
    encoder.wait_state("reconnecting", 5)
    assert encoder.stop() == 0, encoder.log()[-3000:]
    playlist = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/index.m3u8") or "")
    seconds = math.fsum(segment.duration for segment in playlist.segments)
    # More than the 3-segment sliding window: the DVR window's seconds, and every segment in it playable.
    assert len(playlist.segments) > 3 and dvr_seconds <= seconds < dvr_seconds + 2 * SEGMENT_SECONDS, (
        len(playlist.segments), seconds)
    for segment in playlist.segments:
        object_store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/180p/{segment.uri}")
    # What slid out of the DVR window is deleted from the bucket once no player can ask for it (its
    # duration plus the playlist's later: RFC 8216 6.2.2), not kept forever.
    assert playlist.media_sequence > 0
    listed = object_store.client.list_objects_v2(Bucket=encoder.bucket, Prefix=f"{encoder.prefix}/180p/seg_")
    stored = [item["Key"].rsplit("/", 1)[1] for item in listed.get("Contents", [])]
    assert "seg_000000.ts" not in stored, stored
