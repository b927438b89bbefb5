"""An HLS source's end: whether the playlist a recorder pulls has ended (EXT-X-ENDLIST).

ffmpeg exits 0 both when an HLS source ended and when a stream it pulled closed. A stream may come
back before the end of the recording's range, so it is pulled again; an ended playlist pulled again
is read from its first segment, which would record it twice."""

from __future__ import annotations

from urllib.parse import urljoin

import aiohttp

ENDLIST = "#EXT-X-ENDLIST"
STREAM_INF = "#EXT-X-STREAM-INF"


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


async def hls_source_ended(url: str, timeout: float = 5.0) -> bool | None:
    """Whether the media playlist at `url` (a master's first variant) has ended: True (EXT-X-ENDLIST,
    or the playlist is gone: 404, 410), False (it is live), or None when it cannot be read now (an
    error status, no answer: not known either way)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            for _ in range(2):  # a master, then its variant
                async with session.get(url) as response:
                    if response.status in (404, 410):
                        return True  # origins take an event's playlist down once it is over
                    if response.status != 200:
                        return None
                    text = await response.text()
                if ENDLIST in text:
                    return True
                variant = first_variant(text)
                if variant is None:
                    return False
                url = urljoin(url, variant)
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        return None
    return False
