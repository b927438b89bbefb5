"""Clips: a RecordJob on a LiveJob's stored segments. No re-encode: the segments overlapping the
time range are copied (server side) under the clip's prefix and named by a VOD playlist per
rendition, plus a master; with format mp4, one MP4 per rendition (ffmpeg -c copy) as well.

A range that ends in the future is followed: the clip waits for the LiveJob to publish the
segments that cover the end (or to end its playlist).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from onair.exitcodes import EXIT_INTERRUPTED
from onair.models import RecordingFormat

from .config import ClipConfig, JobConfig
from .mp4 import Mp4Impossible, fetch_segment, unwritten_mp4s, write_mp4
from .pipeline import MASTER_PLAYLIST, MAX_PROBED_SESSIONS, FatalConfigError, probe_stored_segment
from .playlist import (
    MediaPlaylist,
    Segment,
    Variant,
    measured_bit_rates,
    parse_master_playlist,
    parse_media_playlist,
    render_master_playlist,
    render_media_playlist,
    renumbered_for_clip,
    select_clip_segments,
    session_starts,
    target_duration,
    with_media,
)
from .probe import Probed, merge_probes
from .status import EncoderState, EncoderStatus, RenditionStatus
from .tracks import EVENT_PLAYLIST, LIVE_PLAYLIST, numbered_by_name
from .upload import FINAL_PLAYLIST_CACHE_CONTROL, SEGMENT_CACHE_CONTROL, S3Store

log = logging.getLogger(__name__)

FOLLOW_POLL_SECONDS = 1.0


def _join(*parts: str) -> str:
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


def stored_segments(event: MediaPlaylist | None, live: MediaPlaylist | None) -> MediaPlaylist | None:
    """One playlist of the segments both name, each once, in order. A job that stopped recording
    (recording: true, then false) has an event playlist that ends where it stopped, and a live window
    past it; one that records has both, the live one ahead by less than its window (the event
    playlist of a long recording is uploaded less often, but before a segment leaves the window)."""
    if event is None or live is None:
        return event or live
    last = event.segments[-1].sequence if event.segments else -1
    newer = [segment for segment in live.segments if segment.sequence > last]
    # Ended as the playlist with the newest segment says: a stale event playlist is never closed.
    ended = live.ended if newer or not event.segments else event.ended or live.ended
    return MediaPlaylist(segments=[*event.segments, *newer],
                         target_duration=max(event.target_duration or 0, live.target_duration or 0) or None,
                         ended=ended, playlist_type=event.playlist_type,
                         independent_segments=event.independent_segments and live.independent_segments)


def lost_beginning(stored: MediaPlaylist, start: datetime | None) -> datetime | None:
    """Where the stored segments begin, when that is after `start` and earlier segments had been
    written (the numbers do not begin at 0): a job that does not record keeps only its live window, and
    the clip of an older range lacks its beginning. None when the stored segments cover `start`."""
    first = stored.segments[0] if stored.segments else None
    if start is None or first is None or first.sequence == 0 or first.program_date_time is None:
        return None
    return first.program_date_time if first.program_date_time > start else None


def to_common_end(variants: list[list[Segment]]) -> list[list[Segment]]:
    """Each variant's segments up to where all of them reach: the variants' playlists are read one
    after another, and a clip cut while its LiveJob streams on (/finish, or a stream that stopped
    short of the clip's end) may find a segment more in those read last. A segment that starts less
    than half its duration before the earliest end is left out (renditions cut their segments at the
    same moments, give or take a frame). Variants without PROGRAM-DATE-TIME are left as they are."""
    ends = [segments[-1].end_time for segments in variants if segments]
    if not ends or any(end is None for end in ends) or len(ends) < len(variants):
        return variants
    common = min(end for end in ends if end is not None)
    return [[segment for segment in segments if segment.program_date_time is None
             or segment.program_date_time + timedelta(seconds=segment.duration / 2) < common]
            for segments in variants]


class ClipJob:
    def __init__(self, config: JobConfig, clip: ClipConfig, store: S3Store, status: EncoderStatus, work_dir: Path,
                 source: S3Store | None = None):
        """`store`: the clip's own bucket; `source`: the LiveJob's (by default the same)."""
        self.config = config
        self.clip = clip
        self.store = store
        self.source = source or store
        self.source_bucket = source.bucket if source is not None else None  # for copies into `store`
        self.status = status
        self.status.store_read = True  # a clip takes no input: nothing to hold its readiness for
        self.work_dir = work_dir
        self.stop_requested = asyncio.Event()
        self.finishing = False
        self.status.finish_at = clip.end

    @property
    def end(self) -> datetime | None:
        """Where the clip ends: its range's end, or where the operator moved it since (POST /finish-at)
        while the clip follows the live stream."""
        return self.status.finish_at

    def request_stop(self, finishing: bool | None = None) -> None:
        self.finishing = self.finishing or bool(finishing)
        self.stop_requested.set()

    def _source_playlist(self, rendition_uri: str) -> MediaPlaylist | None:
        """What the rendition still has stored: every segment its event playlist names (LiveJob
        recording: true), and the live window."""
        directory = rendition_uri.rsplit("/", 1)[0] if "/" in rendition_uri else ""
        event, live = [numbered_by_name(parse_media_playlist(body.decode())) if body else None
                       for body in (self.source.get(_join(self.clip.source_prefix, directory, name))
                                    for name in (EVENT_PLAYLIST, LIVE_PLAYLIST))]
        return stored_segments(event, live)

    def _covered(self, playlist: MediaPlaylist) -> bool:
        if playlist.ended:
            return True
        if self.end is None:
            return False
        last = playlist.segments[-1].end_time if playlist.segments else None
        return last is not None and last >= self.end

    async def run(self) -> int:
        master_key = _join(self.clip.source_prefix, MASTER_PLAYLIST)
        master_body = await asyncio.to_thread(self.source.get, master_key)
        while master_body is None and (self.end is None or self.end > datetime.now(UTC)):
            # A recording that follows its LiveJob may begin before the stream's first segments.
            self.status.set_state(EncoderState.WAITING, "waiting for the live stream's first segments")
            try:
                await asyncio.wait_for(self.stop_requested.wait(), FOLLOW_POLL_SECONDS)
                break
            except TimeoutError:
                master_body = await asyncio.to_thread(self.source.get, master_key)
        if master_body is None:
            if self.stop_requested.is_set() and not self.finishing:
                return EXIT_INTERRUPTED  # an eviction: the next Pod waits on
            raise FatalConfigError(f"no master playlist under {self.clip.source_prefix}: nothing to clip")
        variants = parse_master_playlist(master_body.decode())
        self.status.set_state(EncoderState.LIVE, "cutting the clip from stored segments")
        self.status.set_connected(True)
        self.status.renditions.clear()  # the clip has the source's renditions, whatever the template says
        chosen: dict[str, tuple[Variant, list[Segment]]] = {}
        independent: dict[str, bool] = {}  # by variant: whether its stored playlist says EXT-X-INDEPENDENT-SEGMENTS
        lost_until: datetime | None = None
        for variant in variants:
            while True:
                playlist = await asyncio.to_thread(self._source_playlist, variant.uri)
                if playlist is None:
                    raise FatalConfigError(f"the source playlist {variant.uri} is missing")
                if self._covered(playlist) or not self._may_grow(playlist):
                    break
                self.status.set_state(EncoderState.WAITING, "waiting for the live stream to reach the clip's end")
                try:
                    await asyncio.wait_for(self.stop_requested.wait(), FOLLOW_POLL_SECONDS)
                except TimeoutError:
                    continue
                if not self.finishing:
                    return EXIT_INTERRUPTED  # an eviction: the next Pod follows the stream on to the end
                break  # finishing now: the clip ends with what the stream has published
            segments = select_clip_segments(playlist.segments, self.clip.start, self.end,
                                            self.status.paused_ranges)
            if not segments:
                if select_clip_segments(playlist.segments, self.clip.start, self.end):
                    raise FatalConfigError("the recording was paused for the whole of its time range")
                raise FatalConfigError("no stored segment overlaps the clip's time range")
            chosen[variant.uri] = (variant, segments)
            # The clip says of its segments what the LiveJob's playlist said of them (not of a passthrough's).
            independent[variant.uri] = playlist.independent_segments
            lost_until = lost_until or lost_beginning(playlist, self.clip.start)
        aligned = to_common_end([segments for _, segments in chosen.values()])
        if not all(aligned):
            raise FatalConfigError("the renditions' stored segments do not overlap in the clip's time range")
        # A rendition with nothing but gaps in the range (a Pod died before it uploaded them) has nothing
        # to play: the clip's master lists the others.
        chosen = {uri: (variant, segments)
                  for (uri, (variant, _)), segments in zip(chosen.items(), aligned, strict=True)
                  if any(not segment.gap for segment in segments)}
        if not chosen:
            raise FatalConfigError("no stored segment with media overlaps the clip's time range")
        total = sum(len(segments) for _, segments in chosen.values())
        self.status.recorded_seconds = math.fsum(segment.duration for segment in next(iter(chosen.values()))[1]) \
            if chosen else 0.0
        done = 0
        clip_variants = []
        for uri, (variant, segments) in chosen.items():
            rendition = uri.rsplit("/", 1)[0] if "/" in uri else "source"
            source_dir = _join(self.clip.source_prefix, rendition)
            names = [f"seg_{index:06d}{Path(segment.uri).suffix}" for index, segment in enumerate(segments)]
            copied_inits: dict[str, str] = {}
            for segment, name in zip(segments, names, strict=True):
                if segment.gap:  # nothing stored: the clip's playlist holds its place too
                    done += 1
                    continue
                if segment.init_uri and segment.init_uri not in copied_inits:
                    copied_inits[segment.init_uri] = segment.init_uri
                    await asyncio.to_thread(self.store.copy, _join(source_dir, segment.init_uri),
                                            self.config.key(rendition, segment.init_uri), SEGMENT_CACHE_CONTROL,
                                            self.source_bucket)
                await asyncio.to_thread(self.store.copy, _join(source_dir, segment.uri),
                                        self.config.key(rendition, name), SEGMENT_CACHE_CONTROL, self.source_bucket)
                done += 1
                self.status.recording_progress = done / total
                self.status.renditions.setdefault(rendition, RenditionStatus(rendition)).segments_written += 1
            sizes = await asyncio.to_thread(self.source.sizes, source_dir)
            clip_segments = renumbered_for_clip([replace(segment, size_bytes=sizes.get(segment.uri))
                                                 for segment in segments], names)
            body = render_media_playlist(clip_segments, nominal_duration=1, playlist_type="VOD", ended=True,
                                         independent_segments=independent[uri])
            await asyncio.to_thread(self.store.put, self.config.key(rendition, LIVE_PLAYLIST), body.encode(),
                                    "application/vnd.apple.mpegurl", FINAL_PLAYLIST_CACHE_CONTROL)
            # A VOD master states what its own segments measure and hold, not the live stream's figures
            # and codecs (a reconnect since the clip's range may have changed them).
            measured = measured_bit_rates(clip_segments, target_duration(clip_segments, 1))
            probed = await self._probe(rendition, clip_segments)
            clip_variants.append(Variant(f"{rendition}/{LIVE_PLAYLIST}",
                                         measured.peak if measured else variant.bandwidth,
                                         measured.average if measured else variant.average_bandwidth,
                                         ",".join(probed.codecs) if probed.codecs else variant.codecs,
                                         probed.resolution or variant.resolution,
                                         probed.frame_rate or variant.frame_rate))
            if self.config.outputs.final_format == RecordingFormat.MP4:
                try:
                    unwritten = None if await self._write_mp4(rendition, clip_segments) else unwritten_mp4s(
                        [rendition], [])
                except Mp4Impossible as error:
                    unwritten = unwritten_mp4s([], [f"{rendition}: {error}"])
                if unwritten is not None:
                    self.status.set_state(EncoderState.FAILED, unwritten[0])
                    log.error("%s", unwritten[0])
                    return unwritten[1]
        master = render_master_playlist(clip_variants,
                                        independent_segments=all(independent[uri] for uri in chosen)).encode()
        await asyncio.to_thread(self.store.put, self.config.key(MASTER_PLAYLIST), master,
                                "application/vnd.apple.mpegurl", FINAL_PLAYLIST_CACHE_CONTROL)
        for rendition_status in self.status.renditions.values():
            rendition_status.status = "Completed"
            rendition_status.progress = 1.0
        self.status.set_connected(False)
        message = f"clip of {total} segments written"
        if lost_until is not None and self.clip.start is not None:
            message += (f"; it begins at {lost_until.isoformat()}, not at {self.clip.start.isoformat()}: the older "
                        "segments had left the LiveJob's live window (recording: true keeps them all)")
            log.warning("%s", message)
        self.status.set_state(EncoderState.COMPLETED, message)
        return 0

    def _may_grow(self, playlist: MediaPlaylist) -> bool:
        """Whether waiting can still bring the segments up to the clip's end: the source is not
        ended, and the end is in the future or the source published a segment recently."""
        if playlist.ended:
            return False
        if self.end is None or self.end > datetime.now(UTC):
            return True
        last = playlist.segments[-1].end_time if playlist.segments else None
        return last is not None and (datetime.now(UTC) - last).total_seconds() < 3 * (playlist.target_duration or 4)

    async def _probe(self, rendition: str, segments: list[Segment]) -> Probed:
        """What the clip's segments hold: the first of each of its sessions (a discontinuity starts one)
        is probed, and their codecs are listed together (RFC 8216 4.3.4.2: every format present).
        Nothing probed (the store or ffprobe failed): empty, and the source master's figures stay."""
        directory = self.work_dir / "probe" / rendition
        directory.mkdir(parents=True, exist_ok=True)
        firsts = [segment for _, segment in session_starts(segments)]
        results = []
        for segment in firsts[:MAX_PROBED_SESSIONS]:  # a clip spanning many reconnects: its first sessions
            try:
                results.append(await probe_stored_segment(self.store, partial(self.config.key, rendition), segment,
                                                          directory))
            except Exception as error:  # the clip stands without it: the source master's figures stay
                log.warning("could not probe %s of %s: %s", segment.uri, rendition, error)
        return merge_probes(results)

    async def _write_mp4(self, rendition: str, segments: list[Segment]) -> bool:
        """The MP4 of the clip's segments that hold media: a rendition's gap (EXT-X-GAP) is left out."""
        segments = with_media(segments)
        directory = self.work_dir / "clip" / rendition
        directory.mkdir(parents=True, exist_ok=True)
        paths = [await asyncio.to_thread(fetch_segment, self.store, partial(self.config.key, rendition), segment,
                                         directory) for segment in segments]
        mp4 = directory / f"{rendition}.mp4"
        if not await write_mp4(paths, segments, directory, mp4, time.monotonic() + 120):
            return False
        # From disk, in parts: a long clip's MP4 may be larger than the Pod's memory.
        await asyncio.to_thread(self.store.put, self.config.key(f"{rendition}.mp4"), mp4, "video/mp4",
                                FINAL_PLAYLIST_CACHE_CONTROL)
        return True
