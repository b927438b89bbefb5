"""Stopping: a bare SIGTERM (an eviction) leaves a clip that follows the live stream for the next attempt,
and a stop ends within the Pod's grace period even when the store never answers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from waiting import eventually

from onair.encoder.clip import ClipJob
from onair.encoder.config import load_job_config
from onair.encoder.pipeline import STOP_SPARE_SECONDS, Encoder, Ports
from onair.encoder.playlist import Segment, parse_media_playlist, render_media_playlist
from onair.encoder.status import EncoderState
from onair.exitcodes import EXIT_INTERRUPTED, EXIT_OK, FINISHED_MESSAGE

pytestmark = pytest.mark.unit


# --- a clip whose end is still to come ---------------------------------------------------------------


class LiveBucket:
    """A LiveJob's stored stream (one rendition, segments up to 8 s ago), and what the clip writes."""

    def __init__(self, now: datetime) -> None:
        segments = [Segment(i, 4.0, f"seg_{i:06d}.ts", now - timedelta(seconds=40 - 4 * i)) for i in range(8)]
        self.objects = {
            "live/news/master.m3u8": b'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS="avc1.64001f,mp4a.40.2"\n'
                                     b"720p/index.m3u8\n",
            "live/news/720p/index.m3u8": render_media_playlist(segments, nominal_duration=4).encode(),
        }
        self.objects.update({f"live/news/720p/{segment.uri}": b"media" for segment in segments})

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        self.objects[key] = body

    def copy(self, source_key: str, key: str, cache_control: str, source_bucket: str | None = None) -> None:
        self.objects[key] = self.objects[source_key]

    def sizes(self, folder: str) -> dict[str, int]:
        prefix = folder.rstrip("/") + "/"
        return {key[len(prefix):]: len(body) for key, body in self.objects.items()
                if key.startswith(prefix) and "/" not in key[len(prefix):]}

    def clip_keys(self) -> list[str]:
        return sorted(key for key in self.objects if key.startswith("clips/c/"))


async def clip_waiting_for_its_end(tmp_path: Path, now: datetime) -> tuple[ClipJob, LiveBucket, asyncio.Task[int]]:
    """A recording of the LiveJob's range from 30 s ago to a minute from now, run until it waits for
    the stream to get there."""
    envelope = {"kind": "RecordJob", "namespace": "ns", "name": "clip", "template": None,
                "spec": {"source": {"liveJobRef": "news"}, "output": {"bucket": "media"}},
                "storage": {"endpoint": "http://s3", "bucket": "media", "prefix": "clips/c"},
                "clip": {"sourcePrefix": "live/news", "start": (now - timedelta(seconds=30)).isoformat(),
                         "end": (now + timedelta(seconds=60)).isoformat()}}
    config = load_job_config({"ONAIR_JOB_CONFIG": json.dumps(envelope)})
    bucket = LiveBucket(now)
    status = Encoder(config, Ports(), tmp_path, bucket, 10**9).status  # as main.py makes it
    assert config.clip is not None
    job = ClipJob(config, config.clip, bucket, status, tmp_path)
    run = asyncio.create_task(job.run())
    await eventually(lambda: "reach the clip's end" in status.message, "the clip to wait for the stream")
    return job, bucket, run

@pytest.mark.parametrize("finishing", [None, True], ids=["sigterm", "finish"])
async def test_a_clip_waiting_for_its_end_is_left_for_the_next_attempt_by_a_sigterm(
    tmp_path: Path, finishing: bool | None
) -> None:
    job, bucket, run = await clip_waiting_for_its_end(tmp_path, datetime.now(UTC))
    status = job.status
    job.request_stop(finishing)  # None: main.py's SIGTERM handler; True: the operator's POST /finish
    code = await asyncio.wait_for(run, 5)
    if finishing:  # the end of the job: the clip is what the stream has so far, for good
        assert code == EXIT_OK and status.state == EncoderState.COMPLETED
        assert parse_media_playlist(bucket.objects["clips/c/720p/index.m3u8"].decode()).ended
    else:  # an eviction: nothing final is written, and the operator starts the next attempt
        assert code == EXIT_INTERRUPTED and status.state != EncoderState.COMPLETED
        assert bucket.clip_keys() == []


async def test_a_following_clip_ends_where_the_operator_moved_its_end(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("onair.encoder.clip.FOLLOW_POLL_SECONDS", 0.02)
    now = datetime.now(UTC)
    job, bucket, run = await clip_waiting_for_its_end(tmp_path, now)
    status = job.status
    status.finish_at = now - timedelta(seconds=14)  # the operator's POST /finish-at: the range cut short
    assert await asyncio.wait_for(run, 5) == EXIT_OK and status.state == EncoderState.COMPLETED
    clip = parse_media_playlist(bucket.objects["clips/c/720p/index.m3u8"].decode())
    assert clip.ended and clip.segments[-1].program_date_time < now - timedelta(seconds=14)


# --- a store that never answers ---------------------------------------------------------------------


class UnansweringStore:
    """Accepts the request and never answers (until the test ends): botocore would wait 10 s a try."""

    def __init__(self) -> None:
        self.answer = threading.Event()
        self.lock = threading.Lock()
        self.waiting = 0

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        with self.lock:
            self.waiting += 1
        self.answer.wait(30)

    def delete(self, key: str) -> None:
        self.put(key, b"", "", "")


async def test_a_sigterm_ends_within_the_grace_period_counted_from_the_signal_when_the_store_never_answers(
    tmp_path: Path,
) -> None:
    uploads_share = 0.6  # of the grace period; main's os._exit comes 0.5 s before its end
    grace = uploads_share + STOP_SPARE_SECONDS
    envelope = {"kind": "LiveJob", "namespace": "ns", "name": "j",
                "spec": {"jobTemplateId": 1, "input": {"serverType": "RTMP"}, "destination": {"bucket": "media"}},
                "template": {"id": 1, "name": "l", "segmentDurationSeconds": 4, "playlistWindow": 3, "renditions": [
                    {"name": name, "width": 320, "height": 240, "fps": 30, "videoBitrate": 400000}
                    for name in ("a", "b", "c")]},
                "storage": {"endpoint": "http://s3", "bucket": "media", "prefix": "live/j"}}
    config = load_job_config({"ONAIR_JOB_CONFIG": json.dumps(envelope), "ONAIR_STREAM_KEY": "key"})
    store = UnansweringStore()
    encoder = Encoder(config, Ports(), tmp_path, store, 10**9, stop_grace_seconds=grace)
    encoder.uploader.start()
    for name in ("a", "b", "c"):
        encoder.uploader.put_bytes(f"live/j/{name}/index.m3u8", b"#EXTM3U\n", "no-cache")
    longest_stall = 0.0

    async def heartbeat() -> None:  # what main's safety exit needs: a loop that runs its callbacks
        nonlocal longest_stall
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            longest_stall = max(longest_stall, time.monotonic() - before)

    beating = asyncio.create_task(heartbeat())
    try:
        await eventually(lambda: store.waiting == 3, "every rendition's upload to hang")
        encoder.request_stop()  # main.py's SIGTERM handler
        signalled = time.monotonic()
        await asyncio.sleep(0.4)  # the session's ffmpeg closing its last segment takes part of the grace period
        code = await encoder._finish()
        stopped_after = time.monotonic() - signalled
    finally:
        beating.cancel()
        store.answer.set()
    assert code == EXIT_OK and encoder.status.state == EncoderState.FAILED
    assert "uploaded" in encoder.status.message
    assert stopped_after < uploads_share + 0.2  # counted from the signal, not from the end of the session
    assert longest_stall < 0.2


class DownStore:
    """A store that refuses every write and has nothing stored."""

    def put(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("store down")

    def delete(self, key: str) -> None:
        raise ConnectionError("store down")

    def get(self, key: str) -> None:
        return None

    def list_names(self, folder: str) -> list[str]:
        return []

    def sizes(self, folder: str) -> dict[str, int]:
        raise ConnectionError("store down")


async def test_a_recording_that_ends_while_the_store_is_down_is_not_done(tmp_path: Path) -> None:
    """Its closed playlist and its master never reached the bucket: exit 0 would make the job Completed
    with neither. The next attempt finishes it from what the bucket has."""
    envelope = {"kind": "RecordJob", "namespace": "ns", "name": "rec", "template": None,
                "spec": {"source": {"streamUrl": "http://origin/live.m3u8"}, "output": {"bucket": "media",
                                                                                       "type": "vod"}},
                "storage": {"endpoint": "http://s3", "bucket": "media", "prefix": "out"}}
    config = load_job_config({"ONAIR_JOB_CONFIG": json.dumps(envelope)})
    encoder = Encoder(config, Ports(), tmp_path, DownStore(), 10**9, stop_grace_seconds=STOP_SPARE_SECONDS + 0.5)
    encoder.uploader.start()
    segment = tmp_path / "seg_000000.ts"
    segment.write_bytes(b"x" * 100)
    encoder.tracks["source"].add(4.0, segment.name, datetime.now(UTC), size_bytes=100)
    encoder.uploader.put_file(config.key("source", segment.name), segment)
    encoder.request_stop(finishing=True)  # the end of its range (the operator's POST /finish)
    code = await encoder._finish()
    assert code == EXIT_INTERRUPTED and encoder.status.state == EncoderState.FAILED
    assert encoder.exit_code(uploaded=False) == EXIT_INTERRUPTED  # main's safety exit says the same


class StoreBackLater:
    """A LiveJob's bucket with one open playlist an earlier Pod left, that answers no read until `up`."""

    def __init__(self, now: datetime) -> None:
        self.up = threading.Event()
        segments = [Segment(i, 4.0, f"seg_{i:06d}.ts", now - timedelta(seconds=40 - 4 * i)) for i in range(3)]
        self.objects = {"live/j/a/index.m3u8": render_media_playlist(segments, nominal_duration=4).encode()}

    def get(self, key: str) -> bytes | None:
        if not self.up.is_set():
            raise ConnectionError("store down")
        return self.objects.get(key)

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        self.objects[key] = body

    def put_file(self, key: str, path: Path, content_type: str, cache_control: str) -> None:
        self.objects[key] = path.read_bytes()

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)

    def list_names(self, folder: str) -> list[str]:
        return []

    def sizes(self, folder: str) -> dict[str, int]:
        return {}


def live_job_config(finish_only: bool = False) -> Any:
    envelope = {"kind": "LiveJob", "namespace": "ns", "name": "j", "finishOnly": finish_only,
                "spec": {"jobTemplateId": 1, "input": {"serverType": "RTMP"}, "destination": {"bucket": "media"}},
                "template": {"id": 1, "name": "l", "segmentDurationSeconds": 4, "playlistWindow": 3, "renditions": [
                    {"name": "a", "width": 320, "height": 240, "fps": 30, "videoBitrate": 400000}]},
                "storage": {"endpoint": "http://s3", "bucket": "media", "prefix": "live/j"}}
    return load_job_config({"ONAIR_JOB_CONFIG": json.dumps(envelope), "ONAIR_STREAM_KEY": "key"})


async def test_a_live_job_told_to_finish_while_its_store_is_down_reads_and_closes_the_playlists_once_it_is_up(
    tmp_path: Path,
) -> None:
    """Switched off while the encoder that replaces a dead one waits for the bucket: POST /finish does not
    end that wait (it would exit having closed nothing); it closes them once the bucket answers."""
    store = StoreBackLater(datetime.now(UTC))
    encoder = Encoder(live_job_config(), Ports(), tmp_path, store, 10**9, stop_grace_seconds=STOP_SPARE_SECONDS + 5)
    resuming = asyncio.create_task(encoder._resume_from_store())
    await eventually(lambda: encoder.status.state == EncoderState.WAITING, "the wait for the store")
    encoder.request_stop(finishing=True)  # POST /finish
    await asyncio.sleep(0.1)
    assert not resuming.done()
    store.up.set()
    await asyncio.wait_for(resuming, 10)
    encoder.uploader.start()
    assert await encoder._finish() == EXIT_OK and encoder.status.message == FINISHED_MESSAGE
    closed = parse_media_playlist(store.objects["live/j/a/index.m3u8"].decode())
    assert closed.ended and [segment.sequence for segment in closed.segments] == [0, 1, 2]


async def test_a_live_job_stopped_before_its_store_answered_does_not_say_it_finished(tmp_path: Path) -> None:
    """A closer (or a replacement told to finish) whose time is up before the bucket answered closed
    nothing: its last words do not let the operator take the playlists for closed."""
    store = StoreBackLater(datetime.now(UTC))
    encoder = Encoder(live_job_config(finish_only=True), Ports(), tmp_path, store, 10**9,
                      stop_grace_seconds=STOP_SPARE_SECONDS + 0.5)
    resuming = asyncio.create_task(encoder._resume_from_store())
    await eventually(lambda: encoder.status.state == EncoderState.WAITING, "the wait for the store")
    encoder.request_stop(finishing=True)
    encoder.request_stop()  # the SIGTERM at the end of the operator's wait
    await asyncio.wait_for(resuming, 10)
    encoder.uploader.start()
    assert await encoder._finish() == EXIT_OK
    assert encoder.status.message != FINISHED_MESSAGE and "stay open" in encoder.status.message
    assert not parse_media_playlist(store.objects["live/j/a/index.m3u8"].decode()).ended


# --- an end moved while the encoder runs -------------------------------------------------------------


async def test_the_encoder_ends_at_the_finish_time_it_holds_now_not_the_one_it_started_with(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    envelope = {"kind": "LiveJob", "namespace": "ns", "name": "j",
                "spec": {"jobTemplateId": 1, "input": {"serverType": "RTMP"}, "destination": {"bucket": "media"},
                         "schedule": {"finishDateTime": (now - timedelta(seconds=1)).isoformat()}},
                "template": {"id": 1, "name": "l", "segmentDurationSeconds": 4, "playlistWindow": 3, "renditions": [
                    {"name": "a", "width": 320, "height": 240, "fps": 30, "videoBitrate": 400000}]},
                "storage": {"endpoint": "http://s3", "bucket": "media", "prefix": "live/j"}}
    config = load_job_config({"ONAIR_JOB_CONFIG": json.dumps(envelope), "ONAIR_STREAM_KEY": "key"})
    encoder = Encoder(config, Ports(), tmp_path, UnansweringStore(), 10**9)
    assert encoder.status.finish_at == config.finish_at
    encoder.status.finish_at = now + timedelta(hours=1)  # the operator's POST /finish-at: overtime
    watching = asyncio.create_task(encoder._watch_time_range())
    try:
        # Progress is set on each look at the clock, just before the end is checked.
        await eventually(lambda: encoder.status.renditions["a"].progress is not None, "a look at the clock")
        assert not encoder.stop_requested.is_set()
        encoder.status.finish_at = now - timedelta(seconds=1)  # and the end brought back
        await eventually(encoder.stop_requested.is_set, "the encoder to end the job at the end it holds")
        assert encoder.finishing is True
    finally:
        watching.cancel()
    evicted = Encoder(config, Ports(), tmp_path / "evicted", UnansweringStore(), 10**9)
    evicted.status.finish_at = now + timedelta(hours=1)
    evicted.request_stop()  # a SIGTERM before the moved end is an eviction, not the end of the job
    assert evicted.finishing is False
