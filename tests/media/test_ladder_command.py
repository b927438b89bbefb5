"""The ladder's ffmpeg command, run by real ffmpeg: one tee output whose hls muxers each write a
rendition with its video and the one shared audio, also where the work directory's name holds the
characters the tee's option syntax gives a meaning to."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from media_helpers import job_environment

from onair.encoder.config import load_job_config
from onair.encoder.ffmpeg import build_session_argv, session_outputs
from onair.encoder.playlist import parse_media_playlist

pytestmark = pytest.mark.media

SEGMENT_SECONDS = 2
LADDER = {
    "id": 1, "name": "mixed", "segmentDurationSeconds": SEGMENT_SECONDS, "playlistWindow": 3,
    "renditions": [
        {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 600_000},
        {"name": "270p", "width": 480, "height": 270, "fps": 30, "videoBitrate": 300_000, "codec": "HEVC"},
        {"name": "180p", "width": 320, "height": 180, "fps": 15, "videoBitrate": 150_000, "codec": "VP9"},
    ],
}  # fmt: skip


def streams_of(path: Path) -> list[tuple[str, int | None]]:
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width", "-of", "json",
                            str(path)], check=True, capture_output=True, text=True, timeout=60)
    return sorted((s["codec_name"], s.get("width")) for s in json.loads(probe.stdout)["streams"])


def test_every_rendition_gets_its_video_and_the_shared_audio_in_a_directory_with_tee_syntax_in_its_name(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "6", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "30", "-c:a", "aac", str(source)], check=True, timeout=60)
    config = load_job_config(job_environment(LADDER))
    outputs = session_outputs(config, tmp_path / "it's a [work]:dir|here", 1)
    for output in outputs:
        output.directory.mkdir(parents=True)
    argv = build_session_argv(config, str(source), outputs, {"360p": 40, "270p": 40, "180p": 40},
                              live_listener=False)

    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr[-2000:]
    expected = {"360p": ("h264", 640), "270p": ("hevc", 480), "180p": ("vp9", 320)}
    for output in outputs:
        playlist = parse_media_playlist(output.local_playlist.read_text())
        assert playlist.segments[0].sequence == 40
        assert sum(segment.duration for segment in playlist.segments) == pytest.approx(6, abs=0.2)
        first = output.directory / playlist.segments[0].uri
        probed = first if output.init_name is None else _joined(output.directory / output.init_name, first, tmp_path)
        assert streams_of(probed) == sorted([("aac", None), expected[output.rendition]]), output.rendition


def _joined(init: Path, segment: Path, tmp_path: Path) -> Path:
    """An fMP4 segment is readable with its init segment in front of it."""
    joined = tmp_path / f"{segment.parent.name}.mp4"
    joined.write_bytes(init.read_bytes() + segment.read_bytes())
    return joined
