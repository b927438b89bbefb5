"""HLS playlists: parsing (ffmpeg's local playlists, our own stored ones) and writing (the ones we
upload). Pure functions and small value types, no I/O.

We write the uploaded playlists ourselves instead of copying ffmpeg's: the encoder owns numbering
across publisher reconnects and Pod restarts (continuous EXT-X-MEDIA-SEQUENCE, DISCONTINUITY), the
sliding window, and the rule that a playlist is uploaded only after every segment it names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

HLS_VERSION = 7  # EXT-X-MAP in media playlists without I-frames-only needs 6+; 7 for fMP4 (HEVC/VP9)


@dataclass(frozen=True)
class Segment:
    """One media segment as a playlist names it."""

    sequence: int
    duration: float
    uri: str
    program_date_time: datetime | None = None
    discontinuity: bool = False
    init_uri: str | None = None  # EXT-X-MAP of fMP4 segments
    size_bytes: int | None = None
    # EXT-X-GAP: a place held for media this rendition does not have (its object was never uploaded),
    # so that the same content keeps the same sequence number in every variant. Players do not load it.
    gap: bool = False

    @property
    def end_time(self) -> datetime | None:
        if self.program_date_time is None:
            return None
        return self.program_date_time + timedelta(seconds=self.duration)


@dataclass
class MediaPlaylist:
    """The parts of a media playlist we read back."""

    segments: list[Segment] = field(default_factory=list)
    target_duration: int | None = None
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    ended: bool = False
    playlist_type: str | None = None
    independent_segments: bool = False  # EXT-X-INDEPENDENT-SEGMENTS


def format_program_date_time(moment: datetime) -> str:
    """RFC 3339 with milliseconds and an explicit UTC offset, as HLS requires (ISO 8601 date-time)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_program_date_time(text: str) -> datetime:
    """ffmpeg writes `2026-11-23T16:32:12.258+0000`; we write `...Z`. Both become aware datetimes."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"
    return datetime.fromisoformat(text)


def _attribute_list(text: str) -> dict[str, str]:
    """`URI="init.mp4",BYTERANGE="1@0"` -> {"URI": "init.mp4", ...} (quoted values may hold commas)."""
    attributes: dict[str, str] = {}
    position = 0
    while position < len(text):
        equals = text.find("=", position)
        if equals < 0:
            break
        name = text[position:equals].strip()
        if text[equals + 1 : equals + 2] == '"':
            close = text.index('"', equals + 2)
            attributes[name] = text[equals + 2 : close]
            position = close + 2
        else:
            comma = text.find(",", equals)
            end = len(text) if comma < 0 else comma
            attributes[name] = text[equals + 1 : end]
            position = end + 1
    return attributes


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse a media playlist. Sequence numbers come from EXT-X-MEDIA-SEQUENCE, as players count."""
    try:
        return _parse_media_playlist(text)
    except ValueError as error:
        # Not the body's own text: it may be whatever a job's URL made the encoder fetch, and the
        # message ends up in the job's status.
        raise ValueError("not an HLS media playlist") from error


def _parse_media_playlist(text: str) -> MediaPlaylist:
    playlist = MediaPlaylist()
    duration: float | None = None
    program_date_time: datetime | None = None
    discontinuity = False
    gap = False
    init_uri: str | None = None
    sequence: int | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-TARGETDURATION:"):
            playlist.target_duration = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            playlist.media_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            playlist.discontinuity_sequence = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-PLAYLIST-TYPE:"):
            playlist.playlist_type = line.split(":", 1)[1]
        elif line == "#EXT-X-ENDLIST":
            playlist.ended = True
        elif line == "#EXT-X-INDEPENDENT-SEGMENTS":
            playlist.independent_segments = True
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line == "#EXT-X-GAP":
            gap = True
        elif line.startswith("#EXT-X-MAP:"):
            init_uri = _attribute_list(line.split(":", 1)[1]).get("URI")
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            program_date_time = parse_program_date_time(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",", 1)[0])
        elif not line.startswith("#"):
            if duration is None:
                raise ValueError(f"segment {line!r} has no #EXTINF")
            sequence = playlist.media_sequence if sequence is None else sequence + 1
            playlist.segments.append(
                Segment(sequence, duration, line, program_date_time, discontinuity, init_uri, gap=gap)
            )
            # PROGRAM-DATE-TIME applies to one segment; later ones follow on from it.
            if program_date_time is not None:
                program_date_time += timedelta(seconds=duration)
            duration, discontinuity, gap = None, False, False
    return playlist


def target_duration(segments: Iterable[Segment], nominal: float) -> int:
    """EXT-X-TARGETDURATION: every EXTINF rounded to the nearest integer must be <= it (RFC 8216
    4.3.3.1), and never below the nominal segment duration (or a floor the caller keeps)."""
    # Rounded as a player rounds what it reads: the EXTINF as written, halves up (4.5 -> 5).
    longest = max((math.floor(float(extinf(segment.duration)) + 0.5) for segment in segments), default=0)
    return max(math.ceil(nominal), longest, 1)


@dataclass(frozen=True)
class MeasuredBitRates:
    peak: int  # BANDWIDTH
    average: int  # AVERAGE-BANDWIDTH


def measured_bit_rates(segments: Sequence[Segment], target: int) -> MeasuredBitRates | None:
    """The bit rates a finished (VOD) playlist's master must state, measured from its segments' sizes:
    Apple's HLS authoring rules want both within 10% of what the segments measure. The peak is RFC 8216
    4.1's: the highest bit rate of any run of consecutive segments lasting 0.5 to 1.5 target durations
    (a short playlist's whole length when no run is that long). None when a size is unknown. Gaps
    (EXT-X-GAP) hold no media: they are left out."""
    segments = with_media(segments)
    if not segments or any(segment.size_bytes is None for segment in segments):
        return None
    bits = [(segment.size_bytes or 0) * 8 for segment in segments]
    seconds = sum(segment.duration for segment in segments)
    if seconds <= 0:
        return None
    average = int(sum(bits) / seconds)
    peak = 0
    for first in range(len(segments)):
        run_bits, run_seconds = 0, 0.0
        for index in range(first, len(segments)):
            run_bits += bits[index]
            run_seconds += segments[index].duration
            if run_seconds > 1.5 * target:
                break
            if run_seconds >= 0.5 * target:
                peak = max(peak, int(run_bits / run_seconds))
    return MeasuredBitRates(peak=max(peak, average) if peak else average, average=average)


def extinf(duration: float) -> str:
    """The duration as EXTINF writes it."""
    return f"{duration:.3f}"


_ENDLIST_LINE = "#EXT-X-ENDLIST\n"


def render_media_playlist(
    segments: Sequence[Segment],
    *,
    nominal_duration: float,
    discontinuity_sequence: int = 0,
    playlist_type: str | None = None,
    ended: bool = False,
    independent_segments: bool = True,
) -> str:
    """A media playlist naming `segments` (oldest first). Their numbers are consecutive but where a
    recording left out what was streamed while it did not record: a DISCONTINUITY marks that gap.

    Every segment gets its EXT-X-PROGRAM-DATE-TIME (cheap, and players and clip cutting map wall
    clock to segments without summing durations); EXT-X-MAP is repeated whenever the init segment
    changes (a reconnect starts a new ffmpeg, hence a new init segment).
    """
    header = _media_playlist_header(target_duration(segments, nominal_duration),
                                    segments[0].sequence if segments else 0,
                                    discontinuity_sequence, playlist_type, independent_segments)
    lines = [header]
    current_init: str | None = None
    previous: Segment | None = None
    for segment in segments:
        lines.append(_segment_lines(segment, previous, current_init))
        current_init = segment.init_uri or current_init
        previous = segment
    if ended:
        lines.append(_ENDLIST_LINE)
    return "".join(lines)


def _media_playlist_header(target: int, media_sequence: int, discontinuity_sequence: int,
                           playlist_type: str | None, independent_segments: bool) -> str:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{HLS_VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
    ]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    if playlist_type:
        lines.append(f"#EXT-X-PLAYLIST-TYPE:{playlist_type}")
    if independent_segments:
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    return "\n".join(lines) + "\n"


def _tagged_discontinuity(segment: Segment, previous: Segment | None) -> bool:
    """Whether the playlist tags EXT-X-DISCONTINUITY before `segment`: a new session, or a gap in the
    numbers (what a recording left out). A tag before the first segment is allowed (RFC 8216 6.2.1)."""
    return segment.discontinuity or (previous is not None and segment.sequence != previous.sequence + 1)


def discontinuity_tags(segments: Sequence[Segment]) -> int:
    """How many EXT-X-DISCONTINUITY tags a playlist of `segments` has."""
    return sum(_tagged_discontinuity(segment, segments[index - 1] if index else None)
               for index, segment in enumerate(segments))


def _segment_lines(segment: Segment, previous: Segment | None, current_init: str | None) -> str:
    """The lines that name `segment` after `previous`, while `current_init` is the EXT-X-MAP in force."""
    lines = []
    # DISCONTINUITY-SEQUENCE counts only the tags of segments that slid out.
    if _tagged_discontinuity(segment, previous):
        lines.append("#EXT-X-DISCONTINUITY\n")
    if segment.init_uri and segment.init_uri != current_init:
        lines.append(f'#EXT-X-MAP:URI="{segment.init_uri}"\n')
    if segment.program_date_time is not None:
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(segment.program_date_time)}\n")
    if segment.gap:
        lines.append("#EXT-X-GAP\n")
    lines.append(f"#EXTINF:{extinf(segment.duration)},\n{segment.uri}\n")
    return "".join(lines)


@dataclass
class GrowingPlaylist:
    """render_media_playlist's text of a list of segments that only grows at its end (an EVENT
    playlist): each segment's lines are written once, so rendering a long recording again after each
    new segment costs that segment, not the whole recording (at 43,200 segments, a day of 2 s ones,
    rendering all again took 110-220 ms here). `render` starts over when the list is not the one it
    grew from (a resume replaced it)."""

    nominal_duration: float
    playlist_type: str | None = None
    # Of a rendition that joined a job's others (RenditionTrack.join): their count and target so far.
    discontinuity_sequence: int = 0
    target_floor: int = 0
    independent_segments: bool = True
    _chunks: list[str] = field(default_factory=list)
    _first: Segment | None = None
    _last: Segment | None = None
    _init: str | None = None
    _longest: int = 0  # the longest EXTINF so far, rounded as target_duration rounds it

    def render(self, segments: Sequence[Segment], ended: bool = False) -> str:
        count = len(self._chunks)
        if count and (len(segments) < count or segments[0] is not self._first or segments[count - 1] is not self._last):
            self._chunks, self._init, self._longest = [], None, 0
            count = 0
        for segment in segments[count:]:
            self._chunks.append(_segment_lines(segment, self._last if self._chunks else None, self._init))
            self._init = segment.init_uri or self._init
            self._longest = max(self._longest, target_duration((segment,), 0))
            self._last = segment
        self._first = segments[0] if segments else None
        target = max(math.ceil(self.nominal_duration), self._longest, self.target_floor, 1)
        header = _media_playlist_header(target, segments[0].sequence if segments else 0, self.discontinuity_sequence,
                                        self.playlist_type, self.independent_segments)
        return "".join((header, *self._chunks, _ENDLIST_LINE if ended else ""))


@dataclass(frozen=True)
class Variant:
    """One EXT-X-STREAM-INF entry of the master playlist."""

    uri: str
    bandwidth: int
    average_bandwidth: int | None
    codecs: str
    resolution: tuple[int, int] | None
    frame_rate: float | None


def render_master_playlist(variants: Sequence[Variant], independent_segments: bool = True) -> str:
    """The master playlist, variants in the given order (the template's order, highest first)."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}"]
    if independent_segments:
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    for variant in variants:
        attributes = [f"BANDWIDTH={variant.bandwidth}"]
        if variant.average_bandwidth:
            attributes.append(f"AVERAGE-BANDWIDTH={variant.average_bandwidth}")
        attributes.append(f'CODECS="{variant.codecs}"')
        if variant.resolution:
            attributes.append(f"RESOLUTION={variant.resolution[0]}x{variant.resolution[1]}")
        if variant.frame_rate:
            attributes.append(f"FRAME-RATE={variant.frame_rate:.3f}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attributes))
        lines.append(variant.uri)
    return "\n".join(lines) + "\n"


def parse_master_playlist(text: str) -> list[Variant]:
    try:
        return _parse_master_playlist(text)
    except (ValueError, KeyError) as error:
        raise ValueError("not an HLS master playlist") from error  # as parse_media_playlist: no body text


def _parse_master_playlist(text: str) -> list[Variant]:
    variants: list[Variant] = []
    pending: dict[str, str] | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = _attribute_list(line.split(":", 1)[1])
        elif line and not line.startswith("#") and pending is not None:
            resolution = None
            if "RESOLUTION" in pending:
                width, height = pending["RESOLUTION"].split("x")
                resolution = (int(width), int(height))
            variants.append(
                Variant(
                    uri=line,
                    bandwidth=int(pending["BANDWIDTH"]),
                    average_bandwidth=int(pending["AVERAGE-BANDWIDTH"]) if "AVERAGE-BANDWIDTH" in pending else None,
                    codecs=pending.get("CODECS", ""),
                    resolution=resolution,
                    frame_rate=float(pending["FRAME-RATE"]) if "FRAME-RATE" in pending else None,
                )
            )
            pending = None
    return variants


# --- CODECS attribute ------------------------------------------------------------------------

_H264_PROFILE_IDC = {"Baseline": 66, "Constrained Baseline": 66, "Main": 77, "High": 100, "High 10": 110,
                     "High 4:2:2": 122, "High 4:4:4 Predictive": 244}
_H264_CONSTRAINTS = {"Constrained Baseline": 0xC0, "Baseline": 0xC0, "Main": 0x40}
# VP9 levels (the VP9 bitstream spec, Annex A): the smallest whose picture size and luma sample rate
# cover the stream.
_VP9_LEVELS = ((10, 36864, 829440), (11, 73728, 2764800), (20, 122880, 4608000), (21, 245760, 9216000),
               (30, 552960, 20736000), (31, 983040, 36864000), (40, 2228224, 83558400),
               (41, 2228224, 160432128), (50, 8912896, 311951360), (51, 8912896, 588251136),
               (52, 8912896, 1176502272), (60, 35651584, 1176502272), (61, 35651584, 2353004544),
               (62, 35651584, 4706009088))


# What the master says when the first segment cannot be probed: the template's codecs at common
# profiles and levels (a passthrough, with no template codec, is most often H.264).
_FALLBACK_VIDEO = {"H264": "avc1.64001f", "HEVC": "hvc1.1.6.L93.B0", "VP9": "vp09.00.31.08"}
_FALLBACK_AUDIO = {"AAC": "mp4a.40.2", "OPUS": "Opus"}


def fallback_codecs(video: str | None, audio: str | None) -> str:
    return f"{_FALLBACK_VIDEO.get(str(video), 'avc1.64001f')},{_FALLBACK_AUDIO.get(str(audio), 'mp4a.40.2')}"


def _vp9_level(stream: dict[str, object]) -> int:
    """ffprobe gives no VP9 level: the smallest that covers the picture size and frame rate (3.1,
    up to 720p30, when they are unknown)."""
    try:
        picture = int(str(stream["width"])) * int(str(stream["height"]))
        numerator, _, denominator = str(stream.get("avg_frame_rate") or stream.get("r_frame_rate") or "").partition("/")
        rate = float(numerator) / float(denominator or 1)
    except (KeyError, ValueError, ZeroDivisionError):
        return 31
    if picture <= 0 or not 0 < rate < 1000:
        return 31
    return next((level for level, size, samples in _VP9_LEVELS if picture <= size and picture * rate <= samples), 62)


def codec_tag(stream: dict[str, object]) -> str | None:
    """RFC 6381 codec string of one ffprobe stream (`ffprobe -show_streams -of json`), e.g.
    avc1.64001f, hvc1.1.6.L93.B0, vp09.00.30.08, mp4a.40.2, Opus, ac-3, ec-3. None for an unknown codec."""
    codec = stream.get("codec_name")
    profile = str(stream.get("profile") or "")
    level = stream.get("level")
    if codec == "h264":
        profile_idc = _H264_PROFILE_IDC.get(profile, 100)
        constraints = _H264_CONSTRAINTS.get(profile, 0)
        level_idc = int(level) if isinstance(level, int | str) and str(level).lstrip("-").isdigit() else 31
        return f"avc1.{profile_idc:02x}{constraints:02x}{max(level_idc, 0):02x}"
    if codec == "hevc":
        profile_number = 2 if "10" in profile else 1
        level_number = int(level) if isinstance(level, int | str) and str(level).lstrip("-").isdigit() else 93
        return f"hvc1.{profile_number}.{6 if profile_number == 1 else 4}.L{max(level_number, 0)}.B0"
    if codec == "vp9":
        bit_depth = 10 if "10" in str(stream.get("pix_fmt", "")) else 8
        vp9_profile = int(profile[-1]) if profile[-1:].isdigit() else 0
        return f"vp09.{vp9_profile:02d}.{_vp9_level(stream)}.{bit_depth:02d}"
    if codec == "aac":
        return {"HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29"}.get(profile, "mp4a.40.2")
    if codec == "mp3":
        return "mp4a.40.34"
    if codec == "opus":
        return "Opus"
    if codec == "ac3":
        return "ac-3"
    if codec == "eac3":
        return "ec-3"
    return None


# --- Clips -----------------------------------------------------------------------------------


# A range that ends a millisecond or two past a segment's PROGRAM-DATE-TIME ends with the segment before:
# ffmpeg truncates the stamp to the millisecond, so that end is where the segment really starts.
CLIP_END_TOLERANCE = timedelta(milliseconds=2)


def select_clip_segments(segments: Sequence[Segment], start: datetime | None, end: datetime | None,
                         paused: Sequence[tuple[datetime, datetime | None]] = ()) -> list[Segment]:
    """The segments that overlap [start, end): a clip is cut on segment boundaries (no re-encode), so
    it starts with the segment holding `start` and ends with the one holding the instant before
    `end`. A pause (from, until; until None: still paused) cuts the same way: the segments wholly
    inside it are left out. Segments without a PROGRAM-DATE-TIME cannot be placed and are left out."""
    chosen = []
    for index, segment in enumerate(segments):
        begins, ends = segment.program_date_time, segment.end_time
        if begins is None or ends is None:
            continue
        following = segments[index + 1] if index + 1 < len(segments) else None
        if (following is not None and following.program_date_time is not None and not following.discontinuity
                and following.sequence == segment.sequence + 1 and begins < following.program_date_time < ends):
            # ffmpeg rounds each PROGRAM-DATE-TIME to the millisecond, and EXTINF is rounded too: the
            # next segment's own start is where this one ends, not a millisecond into the next.
            ends = following.program_date_time
        if any(since <= begins and (until is None or ends <= until) for since, until in paused):
            continue
        if (end is None or begins < end - CLIP_END_TOLERANCE) and (start is None or ends > start):
            chosen.append(segment)
    return chosen


def with_media(segments: Iterable[Segment]) -> list[Segment]:
    """The segments that hold media: not the gaps (EXT-X-GAP), which have no object."""
    return [segment for segment in segments if not segment.gap]


def session_starts(segments: Iterable[Segment]) -> list[tuple[int, Segment]]:
    """Each session of `segments` (the first one's, then one at each discontinuity) as (the number of its
    first segment, its first segment with media: what a probe can read)."""
    starts: list[tuple[int, Segment]] = []
    session: int | None = None
    probed = True
    for segment in segments:
        if session is None or segment.discontinuity:
            session, probed = segment.sequence, False
        if not probed and not segment.gap:
            starts.append((session, segment))
            probed = True
    return starts


def renumbered_for_clip(segments: Sequence[Segment], uris: Sequence[str]) -> list[Segment]:
    """The clip's own playlist: numbered from 0, with the new object names; a discontinuity wherever
    the source had one or the sequence numbers jump (segments missing from the source)."""
    clip: list[Segment] = []
    for index, (segment, uri) in enumerate(zip(segments, uris, strict=True)):
        jumped = index > 0 and segment.sequence != segments[index - 1].sequence + 1
        discontinuity = index > 0 and (segment.discontinuity or jumped)
        clip.append(replace(segment, sequence=index, uri=uri, discontinuity=discontinuity))
    return clip
