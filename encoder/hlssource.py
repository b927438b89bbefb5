"""An HLS source's playlist as a pull reads it between sessions: whether it ended (EXT-X-ENDLIST), and
its newest segment.

ffmpeg exits 0 both when an HLS source ended and when a stream it pulled closed. A stream may come
back before the end of the recording's range, so it is pulled again; an ended playlist pulled again
is read from its first segment, which would record it twice, and a frozen one (its origin died) from
its newest segment, which would encode that segment again at each pull."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp

from .playlist import parse_media_playlist

ENDLIST = "#EXT-X-ENDLIST"
STREAM_INF = "#EXT-X-STREAM-INF"
EXTINF = "#EXTINF"
# A source's playlist larger than this is not read (not known what the source is doing), rather than
# held whole in memory: a day's EVENT playlist of 1-s segments with dates is about 8 MB.
MAX_PLAYLIST_BYTES = 16 * 1024 * 1024
# A longer playlist is parsed from its header and its last segments: the pull needs no more, and the
# encoder's loop is not held up parsing a day of segments each time it looks.
TAIL_CHARS = 64 * 1024
MEDIA_SEQUENCE = re.compile(r"^#EXT-X-MEDIA-SEQUENCE:(\d+)[ \t]*$", re.MULTILINE)


def is_hls_url(url: str) -> bool:
    """A pulled http(s) URL is an HLS playlist (rtmp://, srt:// are streams)."""
    return url.lower().startswith(("http://", "https://"))


def first_variant(text: str) -> str | None:
    """The URI of a master playlist's first variant; None for a media playlist."""
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines):
        if line.startswith(STREAM_INF):
            return next((uri for uri in lines[index + 1:] if uri and not uri.startswith("#")), None)
    return None


@dataclass(frozen=True)
class HlsSource:
    """What a pull needs to know of its source's media playlist, read now."""

    ended: bool  # EXT-X-ENDLIST, or the playlist is gone (404, 410)
    target_duration: float = 0.0
    newest_segment: tuple[int, str] | None = None  # sequence number and URI of its last segment

    @classmethod
    def from_media_playlist(cls, text: str) -> HlsSource | None:
        """None for a body that is not a media playlist (not known what the source is doing)."""
        if ENDLIST in text:
            return cls(ended=True)
        try:
            playlist = parse_media_playlist(header_and_tail(text))
        except ValueError:
            return None
        newest = playlist.segments[-1] if playlist.segments else None
        return cls(ended=False, target_duration=float(playlist.target_duration or 0),
                   newest_segment=(newest.sequence, newest.uri) if newest else None)


def header_and_tail(text: str) -> str:
    """A media playlist longer than twice TAIL_CHARS as its header and its last segments, its media
    sequence moved on past the segments left out: the same last segment, numbered the same."""
    first = text.find(EXTINF)
    cut = text.rfind("\n" + EXTINF, first, len(text) - TAIL_CHARS) if len(text) > 2 * TAIL_CHARS else -1
    if first < 0 or cut <= first:
        return text
    header = text[:first]
    left_out = text.count(EXTINF, first, cut + 1)
    found = MEDIA_SEQUENCE.search(header)
    sequence = (int(found.group(1)) if found else 0) + left_out
    header = MEDIA_SEQUENCE.sub(f"#EXT-X-MEDIA-SEQUENCE:{sequence}", header) if found else \
        f"{header.rstrip()}\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n"
    return header + text[cut + 1:]


async def _body(response: aiohttp.ClientResponse) -> str | None:
    """The playlist's text, or None when it is larger than MAX_PLAYLIST_BYTES."""
    if (response.content_length or 0) > MAX_PLAYLIST_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > MAX_PLAYLIST_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks).decode()  # RFC 8216 4.1: UTF-8


async def read_hls_source(url: str, timeout: float = 5.0) -> HlsSource | None:
    """The media playlist at `url` (a master's first variant), or None when it cannot be read now (an
    error status, no answer: not known either way)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            for _ in range(2):  # a master, then its variant
                async with session.get(url) as response:
                    if response.status in (404, 410):
                        return HlsSource(ended=True)  # origins take an event's playlist down once it is over
                    text = await _body(response) if response.status == 200 else None
                    if text is None:
                        return None
                variant = first_variant(text)
                if variant is None:
                    return HlsSource.from_media_playlist(text)
                url = urljoin(url, variant)
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        return None
    return None  # a master whose first variant is a master again
