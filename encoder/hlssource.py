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
# A playlist longer than TAIL_BYTES is kept as its first HEAD_BYTES (its header) and its last TAIL_BYTES
# (its last segments): the pull needs no more (has it ended, its newest segment), and a day's EVENT
# playlist, or a hostile origin's endless one, costs neither memory nor the encoder's loop.
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 128 * 1024
MEDIA_SEQUENCE = re.compile(r"^#EXT-X-MEDIA-SEQUENCE:[ \t]*(\d+)[ \t]*\r?$", re.MULTILINE)


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
            playlist = parse_media_playlist(text)
        except ValueError:
            return None
        newest = playlist.segments[-1] if playlist.segments else None
        return cls(ended=False, target_duration=float(playlist.target_duration or 0),
                   newest_segment=(newest.sequence, newest.uri) if newest else None)


class PlaylistReader:
    """A playlist read chunk by chunk into bounded memory: all of it when it is short, else its first
    HEAD_BYTES, its last TAIL_BYTES and how many segments it has."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.size = 0
        self.segments = 0
        self._carry = b""  # the end of the last chunk: a tag cut in two is counted once

    def feed(self, chunk: bytes) -> None:
        joined = self._carry + chunk
        self.segments += joined.count(EXTINF.encode())
        self._carry = joined[-(len(EXTINF) - 1):]
        self.size += len(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        self.tail += chunk
        del self.tail[:-TAIL_BYTES]

    def text(self) -> str:
        """The playlist, or, when it was long, its header and its last segments with its media sequence
        moved on past the segments left out: the same last segment, numbered the same."""
        if self.size <= TAIL_BYTES:
            return self.tail.decode()  # RFC 8216 4.1: UTF-8
        head = self.head.decode(errors="replace")
        tail = self.tail.decode(errors="replace")
        first, cut = head.find(EXTINF), tail.find("\n" + EXTINF)
        if first < 0 or cut < 0:
            return ""  # not a media playlist: read as such
        kept = tail[cut + 1:]
        if ENDLIST in kept:
            return ENDLIST
        header = head[:first]
        found = MEDIA_SEQUENCE.search(header)
        if found is None and "#EXT-X-MEDIA-SEQUENCE" in header:
            return ""  # a tag that cannot be read: not a playlist to number from
        sequence = (int(found.group(1)) if found else 0) + self.segments - kept.count(EXTINF)
        header = MEDIA_SEQUENCE.sub(f"#EXT-X-MEDIA-SEQUENCE:{sequence}", header) if found else \
            f"{header.rstrip()}\n#EXT-X-MEDIA-SEQUENCE:{sequence}\n"
        return header + kept


async def _bounded_playlist_text(response: aiohttp.ClientResponse) -> str:
    reader = PlaylistReader()
    async for chunk in response.content.iter_chunked(HEAD_BYTES):
        reader.feed(chunk)
    return reader.text()


async def read_hls_source(url: str, timeout: float = 5.0, proxy: str | None = None) -> HlsSource | None:
    """The media playlist at `url` (a master's first variant), or None when it cannot be read now (an
    error status, no answer: not known either way). `proxy`: the pull guard's."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            for _ in range(2):  # a master, then its variant
                async with session.get(url, proxy=proxy) as response:
                    if response.status in (404, 410):
                        return HlsSource(ended=True)  # origins take an event's playlist down once it is over
                    if response.status != 200:
                        return None
                    text = await _bounded_playlist_text(response)
                variant = first_variant(text)
                if variant is None:
                    return HlsSource.from_media_playlist(text)
                url = urljoin(url, variant)
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        return None
    return None  # a master whose first variant is a master again
