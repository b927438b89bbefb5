"""Keyframes on the segment grid in every codec, with the encoder's own options and real ffmpeg: at
29.97 fps a GOP of round(fps * 2) frames lasts 2.002 s, so a codec that keeps its GOP instead of the
forced keyframes drifts a frame off the grid every 33 s, and its segments stop covering the same
times as the other renditions'."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from onair.encoder.ffmpeg import video_codec_args
from onair.models import Rendition, VideoCodec

FPS = 30000 / 1001
SEGMENT_SECONDS = 4
SECONDS = 70  # past the 33 s that would drift a 2.002 s GOP by a frame, and a second time


def keyframe_times(codec: VideoCodec, tmp_path: Path) -> list[float]:
    rendition = Rendition(name="tiny", width=64, height=64, fps=round(FPS, 2), video_bitrate=100_000, codec=codec,
                          gop_seconds=2)
    output = tmp_path / f"{codec.value}.mkv"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc=size=64x64:rate=30000/1001:duration={SECONDS}",
                    *video_codec_args(rendition, SEGMENT_SECONDS), str(output)], check=True, timeout=120)
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time,flags",
                            "-of", "json", str(output)], check=True, capture_output=True, text=True, timeout=60)
    packets = json.loads(probe.stdout)["packets"]
    return sorted(float(p["pts_time"]) for p in packets if "K" in p["flags"])


@pytest.mark.parametrize("codec", [VideoCodec.H264, VideoCodec.HEVC, VideoCodec.VP9])
def test_every_segment_boundary_is_a_keyframe_at_29_97_fps(codec: VideoCodec, tmp_path: Path) -> None:
    keyframes = keyframe_times(codec, tmp_path)
    frame = 1001 / 30000
    for boundary in range(0, SECONDS - SEGMENT_SECONDS + 1, SEGMENT_SECONDS):
        # The first frame at or after the boundary, where the segmenter cuts.
        expected = math.ceil(boundary / frame - 1e-6) * frame
        assert any(abs(time - expected) < frame / 2 for time in keyframes), (codec, boundary, keyframes)
