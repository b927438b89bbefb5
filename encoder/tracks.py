"""The published state of one rendition: its numbered segments, the live window, what to delete.
Pure bookkeeping (no I/O), so the numbering and window rules are unit-tested.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from .ffmpeg import SEGMENT_PATTERN
from .playlist import (
    GrowingPlaylist,
    MeasuredBitRates,
    MediaPlaylist,
    Segment,
    discontinuity_tags,
    measured_bit_rates,
    render_media_playlist,
    session_starts,
    target_duration,
)

LIVE_PLAYLIST = "index.m3u8"
EVENT_PLAYLIST = "event.m3u8"  # every segment of a recorded event (LiveJob recording: true)
# An event playlist names every segment of its recording and is uploaded whole: about 80 bytes a
# segment, 3.4 MB for a day of 2 s segments. Uploaded again with each segment, it would come to fill
# its rendition's upload lane (the next segment waits behind it) and the bucket's traffic, so once it
# is large it is uploaded again only after enough media for this rate: a 512 KiB playlist with each 2 s
# segment, a day's (3.4 MB) every 13 s, and always before a segment it does not name leaves the live
# window (clips read the two together).
EVENT_PLAYLIST_BYTES_PER_SECOND = 256 * 1024
# What the encoder names the objects of a rendition: seg_<number>.<ts|m4s>, and init_<number>.mp4 after
# the first segment that uses it.
NUMBERED_OBJECT = re.compile(r"(?:seg_(\d+)\.(?:ts|m4s)|init_(\d+)\.mp4)")


def numbered_by_name(playlist: MediaPlaylist) -> MediaPlaylist:
    """A playlist this encoder stored, each segment numbered as its object's name says. A player
    numbers segments by their place, which is the same in a live playlist; but a recording switched
    off and on again leaves out of its event playlist what was streamed in between, and the numbers
    after that gap go on from the names (the objects a new Pod must neither reuse nor delete)."""
    segments = []
    for segment in playlist.segments:
        match = NUMBERED_OBJECT.fullmatch(segment.uri)
        segments.append(replace(segment, sequence=int(match[1])) if match and match[1] else segment)
    return replace(playlist, segments=segments)


def recorded_objects(event: MediaPlaylist) -> frozenset[str]:
    """The objects an event playlist names: a recording's segments and their init segments."""
    return frozenset(name for segment in event.segments for name in (segment.uri, segment.init_uri) if name)


@dataclass
class RenditionTrack:
    """Segments of one rendition across every ingest session and Pod restart of the job.

    Numbers never restart: a new session continues at `next_sequence` and its first segment carries
    a DISCONTINUITY. The live playlist shows the newest `window` segments (or `dvr_seconds` of
    them); a segment leaving it is deleted one more window later, so players that fetched the
    previous playlist can still load it (RFC 8216 6.2.2), unless `keep_all` (recording) holds it.
    """

    name: str
    nominal_duration: float
    window: int
    dvr_seconds: int = 0
    keep_all: bool = False
    # EXT-X-INDEPENDENT-SEGMENTS: every segment starts with a picture decodable on its own. The encoder's
    # own keyframes are IDRs on the segment grid; a source passed through may have an open GOP.
    independent_segments: bool = True
    segments: list[Segment] = field(default_factory=list)  # in the live window, or all with keep_all
    next_sequence: int = 0
    discontinuity_sequence: int = 0  # DISCONTINUITY tags that slid out of the live window
    pending_discontinuity: bool = False
    _retired: deque[Segment] = field(default_factory=deque)
    # For each of `_retired`, the value of `_media_seconds` from which a player can no longer ask for it.
    _deletable_at: deque[float] = field(default_factory=deque)
    _media_seconds: float = 0.0  # the duration of every segment this track added: its clock
    _longest_playlist_seconds: float = 0.0
    _unnamed: list[str] = field(default_factory=list)  # retired since the last live playlist was rendered
    window_start: int = 0  # index into `segments` of the first segment in the live window
    # What an earlier recording of the job keeps (its event playlist names them) while this track does not
    # record: the live window slides past them, but they stay in the bucket.
    recorded: frozenset[str] = frozenset()
    target_floor: int = 0  # the largest EXT-X-TARGETDURATION published: it must never go down
    peak_bit_rate: int = 0  # the highest newest_bit_rate() of this Pod's segments so far (BANDWIDTH)
    _event: GrowingPlaylist | None = None  # the event playlist's text so far (keep_all)
    # When (`_media_seconds`) the event playlist was last rendered, its bytes and how many segments it named.
    _event_rendered: tuple[float, int, int] | None = None

    @classmethod
    def resume(cls, track: RenditionTrack, stored: MediaPlaylist, *also_stored: MediaPlaylist) -> RenditionTrack:
        """Continue after a previous Pod of the same job: keep its segments and numbering. The
        segments that `also_stored` playlists name after `stored`'s last are added: a Pod can stop
        between uploading one of its playlists and the next, and a number one of them published is
        never used again."""
        track.segments = list(stored.segments)
        track._event, track._event_rendered = None, None
        for other in also_stored:
            last = track.segments[-1].sequence if track.segments else -1
            track.segments += [segment for segment in other.segments if segment.sequence > last]
            track.target_floor = max(track.target_floor, other.target_duration or 0)
        track.discontinuity_sequence = stored.discontinuity_sequence
        track.target_floor = max(track.target_floor, stored.target_duration or 0)
        live = next((playlist for playlist in (stored, *also_stored) if playlist.playlist_type != "EVENT"), None)
        if track.keep_all and live is not None and live is not stored:
            # The live window goes on where the stored live playlist left it: its MEDIA-SEQUENCE and
            # DISCONTINUITY-SEQUENCE never go back (RFC 8216 6.2.1). The event playlist starts both at 0,
            # and the window the previous Pod grew (a long segment raises the target) cannot be redrawn
            # from the segments alone.
            track.window_start = next((index for index, segment in enumerate(track.segments)
                                       if segment.sequence >= live.media_sequence), len(track.segments))
            track.discontinuity_sequence = live.discontinuity_sequence
            # And its tags as the live playlist has them: the event playlist also tags the gap where
            # the job did not record, which the live stream never had.
            published = {segment.sequence: segment.discontinuity for segment in live.segments}
            track.segments = [replace(segment, discontinuity=published[segment.sequence])
                              if segment.sequence in published else segment for segment in track.segments]
        if track.segments:
            track.next_sequence = track.segments[-1].sequence + 1
            track.pending_discontinuity = True
        track._slide()
        return track

    def catch_up(self, ahead: RenditionTrack) -> bool:
        """After a resume: a Pod can stop between uploading one rendition's segment (with its playlist)
        and the next rendition's, which leaves this one a segment or two behind `ahead`. Its next segment
        would then carry another number than the same content in `ahead`, and players switching variants
        go by the numbers (RFC 8216 6.2.4). The numbers it lacks are held by gaps (EXT-X-GAP) with the
        durations, times and discontinuities of `ahead`'s segments. False when it lacks more than a live
        window's worth, or `ahead` no longer names them all: this rendition's playlist was stored long
        before (a rendition the template dropped and has again), not cut short by a Pod's death; it is
        left as it is rather than given a recording's worth of gaps."""
        missing = range(self.next_sequence, ahead.next_sequence)
        if not missing:
            return True
        if not self.segments or len(missing) > self.window:
            return False
        held = {segment.sequence: segment for segment in ahead.segments[-len(missing):]}
        if any(number not in held for number in missing):
            return False
        last = self.segments[-1]
        extension = Path(last.uri).suffix
        for number in missing:
            model = held[number]
            self.segments.append(Segment(number, model.duration, SEGMENT_PATTERN % number + extension,
                                         model.program_date_time, model.discontinuity, last.init_uri, gap=True))
        self.next_sequence = ahead.next_sequence
        self._slide()
        return True

    def session_starts(self, oldest_named: int | None) -> list[tuple[int, Segment]]:
        """The sessions the playlist names from `oldest_named` (a sequence number) on: the one that
        segment belongs to and one at each discontinuity after it (playlist.session_starts)."""
        if oldest_named is None:
            return []
        return session_starts(segment for segment in self.segments if segment.sequence >= oldest_named)

    def join(self, reference: RenditionTrack) -> None:
        """A rendition with nothing stored (a template change gave the ladder a new one) whose job's other
        renditions go on: it starts where `reference` goes on, with its numbering, discontinuity count
        and target duration, so that the same content has the same sequence and discontinuity numbers
        and target in every variant (RFC 8216 6.2.4; players map timestamps across variants by them).
        Its event playlist (a recording's) likewise continues the reference's."""
        self.next_sequence = reference.next_sequence
        self.discontinuity_sequence = reference.discontinuity_sequence + discontinuity_tags(reference.live_segments)
        self.target_floor = max(self.target_floor, reference.target_floor)
        self.pending_discontinuity = reference.pending_discontinuity
        if self.keep_all:
            self._event = GrowingPlaylist(self.nominal_duration, playlist_type="EVENT",
                                          independent_segments=self.independent_segments,
                                          discontinuity_sequence=discontinuity_tags(reference.segments),
                                          target_floor=target_duration(reference.segments,
                                                                       reference.nominal_duration))

    def start_session(self) -> None:
        """A new ingest session (new ffmpeg): its first segment is a discontinuity."""
        if self.segments or self.next_sequence:
            self.pending_discontinuity = True

    def add(
        self,
        duration: float,
        uri: str,
        program_date_time: datetime | None,
        init_uri: str | None = None,
        size_bytes: int | None = None,
    ) -> Segment:
        segment = Segment(
            sequence=self.next_sequence,
            duration=duration,
            uri=uri,
            program_date_time=program_date_time,
            discontinuity=self.pending_discontinuity,
            init_uri=init_uri,
            size_bytes=size_bytes,
        )
        self.next_sequence += 1
        self.pending_discontinuity = False
        self.segments.append(segment)
        self._media_seconds += duration
        self.peak_bit_rate = max(self.peak_bit_rate, self.newest_bit_rate() or 0)
        self._slide(added=True)
        return segment

    def newest_bit_rate(self) -> int | None:
        """The bit rate of the newest segments, for BANDWIDTH: over the shortest run ending with the
        newest segment that lasts at least half the target duration. RFC 8216 4.1 takes the peak over
        runs of 0.5 to 1.5 target durations, so a short segment (the last one before a publisher
        drops can be a single frame) counts together with the one before it. None while there is no
        such run, or a segment's size is unknown (published by an earlier Pod). Gaps hold no media."""
        half_target = max(self.target_floor, self.nominal_duration) / 2
        bits, seconds = 0, 0.0
        for segment in reversed(self.segments):
            if segment.gap:
                continue
            if segment.size_bytes is None:
                return None
            bits += segment.size_bytes * 8
            seconds += segment.duration
            if seconds >= half_target:
                return int(bits / seconds)
        return None

    def average_bit_rate(self) -> int | None:
        """The mean bit rate of the segments whose size is known, for AVERAGE-BANDWIDTH."""
        sized = [segment for segment in self.segments if segment.size_bytes is not None and not segment.gap]
        seconds = sum(segment.duration for segment in sized)
        return int(sum(segment.size_bytes or 0 for segment in sized) * 8 / seconds) if seconds > 0 else None

    def add_stored_sizes(self, sizes: Mapping[str, int]) -> None:
        """The sizes of segments an earlier Pod published (the store's listing: name -> bytes)."""
        for index, segment in enumerate(self.segments):
            if segment.size_bytes is None and not segment.gap and segment.uri in sizes:
                self.segments[index] = replace(segment, size_bytes=sizes[segment.uri])

    def measured_bit_rates(self) -> MeasuredBitRates | None:
        """BANDWIDTH and AVERAGE-BANDWIDTH as the segments held measure them (None while a size is unknown)."""
        return measured_bit_rates(self.segments, max(self.target_floor,
                                                     target_duration(self.segments, self.nominal_duration)))

    def skip(self) -> None:
        """A segment that will not be published (recording paused, spool full): the next one that is
        published follows a gap, so it is a discontinuity. Numbers stay consecutive."""
        self.pending_discontinuity = True

    def _window_size(self) -> int:
        count = self.window
        if self.dvr_seconds > 0:
            total, count = 0.0, 0
            for segment in reversed(self.segments):
                if total >= self.dvr_seconds and count >= self.window:
                    break
                total += segment.duration
                count += 1
        # RFC 8216 6.2.2: no segment leaves a live playlist that would then last less than three
        # target durations (a long GOP raises the target above the nominal segment).
        while count < len(self.segments):
            newest = self.segments[len(self.segments) - count:]
            target = max(self.target_floor, target_duration(newest, self.nominal_duration))
            if sum(segment.duration for segment in newest) >= 3 * target:
                break
            count += 1
        return count

    def _slide(self, added: bool = False) -> None:
        """`added`: a segment was just added, which no playlist published so far names."""
        size = self._window_size()
        # The window only moves on: what slid out stays out (a recording keeps it in `segments`).
        new_start = max(self.window_start, len(self.segments) - size)
        if not self.keep_all:
            # What leaves stays fetchable for its duration plus the longest playlist that named it (RFC
            # 8216 6.2.2): the longest this track published (or read back at a resume), a bound that
            # errs on keeping a segment a little longer.
            published = self.segments[self.window_start : len(self.segments) - (1 if added else 0)]
            self._longest_playlist_seconds = max(self._longest_playlist_seconds,
                                                 sum(segment.duration for segment in published),
                                                 sum(segment.duration for segment in self.segments[new_start:]))
        for segment in self.segments[self.window_start : new_start]:
            if segment.discontinuity:
                self.discontinuity_sequence += 1
            if not self.keep_all:
                self._retired.append(segment)
                self._deletable_at.append(self._media_seconds + segment.duration + self._longest_playlist_seconds)
                if segment.uri not in self.recorded:
                    self._unnamed.append(segment.uri)
        if self.keep_all:
            self.window_start = new_start
        else:
            self.segments = self.segments[new_start:]
            self.window_start = 0

    def orphans(self, stored_names: Iterable[str]) -> list[str]:
        """The objects of this rendition (`stored_names`, its folder's listing) that an earlier Pod took
        out of its live window and did not live to delete: a Pod that stops leaves the segments it
        retired less than a playlist's duration ago. They are numbered before every segment this track
        holds (with keep_all, before its newest: a recording holds what it names, and the segments an
        earlier Pod published while the job did not record lie between them, named by no playlist);
        an init segment named so is one only if no segment held uses it."""
        held = [*self._retired, *self.segments]
        if not held:
            return []
        below = max(s.sequence for s in held) if self.keep_all else min(s.sequence for s in held)
        # The segments of a recording the job made before (recording: true, then false) are no leftovers.
        kept = self.recorded | {segment.uri for segment in held} | {s.init_uri for s in held if s.init_uri}
        found = []
        for name in stored_names:
            match = NUMBERED_OBJECT.fullmatch(name)
            if match and int(match[1] or match[2]) < below and name not in kept:
                found.append(name)
        return found

    def retention_seconds(self) -> float:
        """How long a segment stays fetchable after it leaves the live playlist: its duration plus the
        playlist's (RFC 8216 6.2.2), for a segment of the nominal duration. Right after a resume, the
        playlist is the one stored, even when this track's window is shorter (a template changed)."""
        return self.nominal_duration + sum(segment.duration for segment in (*self._retired, *self.live_segments))

    @property
    def live_segments(self) -> list[Segment]:
        return self.segments[self.window_start :]

    def take_expired(self) -> list[Segment]:
        """Segments a player can no longer ask for: delete them now. RFC 8216 6.2.2 keeps a segment
        removed from the playlist available for its duration plus the duration of the longest playlist
        that named it; the media added since it left measures the time (segments left together, at a
        resume with a shorter window, have each waited nothing yet)."""
        expired: list[Segment] = []
        while self._retired and self._deletable_at[0] <= self._media_seconds:
            self._deletable_at.popleft()
            segment = self._retired.popleft()
            if segment.uri not in self.recorded:
                expired.append(segment)
        return expired

    def hold_seconds(self, segment: Segment) -> float:
        """How long `segment` stays fetchable once a stored playlist no longer names it: what take_expired
        waits for on the media clock (its duration plus the longest playlist's)."""
        return segment.duration + self._longest_playlist_seconds

    def take_unnamed(self) -> list[str]:
        """The segments that left the live window since the last call: the next live playlist is the
        first without them, and their hold (hold_seconds) starts once it is stored."""
        unnamed, self._unnamed = self._unnamed, []
        return unnamed

    def unused_init_segments(self, expired: list[Segment]) -> list[str]:
        """The init segments (EXT-X-MAP) of `expired` segments that no segment still in the playlist
        or still fetchable uses: they go with them. Each session has its own, so they would pile up."""
        maps = {segment.init_uri for segment in expired if segment.init_uri}
        if not maps:  # the common case (MPEG-TS, or nothing expired): no walk over a long recording's segments
            return []
        in_use = {segment.init_uri for segment in (*self.segments, *self._retired)}
        return sorted(maps - in_use - self.recorded)

    def _target(self, segments: list[Segment]) -> int:
        self.target_floor = max(self.target_floor, target_duration(segments, self.nominal_duration))
        return self.target_floor

    def live_playlist(self, ended: bool = False) -> str:
        segments = self.live_segments
        return render_media_playlist(
            segments,
            nominal_duration=self._target(segments),  # a floor that already covers every segment
            discontinuity_sequence=self.discontinuity_sequence,
            ended=ended,
            independent_segments=self.independent_segments,
        )

    def event_playlist(self, ended: bool = False) -> str:
        """Every segment kept (keep_all): an EVENT playlist, closed with ENDLIST once ended (its type
        stays: RFC 8216 6.2.1 allows a published playlist no change but appending and ENDLIST)."""
        if self._event is None:
            self._event = GrowingPlaylist(self.nominal_duration, playlist_type="EVENT",
                                          independent_segments=self.independent_segments)
        text = self._event.render(self.segments, ended=ended)
        self._event_rendered = (self._media_seconds, len(text), len(self.segments))
        return text

    def event_playlist_due(self) -> bool:
        """Whether a LiveJob's event playlist (beside its live one) is to be uploaded again: enough media
        came since it was last rendered (EVENT_PLAYLIST_BYTES_PER_SECOND), or the live window no longer
        names a segment it does not name. The end of a recording is uploaded whatever this says."""
        if self._event_rendered is None:
            return True
        rendered_at, size, named = self._event_rendered
        return self._media_seconds - rendered_at >= size / EVENT_PLAYLIST_BYTES_PER_SECOND or named < self.window_start


def keep_in_step(tracks: Iterable[RenditionTrack]) -> list[RenditionTrack]:
    """Brings the resumed renditions of a job (those with stored segments) level with the one furthest
    on (RenditionTrack.catch_up); returns those that could not be."""
    resumed = [track for track in tracks if track.next_sequence]
    if not resumed:
        return []
    ahead = max(resumed, key=lambda track: track.next_sequence)
    return [track for track in resumed if not track.catch_up(ahead)]
