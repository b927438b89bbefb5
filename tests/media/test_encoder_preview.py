"""The live preview, the REST contract's webSocketConnection: the ingest copied into MPEG-TS over a
WebSocket while somebody watches, from RTMP and SRT publishers and from a pulled HLS source."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from livepreview import receive_preview
from media_helpers import (
    GOES_LIVE_WITHIN_S,
    EncoderProcess,
    children_named,
    ffprobe,
    ladder_template,
    live_spec,
    pattern_input,
    publish,
)
from waiting import wait_until

TEMPLATE = ladder_template(("180p", 320, 180, "H264"))
WATCHED_BYTES = 300_000


def preview_ffmpegs(encoder: EncoderProcess) -> list[int]:
    """The encoder's ffmpeg children that copy a stream into MPEG-TS on their stdout: the preview's."""
    return [pid for pid, argv in children_named(encoder.process.pid, "ffmpeg").items()
            if argv[-3:] == ["-f", "mpegts", "pipe:1"]]


def check_preview(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    streams = {stream["codec_type"]: stream for stream in ffprobe(path)["streams"]}
    assert (streams["video"]["codec_name"], streams["video"]["width"], streams["video"]["height"]) == ("h264", 640, 360)
    assert streams["audio"]["codec_name"] == "aac"


def start_hls_origin(root: Path) -> subprocess.Popen[bytes]:
    """A live HLS source in real time, for the encoder to pull."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *pattern_input(30), "-f", "hls",
         "-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments", str(root / "live.m3u8")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("server_type", ["RTMP", "SRT", "HLS"])
def test_preview_streams_the_source_while_somebody_watches(
    server_type: str, start_encoder: Callable[..., EncoderProcess], hls_origin: tuple[str, Path], tmp_path: Path
) -> None:
    if server_type == "HLS":
        origin_url, root = hls_origin
        source = start_hls_origin(root)
        wait_until(lambda: (root / "live.m3u8").exists(), 15, "the origin's first playlist")
        encoder = start_encoder("LiveJob", live_spec(input={"serverType": "HLS", "url": f"{origin_url}/live.m3u8"}),
                                TEMPLATE)
    else:
        encoder = start_encoder("LiveJob", live_spec(server_type), TEMPLATE)
        if server_type == "RTMP":
            source = publish(encoder.rtmp_url, 30)
        else:
            srt = f"srt://{encoder.host}:{encoder.srt_port}?streamid={encoder.stream_key}&passphrase={encoder.stream_key}"
            source = publish(srt, 30, container="mpegts")
    wrong = encoder.preview_url("not-the-preview-key").replace("ws://", "http://")
    assert requests.get(wrong, timeout=5).status_code == 404
    try:
        encoder.wait_state("live", GOES_LIVE_WITHIN_S)
        assert preview_ffmpegs(encoder) == []  # nothing runs while nobody watches
        # An ffmpeg plays an RTMP stream from nginx-rtmp, or pulls the HLS source again; SRT's relay
        # hands over the payload itself.
        feeders = 0 if server_type == "SRT" else 1

        def one_feed_runs() -> None:
            assert len(preview_ffmpegs(encoder)) == feeders
            metrics = requests.get(f"{encoder.base_url}/metrics", timeout=5).text
            assert "onair_encoder_preview_viewers 1.0" in metrics.splitlines()

        check_preview(receive_preview(encoder.preview_url(), WATCHED_BYTES, while_watching=one_feed_runs),
                      tmp_path / "preview.ts")
        wait_until(lambda: not preview_ffmpegs(encoder), 10, "the preview's ffmpeg to stop after its viewer left")
    finally:
        source.kill()
        source.wait()
    assert encoder.stop() == 0
