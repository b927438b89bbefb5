"""URLs as messages show them, and compared by where they lead."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# A URL in free text (a program's messages): its scheme, its user:password@ up to the last @ of its
# authority, the rest up to its query, and its query, but not a colon that ends the URL ("<url>: <error>").
_URL_IN_TEXT = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?:[^/\s'\"]*@)?(?P<rest>[^\s?'\"]*)"
                          r"(?:\?(?:[^\s'\":]|:(?!\s))*)?", re.IGNORECASE)


def url_host(host: str) -> str:
    """A host name or address as a URL's authority writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def shown_url(url: str) -> str:
    """A URL as a status message, an Event, a webhook or a log may show it: no user:password, no query
    (either may hold credentials: an origin's, or a webhook receiver's token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def without_url_credentials(text: str) -> str:
    """`text` with every URL in it shown as shown_url shows one."""
    return _URL_IN_TEXT.sub(r"\g<scheme>\g<rest>", text)


DEFAULT_PORTS = {"http": 80, "https": 443}


def plain_origin(url: str) -> tuple[str, str, int | None] | None:
    """The scheme, host (lower case, without the final dot) and port (the default one filled in) a URL
    leads to, or None where Python's parser and urllib3's (which the S3 client connects with) read it
    differently (a backslash, which urllib3 takes for "/"; user information) or the port is no number."""
    from urllib3.util import parse_url

    parts = urlsplit(url.strip())
    try:
        port = parts.port
        theirs = parse_url(url.strip())
    except ValueError:  # urllib3's LocationParseError is one
        return None
    scheme = parts.scheme.lower()
    origin = scheme, (parts.hostname or "").rstrip("."), port if port is not None else DEFAULT_PORTS.get(scheme)
    their_port = theirs.port if theirs.port is not None else DEFAULT_PORTS.get(theirs.scheme or "")
    their_host = (theirs.host or "").lower().strip("[]").rstrip(".")
    if (theirs.scheme or "", their_host, their_port) != origin or theirs.auth is not None or "@" in parts.netloc:
        return None
    return origin


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs lead to the same server: scheme, host (in any case, with or without the final
    dot) and port (a default one written or not), as plain_origin reads them."""
    mine = plain_origin(url)
    return mine is not None and mine == plain_origin(other)
