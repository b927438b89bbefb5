"""S3 outages, recordings and clips, with real ffmpeg and a real S3 server."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from media_helpers import (
    GOES_LIVE_WITHIN_S,
    EncoderProcess,
    ObjectStore,
    ffprobe,
    free_port,
    ladder_template,
    live_spec,
    max_age,
    publish,
)
from waiting import wait_until

from onair.encoder.mp4 import Mp4Impossible, write_mp4
from onair.encoder.playlist import (
    MediaPlaylist,
    Segment,
    format_program_date_time,
    parse_master_playlist,
    parse_media_playlist,
    render_media_playlist,
)
from onair.encoder.tracks import numbered_by_name
from onair.exitcodes import EXIT_BAD_CONFIG, EXIT_INTERRUPTED

SMALL = ladder_template(("180p", 320, 180, "H264"))
SEGMENT = SMALL["segmentDurationSeconds"]


def named_segments_exist(store: ObjectStore, encoder: EncoderProcess, rendition: str) -> list[int]:
    """What a player sees: every segment the current playlist names can be fetched."""
    text = store.get_text(encoder.bucket, f"{encoder.prefix}/{rendition}/index.m3u8")
    if text is None:
        return []
    playlist = parse_media_playlist(text)
    for segment in playlist.segments:
        store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/{rendition}/{segment.uri}")
    return [segment.sequence for segment in playlist.segments]


def test_s3_down_for_20_seconds_loses_no_segment(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    spec = live_spec(recording=True)  # keep every segment, so all of them can be counted afterwards
    encoder = start_encoder("LiveJob", spec, SMALL)
    publisher = publish(encoder.rtmp_url, 34)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 2, 15, "segments before the outage")
    object_store.proxy.cut()
    outage_started = time.monotonic()
    try:
        wait_until(lambda: encoder.status()["upload"]["failures"] > 0, 10, "upload failures during the outage")
        wait_until(lambda: encoder.status()["upload"]["spoolBytes"] > 0, 10, "segments spooled locally")
        while time.monotonic() - outage_started < 20:
            assert encoder.status()["state"] == "live"
            time.sleep(0.5)
    finally:
        object_store.proxy.restore()

    def drained() -> bool:
        # While the backlog is uploaded and after, a player never finds a playlist naming a missing segment.
        named_segments_exist(object_store, encoder, "180p")
        return bool(encoder.status()["upload"]["pending"] == 0)

    wait_until(drained, 30, "the spool to drain")
    named_segments_exist(object_store, encoder, "180p")
    assert publisher.wait(40) == 0
    encoder.wait_state("reconnecting", 5)
    assert encoder.post("/finish").status_code == 202
    assert encoder.process.wait(30) == 0, encoder.log()[-3000:]
    event = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/event.m3u8") or "")
    numbers = [segment.sequence for segment in event.segments]
    assert numbers == list(range(len(numbers))), numbers
    assert not any(segment.discontinuity for segment in event.segments)
    assert sum(segment.duration for segment in event.segments) > 30
    for segment in event.segments:
        object_store.client.head_object(Bucket=encoder.bucket, Key=f"{encoder.prefix}/180p/{segment.uri}")


def test_a_store_down_at_start_delays_the_encoder_and_keeps_the_numbering(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """A replacement Pod that cannot read the job's stored playlist must not start again at segment 0
    (that would overwrite what players and the CDN hold): it waits for the store."""
    first = start_encoder("LiveJob", live_spec(), SMALL, prefix="live/restarted")
    assert publish(first.rtmp_url, 3).wait(30) == 0
    first.wait_state("reconnecting", 5)
    assert first.stop() == 0
    before = parse_media_playlist(object_store.get_text(first.bucket, "live/restarted/180p/index.m3u8") or "")
    last_before = before.segments[-1].sequence

    object_store.proxy.cut()
    try:
        second = start_encoder("LiveJob", live_spec(), SMALL, prefix="live/restarted", wait_healthy=False)
        storage = wait_until(lambda: (s := second.storage_once_answering()) and s["reason"] == "BucketUnreachable"
                             and s, 15, "the encoder to say it waits for the store")
        assert storage["available"] is False and second.bucket in storage["message"]
        refused = publish(second.rtmp_url, 2)
        assert refused.wait(20) != 0  # no ingest until the numbering is known
    finally:
        object_store.proxy.restore()
    wait_until(lambda: second.status()["storage"]["available"], 20, "the store to be read")
    wait_until(lambda: requests.get(f"{second.base_url}/healthz", timeout=2).ok, 5, "the encoder to turn ready")
    assert second.bucket not in second.status()["message"]
    assert publish(second.rtmp_url, 3).wait(30) == 0
    second.wait_state("reconnecting", 5)
    assert second.stop() == 0
    after = parse_media_playlist(object_store.get_text(second.bucket, "live/restarted/180p/index.m3u8") or "")
    numbers = [segment.sequence for segment in after.segments]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and numbers[-1] > last_before, numbers
    resumed = [segment for segment in after.segments if segment.sequence == last_before + 1]
    assert resumed and resumed[0].discontinuity, numbers


def lose_the_last_segment(store: ObjectStore, bucket: str, folder: str, playlists: tuple[str, ...]) -> Segment:
    """What a rendition's upload lane leaves when its Pod dies before the last segment: neither that
    segment nor a playlist naming it is stored. Returns the segment lost."""
    lost = None
    for name in playlists:
        playlist = parse_media_playlist(store.get_text(bucket, f"{folder}/{name}") or "")
        lost = playlist.segments[-1]
        store.client.put_object(Bucket=bucket, Key=f"{folder}/{name}", Body=render_media_playlist(
            playlist.segments[:-1], nominal_duration=playlist.target_duration or SEGMENT,
            discontinuity_sequence=playlist.discontinuity_sequence, playlist_type=playlist.playlist_type).encode())
    assert lost is not None
    store.client.delete_object(Bucket=bucket, Key=f"{folder}/{lost.uri}")
    return lost


def test_a_rendition_a_pod_left_behind_goes_on_in_step_and_a_clip_keeps_its_gap(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """A Pod that dies between one rendition's upload and the next's leaves the second a segment behind:
    its playlists do not name the last segment. The next Pod holds that number with an EXT-X-GAP, so the
    same content has the same number in both renditions; a clip over it is cut, gap and all."""
    ladder = ladder_template(("180p", 320, 180, "H264"), ("144p", 256, 144, "H264"))
    first = start_encoder("LiveJob", live_spec(recording=True), ladder, prefix="live/behind")
    assert publish(first.rtmp_url, 5).wait(30) == 0
    first.wait_state("reconnecting", 5)
    assert first.stop() == 0
    lost = lose_the_last_segment(object_store, first.bucket, "live/behind/144p", ("index.m3u8", "event.m3u8"))

    second = start_encoder("LiveJob", live_spec(recording=True), ladder, prefix="live/behind")
    assert publish(second.rtmp_url, 5).wait(30) == 0
    second.wait_state("reconnecting", 5)
    assert second.stop() == 0
    high, low = (parse_media_playlist(object_store.get_text(first.bucket, f"live/behind/{name}/event.m3u8") or "")
                 for name in ("180p", "144p"))
    # As a player numbers them: by place. Same numbers, times and discontinuities in both (each rendition's
    # ffmpeg rounds its PROGRAM-DATE-TIME to the millisecond: the same moment, give or take one).
    assert len(high.segments) == len(low.segments) > lost.sequence + 1
    for place, (ours, theirs) in enumerate(zip(high.segments, low.segments, strict=True)):
        assert ours.program_date_time is not None and theirs.program_date_time is not None
        assert abs((ours.program_date_time - theirs.program_date_time).total_seconds()) < 0.01, place
        assert ours.discontinuity == theirs.discontinuity, place
        assert theirs.gap == (place == lost.sequence), place
    assert low.segments[lost.sequence].duration == high.segments[lost.sequence].duration
    assert high.segments[lost.sequence + 1].discontinuity  # the second Pod's first segment

    start = high.segments[0].program_date_time
    end = high.segments[-1].end_time
    assert start is not None and end is not None
    _, clip_prefix = cut_clip(start_encoder, second, start, end, format="mp4")  # the MP4 leaves the gap out
    clip_high, clip_low = (parse_media_playlist(object_store.get_text(first.bucket, f"{clip_prefix}/{name}/index.m3u8")
                                                or "") for name in ("180p", "144p"))
    assert len(clip_high.segments) == len(clip_low.segments)
    assert [segment.gap for segment in clip_high.segments] == [False] * len(clip_high.segments)
    assert [place for place, segment in enumerate(clip_low.segments) if segment.gap] == [lost.sequence]
    master = parse_master_playlist(object_store.get_text(first.bucket, f"{clip_prefix}/master.m3u8") or "")
    assert len(master) == 2 and all(variant.bandwidth > 0 for variant in master)


def test_a_missing_bucket_is_named_and_no_input_is_taken(start_encoder: Callable[..., EncoderProcess]) -> None:
    encoder = start_encoder("LiveJob", live_spec(), SMALL, bucket="no-such-bucket", prefix="live/nobucket",
                            wait_healthy=False)
    storage = wait_until(lambda: (s := encoder.storage_once_answering()) and s["reason"] == "BucketNotFound" and s,
                         15, "the encoder to name the missing bucket")
    assert storage == {"available": False, "reason": "BucketNotFound",
                       "message": "bucket 'no-such-bucket' does not exist"}
    assert encoder.status()["state"] == "waiting" and "no-such-bucket" in encoder.status()["message"]
    # Not ready (its Pod's readiness probe): it takes no input yet.
    assert requests.get(f"{encoder.base_url}/healthz", timeout=2).status_code == 503
    assert publish(encoder.rtmp_url, 2).wait(20) != 0
    assert encoder.stop() == 0


def test_the_next_pod_deletes_the_segments_an_earlier_pod_retired_but_left(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """A Pod stops with the segments it took out of the live window less than a playlist's duration ago
    still in the bucket (players may still fetch them). The job's next Pod deletes them once no player
    can, rather than leaving them there for ever; the live window stays."""
    folder = "live/orphans/180p"
    first = start_encoder("LiveJob", live_spec(), SMALL, prefix="live/orphans")
    assert publish(first.rtmp_url, 16).wait(40) == 0
    first.wait_state("reconnecting", 5)
    assert first.stop() == 0
    window = parse_media_playlist(object_store.get_text(first.bucket, f"{folder}/index.m3u8") or "")

    def stored_segments() -> set[str]:
        listed = object_store.client.list_objects_v2(Bucket=first.bucket, Prefix=f"{folder}/seg_")
        return {item["Key"].rsplit("/", 1)[1] for item in listed.get("Contents", [])}

    left = {name for name in stored_segments() if int(name[4:10]) < window.media_sequence}
    assert left, (window.media_sequence, stored_segments())
    second = start_encoder("LiveJob", live_spec(), SMALL, prefix="live/orphans")
    wait_until(lambda: not stored_segments() & left, 40, f"the segments the first Pod left ({sorted(left)}) to go")
    assert {segment.uri for segment in window.segments} <= stored_segments()
    assert second.stop() == 0


def streamed_then_stopped(start_encoder: Callable[..., EncoderProcess], spec: dict[str, Any]) -> EncoderProcess:
    """A LiveJob (the SMALL ladder) that streamed 11 s and was stopped."""
    live = start_encoder("LiveJob", spec, SMALL)
    publisher = publish(live.rtmp_url, 11)
    live.wait_state("live", GOES_LIVE_WITHIN_S)
    assert publisher.wait(30) == 0
    live.wait_state("reconnecting", 5)
    assert live.stop() == 0
    return live


def cut_clip(start_encoder: Callable[..., EncoderProcess], live: EncoderProcess, start: datetime, end: datetime,
             bucket: str | None = None, **output: str) -> tuple[EncoderProcess, str]:
    """The clip of [start, end) of `live`'s stored segments, cut to its end (into `bucket`, by default the
    LiveJob's): the recorder and the clip's prefix."""
    clip_prefix = f"{live.prefix}-clip"
    bucket = bucket or live.bucket
    record_spec = {"source": {"liveJobRef": "match"}, "timeRange": {"start": start.isoformat(), "end": end.isoformat()},
                   "output": {"bucket": bucket, "path": clip_prefix, **output}}
    clip = {"sourcePrefix": live.prefix, "sourceBucket": live.bucket, "start": format_program_date_time(start),
            "end": format_program_date_time(end)}
    recorder = start_encoder("RecordJob", record_spec, None, bucket=bucket, prefix=clip_prefix, clip=clip,
                             wait_healthy=False)
    assert recorder.process.wait(60) == 0, recorder.log()[-3000:]
    return recorder, clip_prefix


def test_clip_of_a_past_range_plays_as_vod(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    live = streamed_then_stopped(start_encoder, live_spec(recording=True))
    stored = parse_media_playlist(object_store.get_text(live.bucket, f"{live.prefix}/180p/event.m3u8") or "")
    assert len(stored.segments) >= 4
    # The publisher came back with HEVC at 1080p after the range: the live master says so now. The
    # clip's master states what its own segments hold.
    master_key = f"{live.prefix}/master.m3u8"
    live_master = object_store.get_text(live.bucket, master_key) or ""
    assert "CODECS=\"avc1." in live_master and "RESOLUTION=320x180" in live_master, live_master
    changed = live_master.replace("RESOLUTION=320x180", "RESOLUTION=1920x1080").replace(
        "CODECS=\"avc1.", "CODECS=\"hvc1.1.6.L120.B0,x-avc1.")
    object_store.client.put_object(Bucket=live.bucket, Key=master_key, Body=changed.encode())
    first, last = stored.segments[1], stored.segments[3]
    assert first.program_date_time is not None and last.program_date_time is not None
    # A range starting inside segment 1 and ending inside segment 3: the clip is segments 1 to 3.
    start = first.program_date_time + timedelta(seconds=0.5)
    end = last.program_date_time + timedelta(seconds=0.5)
    # Into a bucket of its own (examples/recordjob-clip.yaml): read from the LiveJob's, written to its own.
    clips = "clips"
    with contextlib.suppress(object_store.client.exceptions.BucketAlreadyOwnedByYou):
        object_store.client.create_bucket(Bucket=clips)
    _, clip_prefix = cut_clip(start_encoder, live, start, end, bucket=clips, format="mp4")
    assert object_store.get_text(live.bucket, f"{clip_prefix}/master.m3u8") is None
    variants = parse_master_playlist(object_store.get_text(clips, f"{clip_prefix}/master.m3u8") or "")
    assert [variant.uri for variant in variants] == ["180p/index.m3u8"]
    assert variants[0].codecs.startswith("avc1.") and "mp4a.40.2" in variants[0].codecs, variants[0]
    assert "hvc1" not in variants[0].codecs and variants[0].resolution == (320, 180), variants[0]
    playlist = parse_media_playlist(object_store.get_text(clips, f"{clip_prefix}/180p/index.m3u8") or "")
    assert playlist.ended and playlist.playlist_type == "VOD"
    object_store.assert_vod_master_states_measured_bit_rates(clips, clip_prefix)
    assert [segment.program_date_time for segment in playlist.segments] == [
        segment.program_date_time for segment in stored.segments[1:4]
    ]
    object_store.download_prefix(clips, clip_prefix, tmp_path)
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(tmp_path / "180p" / "index.m3u8"), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert decoded.returncode == 0 and not decoded.stderr.strip(), decoded.stderr
    expected = sum(segment.duration for segment in stored.segments[1:4])
    mp4 = ffprobe(tmp_path / "180p.mp4")
    assert abs(float(mp4["format"]["duration"]) - expected) < 0.5
    assert {stream["codec_type"] for stream in mp4["streams"]} == {"video", "audio"}


def test_a_clip_older_than_the_live_window_of_a_job_that_does_not_record_says_where_it_begins(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    live = streamed_then_stopped(start_encoder, live_spec())
    window = parse_media_playlist(object_store.get_text(live.bucket, f"{live.prefix}/180p/index.m3u8") or "")
    oldest = window.segments[0]
    assert oldest.sequence > 0 and oldest.program_date_time is not None  # the window slid on: older ones are gone
    start, end = oldest.program_date_time - timedelta(seconds=3 * SEGMENT), oldest.end_time
    assert end is not None
    recorder, clip_prefix = cut_clip(start_encoder, live, start, end)
    playlist = parse_media_playlist(object_store.get_text(live.bucket, f"{clip_prefix}/180p/index.m3u8") or "")
    assert [segment.program_date_time for segment in playlist.segments] == [oldest.program_date_time]
    assert (f"it begins at {oldest.program_date_time.isoformat()}, not at {start.isoformat()}: the older segments "
            "had left the LiveJob's live window") in recorder.log(), recorder.log()[-3000:]


def test_a_job_that_stops_recording_keeps_its_recording_and_records_on_after_a_gap(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """recording: true, then false, then true again (each a new Pod, as a spec change makes). The live
    window slides past the recording without deleting it; a clip of the time in between is cut from
    the live window; the recording goes on after a gap that a DISCONTINUITY marks."""
    template = {**SMALL, "playlistWindow": 3}  # a short window, so it slides past the recording soon
    prefix = "live/toggled"
    folder = f"{prefix}/180p"

    def stored(name: str) -> MediaPlaylist:
        return numbered_by_name(parse_media_playlist(object_store.get_text(recording.bucket, f"{folder}/{name}") or ""))

    def assert_stored(playlist: MediaPlaylist) -> None:
        for segment in playlist.segments:
            object_store.client.head_object(Bucket=recording.bucket, Key=f"{folder}/{segment.uri}")

    recording = start_encoder("LiveJob", live_spec(recording=True), template, prefix=prefix)
    assert publish(recording.rtmp_url, 6).wait(30) == 0
    recording.wait_state("reconnecting", 5)
    assert recording.stop() == 0
    recorded = stored("event.m3u8")
    assert len(recorded.segments) >= 3

    streaming = start_encoder("LiveJob", live_spec(), template, prefix=prefix)
    assert publish(streaming.rtmp_url, 18).wait(40) == 0
    streaming.wait_state("reconnecting", 5)
    assert streaming.stop() == 0
    window = stored("index.m3u8")
    assert window.segments[0].sequence > recorded.segments[-1].sequence + 3, "the window did not slide past"
    assert stored("event.m3u8").segments == recorded.segments
    assert_stored(recorded)

    def unnamed_segments() -> set[str]:
        """Segments in the bucket that no stored playlist names: what a Pod retired and left."""
        named = {s.uri for name in ("event.m3u8", "index.m3u8") for s in stored(name).segments}
        return {name for name in object_store.sizes(recording.bucket, folder)
                if name.startswith("seg_") and name not in named}

    # A stop leaves the segments it retired within a playlist's duration (a player may still load them).
    left_by_streaming = unnamed_segments()
    assert left_by_streaming

    start = window.segments[0].program_date_time
    end = window.segments[1].program_date_time
    assert start is not None and end is not None
    start, end = start + timedelta(seconds=0.5), end + timedelta(seconds=0.5)
    clip_prefix = f"{prefix}-clip"
    record_spec = {"source": {"liveJobRef": "toggled"},
                   "timeRange": {"start": start.isoformat(), "end": end.isoformat()},
                   "output": {"bucket": recording.bucket, "path": clip_prefix}}
    clip = {"sourcePrefix": prefix, "start": format_program_date_time(start), "end": format_program_date_time(end)}
    recorder = start_encoder("RecordJob", record_spec, None, bucket=recording.bucket, prefix=clip_prefix, clip=clip,
                             wait_healthy=False)
    assert recorder.process.wait(60) == 0, recorder.log()[-3000:]
    cut = parse_media_playlist(object_store.get_text(recording.bucket, f"{clip_prefix}/180p/index.m3u8") or "")
    assert [segment.program_date_time for segment in cut.segments] == [
        segment.program_date_time for segment in window.segments[:2]]

    recording_again = start_encoder("LiveJob", live_spec(recording=True), template, prefix=prefix)
    assert publish(recording_again.rtmp_url, 4).wait(30) == 0
    recording_again.wait_state("reconnecting", 5)
    # The recording Pod deletes them (a window's time after it started), as a streaming Pod would.
    wait_until(lambda: not unnamed_segments() & left_by_streaming, 30, "the segments the gap left deleted")
    assert recording_again.stop() == 0
    event = stored("event.m3u8")
    assert event.segments[: len(recorded.segments)] == recorded.segments
    joined = event.segments[len(recorded.segments)]
    assert joined.sequence == window.segments[0].sequence and joined.discontinuity
    numbers = [segment.sequence for segment in event.segments[len(recorded.segments):]]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and numbers[-1] > window.segments[-1].sequence
    assert_stored(event)


def test_a_recording_that_follows_its_live_job_leaves_out_what_it_was_paused_for(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    live = start_encoder("LiveJob", live_spec(recording=True), SMALL)
    clip_prefix = f"{live.prefix}-paused-clip"
    publisher = publish(live.rtmp_url, 34)
    try:
        live.wait_state("live", GOES_LIVE_WITHIN_S)
        start = datetime.now(UTC)
        end = start + timedelta(seconds=24)
        record_spec = {"source": {"liveJobRef": "match"},
                       "timeRange": {"start": start.isoformat(), "end": end.isoformat()},
                       "output": {"bucket": live.bucket, "path": clip_prefix}}
        clip = {"sourcePrefix": live.prefix, "start": format_program_date_time(start),
                "end": format_program_date_time(end)}
        recorder = start_encoder("RecordJob", record_spec, None, bucket=live.bucket, prefix=clip_prefix, clip=clip)
        recorder.wait_state("waiting", 10)  # following the live stream to the end of the range

        def live_segments() -> int:
            return int(live.status()["renditions"][0]["segmentsWritten"])

        # The live stream's own segments tell the time: some recorded, then a pause of five whole
        # segments (about ten seconds), which the recording leaves out.
        recording_from = live_segments()
        wait_until(lambda: live_segments() >= recording_from + 2, 15, "some recorded segments")
        assert recorder.post("/pause").json()["paused"] is True
        paused_at = live_segments()
        wait_until(lambda: live_segments() >= paused_at + 5, 20, "a paused stretch")
        resumed = recorder.post("/resume").json()
        assert resumed["paused"] is False and len(resumed["pausedRanges"]) == 1
        paused_from, paused_until = (datetime.fromisoformat(resumed["pausedRanges"][0][edge].replace("Z", "+00:00"))
                                     for edge in ("start", "end"))
        assert recorder.process.wait(40) == 0, recorder.log()[-3000:]
    finally:
        publisher.kill()
        publisher.wait()
    playlist = parse_media_playlist(object_store.get_text(live.bucket, f"{clip_prefix}/180p/index.m3u8") or "")
    assert playlist.ended and playlist.playlist_type == "VOD"
    placed = [(s.program_date_time, s.end_time) for s in playlist.segments]
    assert all(begins is not None and ends is not None for begins, ends in placed)
    # Nothing wholly inside the pause, which leaves a discontinuity: the segments on either side of it
    # are those holding the pause's ends (a clip is cut on segment boundaries).
    inside = [(b, e) for b, e in placed if b is not None and e is not None and paused_from <= b and e <= paused_until]
    assert not inside, (paused_from, paused_until, placed)
    gaps = [segment for segment in playlist.segments if segment.discontinuity]
    assert len(gaps) == 1, placed
    before = playlist.segments[playlist.segments.index(gaps[0]) - 1]
    assert before.end_time is not None and gaps[0].program_date_time is not None
    assert before.end_time > paused_from - timedelta(seconds=SEGMENT) and before.end_time <= paused_until
    assert gaps[0].program_date_time < paused_until + timedelta(seconds=0.001)
    assert (gaps[0].program_date_time - before.end_time).total_seconds() > 4  # about ten seconds left out


def test_record_job_pauses_and_resumes(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    # The source: an SRT listener the recorder pulls from (a RecordJob streamUrl), copied as it is.
    port = free_port()
    source = publish(f"srt://127.0.0.1:{port}?mode=listener", 40, container="mpegts")
    spec = {"source": {"streamUrl": f"srt://127.0.0.1:{port}"}, "output": {"bucket": "ignored"}}
    recorder = start_encoder("RecordJob", spec, None)
    try:
        recorder.wait_state("live", GOES_LIVE_WITHIN_S)

        def segments() -> int:
            return int(recorder.status()["renditions"][0]["segmentsWritten"])

        wait_until(lambda: segments() >= 2, 20, "recorded segments")
        # Only the operator, holding the job's control key, may pause it.
        assert recorder.post("/pause", control_key="not-the-key").status_code == 401
        assert recorder.status()["recording"]["paused"] is False
        paused = recorder.post("/pause").json()
        assert paused["paused"] is True
        at_pause = segments()
        # Segments go on closing while paused, and are left out.
        wait_until(lambda: int(recorder.status()["renditions"][0]["segmentsSkipped"]) >= 2, 25, "a paused stretch")
        assert segments() <= at_pause + 1  # at most the segment that was being written
        assert recorder.post("/resume").json()["paused"] is False
        wait_until(lambda: segments() >= at_pause + 3, 20, "segments after resuming")
        assert recorder.post("/finish").status_code == 202  # what the operator sends when the job ends
        assert recorder.process.wait(30) == 0, recorder.log()[-3000:]
    finally:
        source.kill()
        source.wait()
    stored = object_store.get_text(recorder.bucket, f"{recorder.prefix}/source/index.m3u8")
    playlist = parse_media_playlist(stored or "")
    assert playlist.ended and playlist.playlist_type == "EVENT"
    head = object_store.client.head_object(Bucket=recorder.bucket, Key=f"{recorder.prefix}/source/index.m3u8")
    assert max_age(head["CacheControl"]) >= 86_400  # a completed recording never changes: CDNs may keep it
    numbers = [segment.sequence for segment in playlist.segments]
    assert numbers == list(range(len(numbers)))
    gaps = [segment for segment in playlist.segments if segment.discontinuity]
    assert len(gaps) == 1  # the pause
    assert gaps[0].program_date_time is not None
    before = playlist.segments[gaps[0].sequence - 1]
    assert before.end_time is not None
    assert (gaps[0].program_date_time - before.end_time).total_seconds() > 5


def test_a_vod_recording_appears_in_the_library_only_when_complete(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    port = free_port()
    source = publish(f"srt://127.0.0.1:{port}?mode=listener", 30, container="mpegts")
    spec = {"source": {"streamUrl": f"srt://127.0.0.1:{port}"}, "output": {"bucket": "ignored", "type": "vod"}}
    recorder = start_encoder("RecordJob", spec, None)
    master_key = f"{recorder.prefix}/master.m3u8"
    try:
        recorder.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: int(recorder.status()["renditions"][0]["segmentsWritten"]) >= 2, 20, "recorded segments")
        # The segments and the growing media playlist are stored, but not the asset's entry point.
        assert object_store.get_text(recorder.bucket, f"{recorder.prefix}/source/index.m3u8")
        assert object_store.get_text(recorder.bucket, master_key) is None
        assert recorder.post("/finish").status_code == 202
        assert recorder.process.wait(30) == 0, recorder.log()[-3000:]
    finally:
        source.kill()
        source.wait()
    master = object_store.get_text(recorder.bucket, master_key)
    assert master is not None and "source/index.m3u8" in master
    stored = object_store.get_text(recorder.bucket, f"{recorder.prefix}/source/index.m3u8")
    playlist = parse_media_playlist(stored or "")
    assert playlist.ended and playlist.playlist_type == "EVENT" and playlist.segments
    object_store.assert_vod_master_states_measured_bit_rates(recorder.bucket, recorder.prefix)


def test_a_vod_recording_completed_by_an_attempt_that_recorded_nothing_gets_its_master(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """The first attempt is evicted before completion (no master: a vod asset is not complete); the
    next finds the source gone and is told to finish: the master is made from the stored segments."""
    prefix = "rec/vod-evicted"
    port = free_port()
    source = publish(f"srt://127.0.0.1:{port}?mode=listener", 30, container="mpegts")
    spec = {"source": {"streamUrl": f"srt://127.0.0.1:{port}"}, "output": {"bucket": "ignored", "type": "vod"}}
    first = start_encoder("RecordJob", spec, None, prefix=prefix)
    try:
        first.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: int(first.status()["renditions"][0]["segmentsWritten"]) >= 2, 20, "recorded segments")
        assert first.stop() == EXIT_INTERRUPTED, first.log()[-3000:]
    finally:
        source.kill()
        source.wait()
    assert object_store.get_text(first.bucket, f"{prefix}/master.m3u8") is None

    second = start_encoder("RecordJob", spec, None, prefix=prefix)
    wait_until(lambda: "resuming source at segment" in second.log(), 20, "the second attempt to read the recording")
    assert second.post("/finish").status_code == 202
    assert second.process.wait(30) == 0, second.log()[-3000:]
    variants = parse_master_playlist(object_store.get_text(second.bucket, f"{prefix}/master.m3u8") or "")
    assert [variant.uri for variant in variants] == ["source/index.m3u8"]
    assert variants[0].codecs.startswith("avc1.") and variants[0].resolution == (640, 360)
    playlist = parse_media_playlist(object_store.get_text(second.bucket, f"{prefix}/source/index.m3u8") or "")
    assert playlist.ended and len(playlist.segments) >= 2
    # Every segment was recorded by the first attempt: the second measures them in the store.
    object_store.assert_vod_master_states_measured_bit_rates(second.bucket, prefix)


def test_an_evicted_recording_is_continued_by_the_next_attempt_into_one_mp4(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    """A bare SIGTERM (eviction, node drain) is not the end of a recording: the recorder exits
    EXIT_INTERRUPTED with its playlist still open; the next attempt continues it, and the finished
    MP4 holds both attempts' media."""
    prefix = "rec/evicted"

    def record(seconds: float) -> tuple[EncoderProcess, subprocess.Popen[bytes]]:
        port = free_port()
        source = publish(f"srt://127.0.0.1:{port}?mode=listener", seconds, container="mpegts")
        spec = {"source": {"streamUrl": f"srt://127.0.0.1:{port}"}, "output": {"bucket": "ignored", "format": "mp4"}}
        recorder = start_encoder("RecordJob", spec, None, prefix=prefix)
        recorder.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: recorder.status()["renditions"][0]["segmentsWritten"] >= 3, 20, "recorded segments")
        return recorder, source

    first, source = record(30)
    assert first.stop() == EXIT_INTERRUPTED, first.log()[-3000:]
    source.kill()
    source.wait()
    playlist = parse_media_playlist(object_store.get_text(first.bucket, f"{prefix}/source/index.m3u8") or "")
    assert not playlist.ended and playlist.playlist_type == "EVENT"
    assert object_store.get_text(first.bucket, f"{prefix}/source.mp4") is None
    first_attempt = len(playlist.segments)
    first_seconds = sum(segment.duration for segment in playlist.segments)

    second, source = record(30)
    try:
        # What it has recorded counts the first attempt's media too (status.recordedSeconds).
        assert second.status()["recording"]["recordedSeconds"] >= first_seconds + 2
        assert second.post("/finish").status_code == 202
        assert second.process.wait(30) == 0, second.log()[-3000:]
    finally:
        source.kill()
        source.wait()
    playlist = parse_media_playlist(object_store.get_text(second.bucket, f"{prefix}/source/index.m3u8") or "")
    assert playlist.ended and playlist.playlist_type == "EVENT"
    numbers = [segment.sequence for segment in playlist.segments]
    assert numbers == list(range(len(numbers))) and len(numbers) > first_attempt, numbers
    assert [segment.sequence for segment in playlist.segments if segment.discontinuity] == [first_attempt]
    object_store.client.download_file(second.bucket, f"{prefix}/source.mp4", str(tmp_path / "source.mp4"))
    mp4 = ffprobe(tmp_path / "source.mp4")
    recorded = sum(segment.duration for segment in playlist.segments)
    assert abs(float(mp4["format"]["duration"]) - recorded) < 1.0, (mp4["format"]["duration"], recorded)
    assert {stream["codec_type"] for stream in mp4["streams"]} == {"video", "audio"}


def test_a_recording_a_pod_left_a_rendition_behind_still_gets_every_mp4(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path
) -> None:
    """A recorder evicted between one rendition's upload and the next's: the next attempt holds the
    missing segment with a gap, and each rendition's MP4 joins the segments it has (not the gap)."""
    prefix = "rec/behind"
    ladder = ladder_template(("180p", 320, 180, "H264"), ("144p", 256, 144, "H264"))

    def record() -> tuple[EncoderProcess, subprocess.Popen[bytes]]:
        port = free_port()
        source = publish(f"srt://127.0.0.1:{port}?mode=listener", 30, container="mpegts")
        spec = {"source": {"streamUrl": f"srt://127.0.0.1:{port}"}, "output": {"bucket": "ignored", "format": "mp4"}}
        recorder = start_encoder("RecordJob", spec, ladder, prefix=prefix)
        recorder.wait_state("live", GOES_LIVE_WITHIN_S)
        wait_until(lambda: min(r["segmentsWritten"] for r in recorder.status()["renditions"]) >= 3, 20,
                   "recorded segments")
        return recorder, source

    first, source = record()
    assert first.stop() == EXIT_INTERRUPTED, first.log()[-3000:]
    source.kill()
    source.wait()
    lost = lose_the_last_segment(object_store, first.bucket, f"{prefix}/144p", ("index.m3u8",))

    second, source = record()
    try:
        assert second.post("/finish").status_code == 202
        assert second.process.wait(30) == 0, second.log()[-3000:]
    finally:
        source.kill()
        source.wait()
    for rendition in ("180p", "144p"):
        playlist = parse_media_playlist(object_store.get_text(second.bucket, f"{prefix}/{rendition}/index.m3u8") or "")
        assert playlist.ended
        assert [segment.sequence for segment in playlist.segments if segment.gap] == (
            [lost.sequence] if rendition == "144p" else [])
        object_store.client.download_file(second.bucket, f"{prefix}/{rendition}.mp4", str(tmp_path / "r.mp4"))
        with_media = sum(segment.duration for segment in playlist.segments if not segment.gap)
        duration = float(ffprobe(tmp_path / "r.mp4")["format"]["duration"])
        assert abs(duration - with_media) < 1.0, (rendition, duration, with_media)


def test_a_recording_that_recorded_nothing_is_not_completed(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    """A source that never sent anything in the range: the recorder does not finish as if it had
    recorded (its job would read Completed, with links to a master and an MP4 never written), but fails
    saying why. One that cannot read its stored recording (the store down) leaves it to the next attempt."""
    spec = {"source": {"streamUrl": f"srt://127.0.0.1:{free_port()}"}, "output": {"bucket": "ignored", "format": "mp4"}}
    recorder = start_encoder("RecordJob", spec, None, prefix="rec/nothing")
    assert recorder.post("/finish").status_code == 202
    assert recorder.process.wait(30) == EXIT_BAD_CONFIG, recorder.log()[-3000:]
    assert "nothing was recorded" in recorder.log()
    listed = object_store.client.list_objects_v2(Bucket=recorder.bucket, Prefix="rec/nothing/")
    assert not listed.get("Contents")

    object_store.proxy.cut()
    try:
        unread = start_encoder("RecordJob", spec, None, prefix="rec/nothing", wait_healthy=False)
        wait_until(lambda: (s := unread.storage_once_answering()) and s["reason"] == "BucketUnreachable", 15,
                   "the recorder to wait for the store")
        assert unread.post("/finish").status_code == 202
        assert unread.process.wait(30) == EXIT_INTERRUPTED, unread.log()[-3000:]
    finally:
        object_store.proxy.restore()


def test_a_recording_whose_mp4_cannot_be_written_is_not_completed(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore,
) -> None:
    """Its status would name an MP4 that is not there: the recorder says why and exits EXIT_BAD_CONFIG
    (no attempt could ever write it: the job fails, its HLS recording kept)."""
    prefix = "rec/no-mp4"

    def record() -> tuple[EncoderProcess, subprocess.Popen[bytes]]:
        port = free_port()
        source = publish(f"srt://127.0.0.1:{port}?mode=listener", 30, container="mpegts")
        spec = {"source": {"streamUrl": f"srt://127.0.0.1:{port}"}, "output": {"bucket": "ignored", "format": "mp4"}}
        recorder = start_encoder("RecordJob", spec, None, prefix=prefix)
        wait_until(lambda: recorder.status()["renditions"][0]["segmentsWritten"] >= 2, 30, "recorded segments")
        return recorder, source

    first, source = record()
    assert first.stop() == EXIT_INTERRUPTED, first.log()[-3000:]
    source.kill()
    source.wait()
    playlist = parse_media_playlist(object_store.get_text(first.bucket, f"{prefix}/source/index.m3u8") or "")
    # An object of the first attempt's is gone from the bucket (a lifecycle rule, a hand): no MP4 of all.
    object_store.client.delete_object(Bucket=first.bucket, Key=f"{prefix}/source/{playlist.segments[0].uri}")
    second, source = record()
    try:
        assert second.post("/finish").status_code == 202
        assert second.process.wait(30) == EXIT_BAD_CONFIG, second.log()[-3000:]
    finally:
        source.kill()
        source.wait()
    assert "no MP4 of source: " in second.log() and "is missing from the bucket" in second.log()
    assert object_store.get_text(second.bucket, f"{prefix}/source.mp4") is None


def test_sessions_with_other_media_are_not_joined_into_one_broken_mp4(tmp_path: Path) -> None:
    """A publisher back at another size: `-c copy` would keep the first session's track for both."""
    def segment(name: str, size: str) -> Path:
        path = tmp_path / name
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-t", "2",
                        "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts", str(path)], check=True, timeout=60)
        return path

    small, large, small_again = segment("a.ts", "320x180"), segment("b.ts", "640x360"), segment("c.ts", "320x180")
    resized = [Segment(0, 2.0, "a.ts"), Segment(1, 2.0, "b.ts", discontinuity=True)]
    deadline = time.monotonic() + 60
    with pytest.raises(Mp4Impossible, match="media changes at segment 1"):
        asyncio.run(write_mp4([small, large], resized, tmp_path, tmp_path / "resized.mp4", deadline))
    assert not (tmp_path / "resized.mp4").exists()
    reconnected = [Segment(0, 2.0, "a.ts"), Segment(1, 2.0, "c.ts", discontinuity=True)]
    assert asyncio.run(write_mp4([small, small_again], reconnected, tmp_path, tmp_path / "joined.mp4", deadline))
    assert abs(float(ffprobe(tmp_path / "joined.mp4")["format"]["duration"]) - 4.0) < 0.5


def test_a_full_spool_drops_segments_says_so_and_recovers(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore
) -> None:
    # Room for about two segments of each rendition: the outage fills it within seconds.
    ladder = ladder_template(("180p", 320, 180, "H264"), ("144p", 256, 144, "H264"))
    encoder = start_encoder("LiveJob", live_spec(), ladder, extra_env={"ONAIR_SPOOL_MAX_BYTES": "600000"})
    publisher = publish(encoder.rtmp_url, 24)
    encoder.wait_state("live", GOES_LIVE_WITHIN_S)
    wait_until(lambda: encoder.status()["renditions"][0]["segmentsWritten"] >= 2, 15, "segments before the outage")
    object_store.proxy.cut()
    try:
        wait_until(lambda: encoder.status()["upload"]["spoolFull"], 20, "the spool to fill during the outage")
        metrics = requests.get(f"{encoder.base_url}/metrics", timeout=5).text
        assert "onair_encoder_spool_full 1.0" in metrics
        dropped = [line for line in metrics.splitlines()
                   if line.startswith("onair_encoder_spool_dropped_segments_total")]
        assert dropped and float(dropped[0].split()[-1]) >= 1, dropped
        assert all(rendition["segmentsSkipped"] >= 1 for rendition in encoder.status()["renditions"])
        assert encoder.status()["state"] == "live"  # the stream goes on; only the newest media is dropped
    finally:
        object_store.proxy.restore()
    wait_until(lambda: not encoder.status()["upload"]["spoolFull"] and encoder.status()["upload"]["pending"] == 0,
               30, "uploads to resume and the spool to drain")
    assert publisher.wait(40) == 0
    encoder.wait_state("reconnecting", 5)
    assert encoder.stop() == 0, encoder.log()[-3000:]
    playlist = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/180p/index.m3u8") or "")
    numbers = named_segments_exist(object_store, encoder, "180p")
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    # Where segments were dropped the playlist says so, for players to resynchronise.
    assert any(segment.discontinuity for segment in playlist.segments) or playlist.discontinuity_sequence > 0
    # The same segments were dropped from every rendition: a player switching variants stays aligned.
    other = parse_media_playlist(object_store.get_text(encoder.bucket, f"{encoder.prefix}/144p/index.m3u8") or "")
    assert [(s.sequence, s.discontinuity) for s in other.segments] == [
        (s.sequence, s.discontinuity) for s in playlist.segments]
    for ours, theirs in zip(playlist.segments, other.segments, strict=True):
        assert ours.program_date_time and theirs.program_date_time
        assert abs(ours.program_date_time - theirs.program_date_time) < timedelta(milliseconds=100)


def test_an_hls_source_that_ended_before_the_end_of_the_range_is_recorded_once(
    start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, hls_origin: tuple[str, Path],
    hls_origin_requests: list[str],
) -> None:
    """A stream that closes may come back before timeRange.end, so it is pulled again; a playlist
    with ENDLIST pulled again would be read from its first segment and recorded twice."""
    base_url, root = hls_origin
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
         "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac",
         "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", str(root / "vod.m3u8")],
        check=True, timeout=60,
    )  # fmt: skip
    end = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    spec = {"source": {"streamUrl": f"{base_url}/vod.m3u8"}, "output": {"bucket": "ignored"},
            "timeRange": {"end": end}}
    recorder = start_encoder("RecordJob", spec, None, prefix="rec/ended")
    assert recorder.process.wait(60) == 0, recorder.log()[-3000:]  # done, not waiting for the end
    playlist = parse_media_playlist(object_store.get_text(recorder.bucket, f"{recorder.prefix}/source/index.m3u8")
                                    or "")
    assert playlist.ended
    assert 3 < sum(segment.duration for segment in playlist.segments) < 6  # the 4 s, once
    # Another attempt (the first exited before all its files were up, say) finishes what is stored; it
    # neither pulls the ended source again nor reopens the closed playlist.
    asked = len(hls_origin_requests)
    again = start_encoder("RecordJob", spec, None, prefix="rec/ended")
    assert again.process.wait(60) == 0, again.log()[-3000:]
    assert not [path for path in hls_origin_requests[asked:] if not path.endswith(".m3u8")]
    stored = parse_media_playlist(object_store.get_text(again.bucket, f"{again.prefix}/source/index.m3u8") or "")
    assert stored.ended and stored.segments == playlist.segments
