"""URLs as messages show them."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def shown_url(url: str) -> str:
    """A URL as a status message, an Event, a webhook or a log may show it: no user:password, no query
    (either may hold credentials: an origin's, or a webhook receiver's token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
