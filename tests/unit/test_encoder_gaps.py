"""Renditions kept in step after a Pod stopped between one rendition's upload and the next's: the one
left behind holds the numbers it lacks with EXT-X-GAP entries, so the same content keeps the same
sequence and discontinuity numbers in every variant (RFC 8216 6.2.4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from onair.encoder.playlist import (
    MediaPlaylist,
    Segment,
    measured_bit_rates,
    parse_media_playlist,
    render_media_playlist,
    renumbered_for_clip,
)
from onair.encoder.tracks import RenditionTrack, keep_in_step, numbered_by_name

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def published(name: str, durations: list[float], window: int = 6, keep_all: bool = False,
              extension: str = "ts") -> RenditionTrack:
    """A rendition as a Pod published it, one segment per duration (each its own size)."""
    track = RenditionTrack(name, nominal_duration=2, window=window, keep_all=keep_all)
    moment = T0
    for duration in durations:
        track.add(duration, f"seg_{track.next_sequence:06d}.{extension}", moment,
                  init_uri="init_000000.mp4" if extension == "m4s" else None, size_bytes=100_000)
        moment += timedelta(seconds=duration)
    return track


def stored(track: RenditionTrack) -> MediaPlaylist:
    """The playlist a new Pod reads back from the bucket."""
    return numbered_by_name(parse_media_playlist(track.live_playlist()))


def resumed(name: str, playlist: MediaPlaylist, window: int = 6, keep_all: bool = False) -> RenditionTrack:
    return RenditionTrack.resume(RenditionTrack(name, nominal_duration=2, window=window, keep_all=keep_all), playlist)


def numbered(track: RenditionTrack) -> dict[int, tuple[Segment, int]]:
    """What a player reads in the live playlist: each segment by its number (MEDIA-SEQUENCE plus its
    place), with its discontinuity number."""
    playlist = parse_media_playlist(track.live_playlist())
    by_number, discontinuities = {}, playlist.discontinuity_sequence
    for place, segment in enumerate(playlist.segments):
        discontinuities += segment.discontinuity
        by_number[playlist.media_sequence + place] = (segment, discontinuities)
    return by_number


def test_a_gap_is_written_and_read_back_as_ext_x_gap() -> None:
    segments = [Segment(7, 2.0, "seg_000007.ts", T0), Segment(8, 2.002, "seg_000008.ts", T0, gap=True),
                Segment(9, 2.0, "seg_000009.ts", T0, discontinuity=True)]
    text = render_media_playlist(segments, nominal_duration=2)
    assert "#EXT-X-GAP\n#EXTINF:2.002,\nseg_000008.ts\n" in text
    assert text.count("#EXT-X-GAP") == 1
    assert [segment.gap for segment in parse_media_playlist(text).segments] == [False, True, False]


def test_a_rendition_a_pod_left_a_segment_behind_goes_on_in_step_with_the_others() -> None:
    """The 720p playlist names segment 5, the 360p one stops at 4 (the Pod died between their uploads).
    The next Pod's segments have the same numbers in both, the 360p holding 5 with a gap of the 720p's
    duration and time, and their discontinuity numbers agree."""
    high = published("720p", [2.0, 2.0, 2.0, 2.0, 2.0, 2.5])
    low = published("360p", [2.0, 2.0, 2.0, 2.0, 2.0])
    tracks = [resumed("720p", stored(high)), resumed("360p", stored(low))]
    assert keep_in_step(tracks) == []
    for track in tracks:  # the next Pod's first session
        track.start_session()
        for _ in range(3):
            track.add(2.0, f"seg_{track.next_sequence:06d}.ts", T0 + timedelta(minutes=1), size_bytes=100_000)
    high_now, low_now = (numbered(track) for track in tracks)
    assert sorted(high_now) == sorted(low_now)
    gap, _ = low_now[5]
    assert gap.gap and gap.duration == 2.5 and gap.program_date_time == high_now[5][0].program_date_time
    assert not any(segment.gap for segment, _ in high_now.values())
    for number, (segment, discontinuity) in high_now.items():
        assert low_now[number][1] == discontinuity, number
        assert low_now[number][0].program_date_time == segment.program_date_time, number
    assert [number for number, (segment, _) in low_now.items() if segment.discontinuity] == [6]
    # The gap is read back as one by the Pod after (and not stored again as media).
    again = resumed("360p", stored(tracks[1]))
    assert [segment.sequence for segment in again.segments if segment.gap] == [5]


def test_a_recording_left_behind_holds_the_gap_in_its_event_playlist_too() -> None:
    high = published("720p", [2.0] * 4, keep_all=True, extension="m4s")
    low = published("360p", [2.0] * 2, keep_all=True, extension="m4s")
    tracks = [resumed("720p", stored(high), keep_all=True), resumed("360p", stored(low), keep_all=True)]
    assert keep_in_step(tracks) == []
    low_event = parse_media_playlist(tracks[1].event_playlist())
    assert [(s.sequence, s.gap, s.uri) for s in low_event.segments[2:]] == [
        (2, True, "seg_000002.m4s"), (3, True, "seg_000003.m4s")]
    assert tracks[1].next_sequence == tracks[0].next_sequence == 4


def test_a_rendition_stored_long_before_is_left_as_it_is() -> None:
    """When the furthest rendition no longer names what the other lacks (that one's playlist is from
    long ago), no gap can say how long the missing part lasted: it goes on from its own numbers."""
    high = published("720p", [2.0] * 40)
    low = published("360p", [2.0] * 3)
    tracks = [resumed("720p", stored(high)), resumed("360p", stored(low))]
    assert keep_in_step(tracks) == [tracks[1]]
    assert tracks[1].next_sequence == 3 and not any(segment.gap for segment in tracks[1].segments)
    # A recording names every segment: still not a recording's worth of gaps, only a live window's.
    high = published("720p", [2.0] * 40, keep_all=True)
    low = published("360p", [2.0] * 3, keep_all=True)
    tracks = [resumed(track.name, numbered_by_name(parse_media_playlist(track.event_playlist())), keep_all=True)
              for track in (high, low)]
    assert len(tracks[0].segments) == 40
    assert keep_in_step(tracks) == [tracks[1]] and tracks[1].next_sequence == 3


def test_renditions_in_step_and_a_fresh_start_are_left_alone() -> None:
    same = [resumed(name, stored(published(name, [2.0] * 4))) for name in ("a", "b")]
    assert keep_in_step(same) == [] and [track.next_sequence for track in same] == [4, 4]
    assert not any(segment.gap for track in same for segment in track.segments)
    fresh = [RenditionTrack(name, nominal_duration=2, window=6) for name in ("a", "b")]
    assert keep_in_step(fresh) == [] and all(track.next_sequence == 0 for track in fresh)


def test_gaps_count_in_no_bit_rate() -> None:
    """A gap holds no media: BANDWIDTH and AVERAGE-BANDWIDTH are what the segments with media measure,
    also when an object of the gap's name was left in the bucket."""
    high = published("720p", [2.0] * 5)
    low = published("360p", [2.0] * 4)
    tracks = [resumed("720p", stored(high)), resumed("360p", stored(low))]
    keep_in_step(tracks)
    low_track = tracks[1]
    low_track.add_stored_sizes({f"seg_{number:06d}.ts": 100_000 for number in range(5)})
    assert low_track.segments[-1].gap and low_track.segments[-1].size_bytes is None
    assert low_track.newest_bit_rate() == low_track.average_bit_rate() == 400_000
    measured = low_track.measured_bit_rates()
    assert measured is not None and measured.average == 400_000
    assert measured_bit_rates([Segment(0, 2.0, "gap.ts", gap=True)], 2) is None


def test_a_clip_keeps_a_gap_in_its_own_numbering() -> None:
    source = [Segment(10, 2.0, "seg_000010.ts", T0), Segment(11, 2.0, "seg_000011.ts", T0, gap=True),
              Segment(12, 2.0, "seg_000012.ts", T0, discontinuity=True)]
    clip = renumbered_for_clip(source, ["seg_000000.ts", "seg_000001.ts", "seg_000002.ts"])
    assert [(s.sequence, s.gap, s.discontinuity) for s in clip] == [(0, False, False), (1, True, False),
                                                                      (2, False, True)]


def test_the_sessions_a_resumed_playlist_names_are_read_at_their_first_segment_with_media() -> None:
    """What a new Pod probes for the master's codecs: the session holding the oldest named segment, and
    each one after a discontinuity, at its first segment that is not a gap."""
    track = RenditionTrack("source", nominal_duration=2, window=10)
    track.segments = [Segment(3, 2.0, "seg_000003.ts"), Segment(4, 2.0, "seg_000004.ts"),
                      Segment(5, 2.0, "seg_000005.ts", discontinuity=True, gap=True),
                      Segment(6, 2.0, "seg_000006.ts"),
                      Segment(7, 2.0, "seg_000007.m4s", discontinuity=True, init_uri="init_000007.mp4")]
    assert [(first, segment.uri) for first, segment in track.session_starts(4)] == [
        (4, "seg_000004.ts"), (5, "seg_000006.ts"), (7, "seg_000007.m4s")]
    assert track.session_starts(None) == []
