"""A passthrough's master after its source reconnects: the new session may bring other codecs, so its
first segment is probed again, and the master lists the codecs of every session its playlists still name
(RFC 8216 4.3.4.2), also when the old session's probe ends last; one that slid out is forgotten."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from waiting import eventually

from onair.encoder import pipeline
from onair.encoder.config import JobConfig, load_job_config
from onair.encoder.passthrough import ProgramStreams
from onair.encoder.pipeline import Encoder, Ports
from onair.encoder.playlist import Segment, Variant, parse_master_playlist, render_media_playlist
from onair.encoder.probe import Probed
from onair.encoder.status import EncoderState
from onair.exitcodes import EXIT_OK
from onair.models import PASSTHROUGH_PLAYLIST_WINDOW

pytestmark = pytest.mark.unit

H264_MAIN = [{"codec_type": "video", "codec_name": "h264", "profile": "Main", "level": 31, "width": 640,
              "height": 360, "avg_frame_rate": "25/1"}, {"codec_type": "audio", "codec_name": "aac", "profile": "LC"}]
H264_HIGH = [{**H264_MAIN[0], "profile": "High", "level": 40, "width": 1280, "height": 720}, H264_MAIN[1]]
HIGH_CODECS = "avc1.640028,mp4a.40.2"
BOTH_CODECS = "avc1.4d401f,avc1.640028,mp4a.40.2"

# ffprobe as the encoder runs it (`ffprobe ... -show_streams -of json <file>`), for segments whose content
# is the description itself; one that names a `heldUntil` file answers once that file exists.
FAKE_FFPROBE = f"""#!{sys.executable}
import json, pathlib, sys, time
described = json.loads(pathlib.Path(sys.argv[-1]).read_text())
held_until = described.pop("heldUntil", None)
deadline = time.monotonic() + 10
while held_until and not pathlib.Path(held_until).exists() and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps(described))
"""


class Bucket:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        self.objects[key] = body

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def list_names(self, folder: str) -> list[str]:
        return []


def ended_process() -> Any:
    """A process whose output has all been read."""
    process = SimpleNamespace(stdout=asyncio.StreamReader(), stderr=asyncio.StreamReader())
    process.stdout.feed_eof()
    process.stderr.feed_eof()
    return process


class OneSegmentSource:
    """Stands in for a passthrough session's remux and packager (passthrough.PassthroughProcesses): the
    source carries `program`, the packager closes one segment that ffprobe describes as `described`,
    then the source drops."""

    def __init__(self, program: ProgramStreams, described: dict[str, Any]) -> None:
        self.program = program
        self.described = described
        self.remux = ended_process()
        self.returncode = 1

    async def read_program(self) -> ProgramStreams:
        return self.program

    async def start_packager(self, argv: list[str], preexec: Callable[[], None]) -> Any:
        self.close_segment(Path(argv[-1]), int(argv[argv.index("-start_number") + 1]))
        return ended_process()

    def close_segment(self, local_playlist: Path, number: int) -> None:
        """What ffmpeg's hls muxer leaves: the segment, then the local playlist naming it."""
        name = f"seg_{number:06d}.ts"
        (local_playlist.parent / name).write_text(json.dumps(self.described))
        segment = Segment(number, 4.0, name, datetime.now(UTC))
        local_playlist.write_text(render_media_playlist([segment], nominal_duration=4))

    def interrupt(self) -> None:
        pass

    def kill_input(self) -> None:
        pass

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def wait(self) -> None:
        pass


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[OneSegmentSource]:
    """The sessions the source will give, in order; ffprobe is the fake above."""
    queued: list[OneSegmentSource] = []

    async def start(argv: list[str], preexec: Callable[[], None], stdin: int = 0,
                    env: object = None) -> OneSegmentSource:
        return queued.pop(0)

    monkeypatch.setattr(pipeline, "PassthroughProcesses", SimpleNamespace(start=start))
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "ffprobe").write_text(FAKE_FFPROBE)
    (tools / "ffprobe").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    return queued


def passthrough_config(kind: str, spec: dict[str, Any]) -> JobConfig:
    envelope = {"kind": kind, "namespace": "ns", "name": "job", "spec": spec, "template": None,
                "storage": {"endpoint": "http://s3", "bucket": "media", "prefix": "out"}}
    return load_job_config({"ONAIR_JOB_CONFIG": json.dumps(envelope)})


def master_variants(bucket: Bucket) -> list[Variant]:
    body = bucket.objects.get("out/master.m3u8")
    return parse_master_playlist(body.decode()) if body else []


def master_codecs(bucket: Bucket) -> list[str]:
    return [variant.codecs for variant in master_variants(bucket)]


def probes_running(tmp_path: Path) -> bool:
    """A probe removes its copy of the segment once ffprobe has answered."""
    return any((tmp_path / "work").rglob("probe_*"))


async def test_a_vod_recording_whose_source_reconnected_gets_its_master(
    tmp_path: Path, sources: list[OneSegmentSource]
) -> None:
    config = passthrough_config("RecordJob", {"source": {"streamUrl": "http://origin/live.m3u8"},
                                              "output": {"bucket": "media", "type": "vod"}})
    bucket = Bucket()
    encoder = Encoder(config, Ports(), tmp_path / "work", bucket, 10**9)
    encoder.uploader.start()
    await encoder._resume_from_store()  # nothing stored: a first attempt, as run() begins
    sources += [OneSegmentSource(ProgramStreams("h264", "aac"), {"streams": H264_MAIN}),
                OneSegmentSource(ProgramStreams("h264", "aac"), {"streams": H264_HIGH})]
    for _ in range(2):
        assert await encoder._run_session("http://origin/live.m3u8", listener=False, pull=True)
        await eventually(lambda: not probes_running(tmp_path), "the session's probe to end")
    encoder.request_stop(finishing=True)  # the recording's end
    assert await encoder._finish() == EXIT_OK
    assert encoder.status.state == EncoderState.COMPLETED
    # The recording holds both sessions: a player given one codec would not expect the other.
    assert master_codecs(bucket) == [BOTH_CODECS]
    assert master_variants(bucket)[0].resolution == (1280, 720)


async def test_a_live_master_names_the_codecs_of_the_sessions_in_its_window_also_when_the_old_probe_ends_last(
    tmp_path: Path, sources: list[OneSegmentSource]
) -> None:
    config = passthrough_config("LiveJob", {"jobTemplateId": 1, "destination": {"bucket": "media"}, "input": {
        "serverType": "HLS", "url": "http://origin/live.m3u8", "inputClass": "Single"}})
    bucket = Bucket()
    encoder = Encoder(config, Ports(), tmp_path / "work", bucket, 10**9)
    encoder.uploader.start()
    old_probe_may_answer = tmp_path / "old probe may answer"
    sources += [OneSegmentSource(ProgramStreams("h264", "aac"),
                                 {"streams": H264_MAIN, "heldUntil": str(old_probe_may_answer)})]
    sources += [OneSegmentSource(ProgramStreams("h264", "aac"), {"streams": H264_HIGH})
                for _ in range(PASSTHROUGH_PLAYLIST_WINDOW)]
    try:
        for _ in range(2):
            assert await encoder._run_session("http://origin/live.m3u8", listener=False, pull=True)
        await eventually(lambda: master_codecs(bucket) == [HIGH_CODECS], "a master with the new session's codecs")
        old_probe_may_answer.touch()
        await eventually(lambda: master_codecs(bucket) == [BOTH_CODECS], "the old session's codecs beside them")
        # Sessions of one segment each, until the old session's has left the live window.
        for _ in range(PASSTHROUGH_PLAYLIST_WINDOW - 1):
            assert await encoder._run_session("http://origin/live.m3u8", listener=False, pull=True)
        await eventually(lambda: not probes_running(tmp_path), "the probes to end")
        assert await asyncio.to_thread(encoder.uploader.wait_idle, 5)
        assert master_codecs(bucket) == [HIGH_CODECS]
    finally:
        old_probe_may_answer.touch()
        encoder.uploader.stop()


def test_the_master_is_rendered_again_only_when_the_sessions_its_playlist_names_change() -> None:
    """Each new segment does not rewrite the master of a variant with several sessions: only an older
    session sliding out of the playlist does (or a new session's probe)."""
    main, high = Probed(("avc1.4d401f", "mp4a.40.2"), (640, 360), 25.0), Probed(("avc1.640028", "mp4a.40.2"),
                                                                              (1280, 720), 25.0)
    variant = pipeline.VariantInfo({0: main, 5: high}, "avc1.64001f,mp4a.40.2")
    assert variant.described(0) == (BOTH_CODECS, (1280, 720), 25.0)
    assert variant.named_sessions(3) == variant.described_sessions == (0, 5)  # a segment of the first slid out
    assert variant.named_sessions(5) != variant.described_sessions  # the first session is gone from it
    assert variant.described(5) == (HIGH_CODECS, (1280, 720), 25.0) and list(variant.sessions) == [5]


async def test_a_probe_of_the_old_session_ending_after_a_reconnect_leaves_the_new_one_to_probe(
    tmp_path: Path, sources: list[OneSegmentSource]
) -> None:
    config = passthrough_config("LiveJob", {"jobTemplateId": 1, "destination": {"bucket": "media"}, "input": {
        "serverType": "HLS", "url": "http://origin/live.m3u8", "inputClass": "Single"}})
    encoder = Encoder(config, Ports(), tmp_path / "work", Bucket(), 10**9)
    may_answer = tmp_path / "may answer"
    segment = tmp_path / "probe_seg_000000.ts"
    segment.write_text(json.dumps({"streams": H264_MAIN, "heldUntil": str(may_answer)}))
    probe = asyncio.create_task(encoder._probe_variant("source", segment, None, 1000, 4.0, 0,
                                                       encoder._variants_generation))
    await asyncio.sleep(0)  # the probe runs
    encoder._probe_new_session()  # the source reconnected while the old session's first segment was probed
    may_answer.touch()
    await probe
    assert "source" in encoder._unprobed, "the new session's first segment is still to be probed"
    assert encoder.variants["source"].sessions == {0: Probed(("avc1.4d401f", "mp4a.40.2"), (640, 360), 25.0)}
