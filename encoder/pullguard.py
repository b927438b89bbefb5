"""The pull guard: every HTTP request of a pull (the source's playlists, its segments and keys, each
redirect; ffmpeg's, the preview's and the encoder's own) goes through a small proxy in the encoder,
which connects only to addresses the installation's AddressPolicy allows. The address is checked once
resolved and then connected to, so neither a name that resolves elsewhere later (DNS rebinding) nor a
redirect to another host gets past it. A job's author thus cannot make the encoder reach the cluster's
own services or the cloud's metadata endpoint.

ffmpeg speaks plain HTTP only, and only to the guard (`-http_proxy`, `-protocol_whitelist
http,tcp,crypto`): it never opens TLS or a tunnel of its own, which a playlist could otherwise point at
any address (ffmpeg's `httpproxy:` protocol connects wherever its URL says); and it reads HLS only
(`-f hls`, `-format_whitelist`): a format such as concat opens the URLs it names without the proxy. An
https:// URL reaches ffmpeg as `http://<guard>/~https/<host>/<path>` (guarded_url), which the guard
fetches over TLS, verifying the origin's certificate; playlists are rewritten on the way (their https://
and root-relative URIs, and a redirect's Location, take that form), so a source's segments on an HTTPS
CDN come through the guard too. One request per connection (Connection: close both ways): a client
never sends a second request to a host nobody checked.

RTMP and SRT pulls, which ffmpeg connects to itself, are given the address the guard checked in place
of their name (ffmpeg_input). An rtmps:// pull keeps its name (TLS sends it and checks the certificate
against it): ffmpeg's TLS asks the guard for a tunnel (CONNECT) to the job's own rtmps origin, which the
guard opens to an address it checked as it opens it.

Where the encoder's environment names an outbound proxy (http_proxy, https_proxy, and no_proxy for the
hosts it is not for: a cluster whose Pods reach the Internet through one), the guard connects through it:
a CONNECT tunnel to the address it checked (the proxy resolves no name of a job's, so none resolves
elsewhere for it), TLS to the origin inside it for https://. The proxy's own address is the
installation's, not checked."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import socket
import ssl
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

from onair.addresses import AddressPolicy, NotPublicError, allowed_addresses_now, literal_address, pull_refusal
from onair.urls import DEFAULT_PORTS, url_host

from .ffmpeg import PULL_READ_TIMEOUT_US

log = logging.getLogger(__name__)

HTTPS_PATH_PREFIX = "/~https/"  # the guard fetches what follows over TLS: <host>[:port]/<path>
FFMPEG_PROTOCOLS = "http,tcp,crypto"  # plain HTTP to the guard (tcp under it), AES-128 segments (crypto)
# An HTTP pull is HLS (the CRDs say so), its segments MPEG-TS, fMP4 or packed audio: no format that opens
# URLs of its own (concat, a playlist of another kind), which would not go through the guard.
FFMPEG_FORMATS = "hls,mpegts,mov,aac,mp3,ac3,eac3,webvtt"
HEAD_LIMIT = 64 * 1024  # a request's or an answer's head; a longer one is refused
PLAYLIST_LIMIT = 16 * 1024 * 1024  # a playlist is read whole to be rewritten
CONNECT_TIMEOUT_SECONDS = 10.0
# A request's head from a client, an answer's head from an origin: as long as ffmpeg waits (-rw_timeout).
READ_TIMEOUT_SECONDS = PULL_READ_TIMEOUT_US / 1_000_000
IDLE_TIMEOUT_SECONDS = 30.0  # a body that stops coming
PIPE_CHUNK = 64 * 1024
# Headers about one hop, not the request: not passed on (nor those a Connection header names). No
# Accept-Encoding either: a playlist is rewritten, so it comes uncompressed.
HOP_BY_HOP = frozenset({"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "trailer",
                        "upgrade", "transfer-encoding", "accept-encoding"})
RTMPS_DEFAULT_PORT = 443  # as ffmpeg's rtmps has it
_URI_ATTRIBUTE = re.compile(r'(URI=")([^"]*)(")', re.IGNORECASE)


class BadRequest(Exception):
    """A request no pull makes."""


def pulling_environment() -> dict[str, str]:
    """The environment of an ffmpeg that pulls: the encoder's without no_proxy, for whose hosts ffmpeg
    would skip its -http_proxy (and so the guard)."""
    return {name: value for name, value in os.environ.items() if name.lower() != "no_proxy"}


def guarded_url(url: str, guard_authority: str) -> str:
    """An https:// URL as the guard fetches it for a plain-HTTP client; any other URL as it is."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        return url
    userinfo, _, authority = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@{guard_authority}" if userinfo else guard_authority
    return urlunsplit(("http", netloc, f"{HTTPS_PATH_PREFIX}{authority}{parts.path or '/'}", parts.query,
                       parts.fragment))


def unguarded_url(url: str, guard_authority: str) -> str:
    """The URL guarded_url made this one from (for messages)."""
    prefix = f"http://{guard_authority}{HTTPS_PATH_PREFIX}"
    return f"https://{url.removeprefix(prefix)}" if url.startswith(prefix) else url


def rewrite_playlist(text: str, playlist_url: str, guard_authority: str) -> str:
    """The playlist at `playlist_url` (the origin's URL of it) with its https:// URIs (segment lines and
    URI="..." attributes) going through the guard, and its root- and scheme-relative ones made absolute
    first: a client that fetched it from the guard would resolve "/seg.ts" against the guard. Other URIs
    resolve the same from the guard's URL of the playlist, and stay as they are."""
    def rewritten(uri: str) -> str:
        if uri.startswith("/") or uri[:6].lower() == "https:":
            return guarded_url(urljoin(playlist_url, uri), guard_authority)
        return uri

    lines = []
    for line in text.split("\n"):
        end = "\r" if line.endswith("\r") else ""
        content = line.removesuffix("\r")
        if content.startswith("#"):
            if "URI=" in content.upper():
                content = _URI_ATTRIBUTE.sub(lambda found: found.group(1) + rewritten(found.group(2)) + found.group(3),
                                             content)
        elif content.strip():
            content = rewritten(content.strip())
        lines.append(content + end)
    return "\n".join(lines)


def _rewritten_playlist_body(body: bytes, values: dict[str, str], playlist_url: str, guard_authority: str) -> bytes:
    """rewrite_playlist of a body as it came (gzip or deflate included: some origins compress whatever
    was asked)."""
    encoding = values.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        body = zlib.decompressobj(wbits=47).decompress(body, PLAYLIST_LIMIT)  # 47: gzip or zlib, told apart
    elif encoding != "identity":
        raise ValueError(f"a playlist in {encoding}")
    text = rewrite_playlist(body.decode("utf-8", "surrogateescape"), playlist_url, guard_authority)
    return text.encode("utf-8", "surrogateescape")


class PullGuard:
    """The proxy (start() it before a pull) and the check of a URL's host for pulls ffmpeg makes
    without HTTP (RTMP, SRT)."""

    def __init__(self, policy: AddressPolicy, on_refusal: Callable[[str], None] | None = None) -> None:
        self.policy = policy
        # Told of each refusal as it happens: ffmpeg goes on after a refused segment, its session does not end.
        self.on_refusal = on_refusal
        self.refused_since_asked: str | None = None  # see refusal_since
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # Made by start(): only a job that pulls pays for them (a TLS context takes some 20 ms).
        self._authority = ""
        self._tls: ssl.SSLContext | None = None  # the origins' certificates are verified
        self._proxies: dict[str, SplitResult | str] = {}  # the outbound proxy by scheme, or why it is unusable
        self._no_proxy = ""
        self._bypassed: dict[str, bool] = {}  # by host: whether no_proxy says it is reached without the proxy
        # The HTTPS origins the job's own URLs give credentials for (user:password@): ffmpeg sees every
        # HTTPS origin as the guard, so it sends those credentials wherever a playlist's relative URI
        # leads ("../../~https/elsewhere/"); the guard passes them on to these origins only.
        self._credentialed_origins: set[tuple[str, int]] = set()
        # Likewise ffmpeg would send one origin's cookies to every other: each one's go back to it only.
        self._cookies = OriginCookies()
        # The rtmps:// origins (host, port) of the job's own URLs: the only ones a CONNECT may ask for.
        self._tunnel_origins: set[tuple[str, int]] = set()

    async def start(self) -> str:
        """Starts the proxy (once); its URL."""
        if self._server is None:
            self._tls = ssl.create_default_context()
            environment = urllib.request.getproxies_environment()  # by scheme; "no": the hosts it is not for
            self._no_proxy = environment.get("no", "")
            for scheme in DEFAULT_PORTS:
                if url := environment.get(scheme):
                    self._proxies[scheme] = proxy = _outbound_proxy(scheme, url)
                    if isinstance(proxy, str):
                        log.warning("%s; %s:// pulls fail until it is mended", proxy, scheme)
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
            self._authority = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.proxy_url

    @property
    def authority(self) -> str:
        assert self._authority, "start() the guard first"
        return self._authority

    @property
    def proxy_url(self) -> str:
        return f"http://{self.authority}"

    def guarded_url(self, url: str) -> str:
        return guarded_url(url, self.authority)

    def unguarded_url(self, url: str) -> str:
        return unguarded_url(url, self.authority)

    def source_url(self, url: str) -> str:
        """The URL to pull the job's own source `url` from: guarded_url, and the credentials `url` gives
        are passed on to its origin (only the job's URLs come here: a playlist's or a redirect's could
        otherwise name an origin to be given the job's credentials)."""
        parts = urlsplit(url)
        if parts.scheme.lower() == "https" and "@" in parts.netloc and parts.hostname:
            with contextlib.suppress(ValueError):  # a port that is no number: nothing is fetched from it
                self._credentialed_origins.add((parts.hostname, parts.port or DEFAULT_PORTS["https"]))
        return self.guarded_url(url)

    def http_input(self, url: str) -> tuple[str, list[str]]:
        """What ffmpeg is given to pull the HLS source at the job's http(s) `url` (the guard started): the
        URL, and the input options that keep every request of it inside the guard."""
        return self.source_url(url), ["-f", "hls", "-format_whitelist", FFMPEG_FORMATS, "-http_proxy",
                                       self.proxy_url, "-protocol_whitelist", FFMPEG_PROTOCOLS]

    async def ffmpeg_input(self, url: str) -> tuple[str, list[str]]:
        """http_input, or for RTMP and SRT (which ffmpeg connects to itself) the URL with its host
        replaced by the address checked now: ffmpeg resolving the name again could get another (DNS
        rebinding). NotPublicError: refused (and told); OSError: the name does not resolve now;
        ValueError: a port that is no number."""
        await self.start()
        parts = urlsplit(url)
        if parts.scheme.lower() in ("http", "https"):
            return self.http_input(url)
        parts.port  # noqa: B018 - it raises for a port that is no number, which ffmpeg would read its own way
        address = (await self.allowed_addresses(parts.hostname or ""))[0]
        if parts.scheme == "rtmps":
            # TLS names the host (SNI, the certificate): ffmpeg keeps the name, and its TLS reaches the
            # origin through the guard's tunnel, to an address checked as the tunnel opens.
            self._tunnel_origins.add(((parts.hostname or "").lower(), parts.port or RTMPS_DEFAULT_PORT))
            return url, ["-http_proxy", self.proxy_url]
        userinfo, _, authority = parts.netloc.rpartition("@")
        pinned = url_host(address) + (f":{parts.port}" if parts.port else "")
        pinned_url = urlunsplit((parts.scheme, f"{userinfo}@{pinned}" if userinfo else pinned, parts.path,
                                 parts.query, parts.fragment))
        if parts.scheme == "rtmp":  # the origin still sees the name it was asked by (its virtual host)
            return pinned_url, ["-rtmp_tcurl", f"rtmp://{authority}/{parts.path.lstrip('/').split('/')[0]}"]
        return pinned_url, []

    def refusal_since(self) -> str | None:
        """The last refusal since the last call (None: none)."""
        refusal, self.refused_since_asked = self.refused_since_asked, None
        return refusal

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()

    async def allowed_addresses(self, host: str) -> list[str]:
        """The addresses of `host` the policy allows, resolved now. NotPublicError (and the refusal
        told) when there are none; OSError when the name does not resolve."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, allowed_addresses_now, host, None, self.policy, pull_refusal)
        except NotPublicError as refused:
            refusal = str(refused)
            if refusal != self.refused_since_asked:
                log.warning("a pull was refused: %s", refusal)
            self.refused_since_asked = refusal
            if self.on_refusal is not None:
                self.on_refusal(refusal)
            raise

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._forward(reader, writer)
        except BadRequest:
            await _answer(writer, 400, "Bad Request")
        except NotPublicError:
            await _answer(writer, 403, "Forbidden")
        except (OSError, UnicodeError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ssl.SSLError):
            # The origin unreachable, gone, too slow, or not what it claims (its certificate); a client gone.
            await _answer(writer, 502, "Bad Gateway")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as error:
            raise BadRequest from error
        try:
            request_line, request_fields = _parsed_head(head)
        except ValueError as error:
            raise BadRequest from error
        method, target, version = [*request_line.split(" "), "", "", ""][:3]
        if method == "CONNECT" and version.startswith("HTTP/1."):
            await self._open_tunnel(target, reader, writer)
            return
        if method not in ("GET", "HEAD") or not version.startswith("HTTP/1."):
            raise BadRequest
        secure, host, port, path = self._origin_of(target)
        path_only = urlsplit(path).path.lower()
        playlist_path = path_only.endswith((".m3u8", ".m3u"))
        credentials_belong = not secure or (host, port) in self._credentialed_origins
        headers = [(name, value) for name, value in _end_to_end(request_fields)
                   if name.lower() != "host" and (credentials_belong or name.lower() != "authorization")
                   and not (name.lower() == "range" and (playlist_path or value.replace(" ", "") == "bytes=0-"))]
        scheme = "https" if secure else "http"
        headers = self._cookies.own((scheme, host, port), headers)
        authority = url_host(host)
        if port != DEFAULT_PORTS[scheme]:
            authority += f":{port}"
        origin_url = f"{scheme}://{authority}{path}"
        upstream_reader, upstream_writer = await self._connect(host, port, secure)
        try:
            upstream_writer.write("".join([f"{method} {path} HTTP/1.1\r\nHost: {authority}\r\n",
                                           *(f"{name}: {value}\r\n" for name, value in headers),
                                           "Connection: close\r\n\r\n"]).encode("latin-1"))
            answer = await asyncio.wait_for(upstream_reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_SECONDS)
            status_line, fields = _parsed_head(answer)
            kept = [(name, self.guarded_url(urljoin(origin_url, value)) if name.lower() == "location"
                     else self._cookies.for_ffmpeg((scheme, host, port), value) if name.lower() == "set-cookie"
                     else value)
                    for name, value in _end_to_end(fields)]
            values = {name.lower(): value for name, value in fields}
            status = status_line.split(" ", 2)[1] if status_line.count(" ") else ""
            chunked = "chunked" in values.get("transfer-encoding", "").lower()
            whole_body = method == "GET" and status in ("200", "206")
            first = b""  # the body's first bytes as they came, read to tell a playlist by them
            start = b""  # the data among them (a chunked body's first chunk, or as much of it as was read)
            chunk_left = 0  # that chunk's data not read yet
            playlist = whole_body and (playlist_path or "mpegurl" in values.get("content-type", "").lower())
            if whole_body and not playlist:
                # A playlist served as anything (S3's binary/octet-stream): told by how it begins.
                if chunked:
                    first, start, chunk_left = await _first_chunk(upstream_reader)
                else:
                    first = start = await asyncio.wait_for(upstream_reader.read(PIPE_CHUNK), IDLE_TIMEOUT_SECONDS)
                playlist = start.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#EXTM3U")
            if playlist:
                if chunked and first:
                    body = start + await _rest_of_chunked(upstream_reader, values, chunk_left, len(start))
                else:
                    body = first + await _read_body(upstream_reader, values, already=len(first))
                body = await asyncio.to_thread(_rewritten_playlist_body, body, values, origin_url, self.authority)
                kept = [(name, value) for name, value in kept
                        if name.lower() not in ("content-length", "content-range", "content-encoding")]
                status_line = "HTTP/1.1 200 OK"  # whole, also when a range of it was asked for
                writer.write(_head(status_line, [*kept, ("Content-Length", str(len(body)))]) + body)
            else:
                if chunked:
                    kept.append(("Transfer-Encoding", "chunked"))  # passed on as it comes
                writer.write(_head(status_line, kept) + first)
            # The answer has begun: whatever fails now ends it early (Connection: close), with no 502 after it.
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await _drained(writer)
                if not playlist:
                    await _pipe(upstream_reader, writer)
        finally:
            upstream_writer.close()

    async def _open_tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A CONNECT from ffmpeg's TLS (an rtmps:// pull): a tunnel to the job's own rtmps origin only, at
        an address the policy allows, resolved now; open until either side closes it."""
        host, _, port = target.rpartition(":")
        host = host.removeprefix("[").removesuffix("]").lower()
        if not port.isdigit() or (host, int(port)) not in self._tunnel_origins:
            raise BadRequest
        # TLS inside: through the outbound proxy for https, or the one for http where only that is named.
        proxy_scheme = "https" if "https" in self._proxies else "http"
        upstream_reader, upstream_writer = await self._connect(host, int(port), secure=False, proxy_scheme=proxy_scheme)
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await _drained(writer)
                # The player's side may be quiet for long (RTMP acknowledges every few megabytes): only the
                # stream's side has to keep moving. Either side closing ends the tunnel.
                pipes = [asyncio.create_task(_pipe(upstream_reader, writer)),
                         asyncio.create_task(_pipe(reader, upstream_writer, idle_timeout=None))]
                try:
                    await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for pipe in pipes:
                        pipe.cancel()
                    await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            upstream_writer.close()

    def _origin_of(self, target: str) -> tuple[bool, str, int, str]:
        """(over TLS, host, port, origin-form path) of what a request asks for: an http:// URL (through
        the proxy), or the guard's own /~https/ path (as a URL naming the guard, or as a path)."""
        parts = urlsplit(target)
        if target.startswith("/"):
            path = target
        elif parts.scheme == "http" and parts.netloc == self.authority:
            path = _origin_form(parts)
        elif parts.scheme == "http" and parts.hostname:
            return False, parts.hostname, _port(parts, DEFAULT_PORTS["http"]), _origin_form(parts)
        else:
            raise BadRequest
        if not path.startswith(HTTPS_PATH_PREFIX):
            raise BadRequest
        origin = urlsplit("https://" + path.removeprefix(HTTPS_PATH_PREFIX))
        if not origin.hostname:
            raise BadRequest
        return True, origin.hostname, _port(origin, DEFAULT_PORTS["https"]), _origin_form(origin)

    def _proxy_for(self, scheme: str, host: str) -> SplitResult | None:
        """The outbound proxy the environment names for `scheme` and `host`, if any."""
        proxy = self._proxies.get(scheme)
        if proxy is None:
            return None
        if (bypassed := self._bypassed.get(host)) is None:
            if len(self._bypassed) >= 1024:  # a playlist naming ever more hosts must not grow it
                self._bypassed.clear()
            bypassed = self._bypassed[host] = bypasses_proxy(host, self._no_proxy)
        if bypassed:
            return None
        if isinstance(proxy, str):
            raise OSError(proxy)
        return proxy

    async def _connect(self, host: str, port: int, secure: bool,
                       proxy_scheme: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to an address of `host` the policy allows: directly, or through a tunnel the outbound
        proxy (the environment's for `proxy_scheme`, by default https or http as `secure`) opens to that
        address (the proxy resolves nothing of a job's: no name it alone knows, none that resolves
        elsewhere for it); with TLS to the origin (its name verified) when `secure`."""
        error: OSError = OSError(f"no address for {host}")
        addresses = await self.allowed_addresses(host)
        proxy = self._proxy_for(proxy_scheme or ("https" if secure else "http"), host)
        assert self._tls is not None, "start() the guard first"
        tls: dict[str, Any] = {"ssl": self._tls, "server_hostname": host} if secure else {}
        for address in addresses:
            tunnel = None
            try:
                if proxy is None:
                    opening = asyncio.open_connection(address, port, limit=HEAD_LIMIT, **tls)
                else:
                    tunnel = await self._tunnel(proxy, address, port)
                    opening = asyncio.open_connection(sock=tunnel, limit=HEAD_LIMIT, **tls)
                return await asyncio.wait_for(opening, CONNECT_TIMEOUT_SECONDS)
            except BaseException as failed:
                if tunnel is not None:
                    tunnel.close()
                if isinstance(failed, ssl.SSLError) or not isinstance(failed, OSError):
                    raise  # the origin's certificate: another address of it would not do better
                error = failed
        raise error

    async def _tunnel(self, proxy: SplitResult, address: str, port: int) -> socket.socket:
        """A socket through which `proxy` (the installation's: its own address is not checked) connects to
        `address`, CONNECT answered. Its answer is read a byte at a time, so that nothing past it (the
        origin's, or what the proxy would slip in before TLS begins) is taken for it."""
        assert proxy.hostname is not None
        loop = asyncio.get_running_loop()
        family, kind, protocol, _, proxy_address = (await loop.getaddrinfo(
            proxy.hostname, proxy.port or DEFAULT_PORTS["http"], type=socket.SOCK_STREAM))[0]
        tunnel = socket.socket(family, kind, protocol)
        try:
            tunnel.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(tunnel, proxy_address), CONNECT_TIMEOUT_SECONDS)
            target = f"{url_host(address)}:{port}"
            await loop.sock_sendall(tunnel, "".join([
                f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n",
                *(f"{name}: {value}\r\n" for name, value in _proxy_authorization(proxy)), "\r\n"]).encode("latin-1"))
            head = await asyncio.wait_for(_answer_head(loop, tunnel), READ_TIMEOUT_SECONDS)
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            if status_line.split(" ", 2)[1:2] != ["200"]:
                raise OSError(f"the outbound proxy refused a tunnel to {target}: {status_line}")
        except BaseException:
            tunnel.close()
            raise
        return tunnel


Origin = tuple[str, str, int]  # scheme, host, port


class OriginCookies:
    """Each origin's cookies, kept apart in ffmpeg's one cookie jar. ffmpeg keeps a pull's cookies by name
    alone and sends them all to every URL (given as for_ffmpeg makes them), so ffmpeg is given each
    origin's cookies with their names prefixed by a tag of that origin, and the guard passes on to an
    origin only the cookies with its tag, without it. Tags are keyed hashes (this guard's own key): an
    origin can neither set nor name a cookie of another's. Nothing is remembered, so nothing is forgotten
    either."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(16)

    def tag(self, origin: Origin) -> str:
        scheme, host, port = origin
        return hmac.new(self._key, f"{scheme}://{host}:{port}".encode(), "sha256").hexdigest()[:16] + "."

    def for_ffmpeg(self, origin: Origin, set_cookie: str) -> str:
        """The origin's Set-Cookie as ffmpeg is to keep it: its name tagged; no Domain, and an empty Path.
        ffmpeg sends a cookie back only when it has a Path that begins what it asks for, and a Domain (if
        any) that ends the host it asks; through a proxy (the guard) it asks for a whole URL (http://...),
        which no Path (/...) begins, and for an https:// origin names the guard's host."""
        pair, *attributes = set_cookie.split(";")
        kept = [attribute for attribute in attributes
                if attribute.split("=", 1)[0].strip().lower() not in ("domain", "path")]
        return ";".join([self.tag(origin) + pair.strip(), *kept, " Path="])

    def own(self, origin: Origin, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """`headers` with only this origin's cookies left in their Cookie fields, untagged."""
        tag = self.tag(origin)
        kept: list[tuple[str, str]] = []
        for name, value in headers:
            if name.lower() == "cookie":
                value = "; ".join(pair.removeprefix(tag) for part in value.split(";")
                                  if (pair := part.strip()).startswith(tag))
                if not value:
                    continue
            kept.append((name, value))
        return kept


def _outbound_proxy(scheme: str, url: str) -> SplitResult | str:
    """The proxy URL an environment gives for `scheme`, parsed, or why the guard cannot use it."""
    proxy = urlsplit(url if "://" in url else f"http://{url}")
    try:
        proxy.port  # noqa: B018 - it raises for a port that is no number
    except ValueError as error:
        return f"{scheme}_proxy: {error}"
    if proxy.scheme != "http" or not proxy.hostname:
        return f"{scheme}_proxy: only an http:// proxy is supported, not {url}"
    return proxy


def bypasses_proxy(host: str, no_proxy: str) -> bool:
    """Whether no_proxy (comma-separated: `*`, host names and their domains, `.domain`, addresses and CIDR
    networks, any with a port, which is not told apart) says `host` is reached without the proxy, as curl
    reads it (`example.com` and `.example.com` alike cover the domain and its hosts)."""
    host = host.lower().rstrip(".")
    literal = literal_address(host)
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if entry == "*":
            return True
        if entry.startswith("["):  # [v6] or [v6]:port
            entry = entry[1:].split("]", 1)[0]
        elif entry.count(":") == 1:  # name:port or v4:port
            entry = entry.split(":", 1)[0]
        if not entry:
            continue
        if literal is not None:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(literal) in ipaddress.ip_network(entry, strict=False):
                    return True
            continue
        domain = entry.lstrip("*").lstrip(".").rstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


async def _answer_head(loop: asyncio.AbstractEventLoop, connection: socket.socket) -> bytes:
    """An answer's head, read a byte at a time from a non-blocking socket: nothing after it is read."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        byte = await loop.sock_recv(connection, 1)
        if not byte:
            raise OSError("the outbound proxy closed the connection")
        head += byte
        if len(head) > HEAD_LIMIT:
            raise OSError("the outbound proxy's answer has too long a head")
    return bytes(head)


def _proxy_authorization(proxy: SplitResult) -> list[tuple[str, str]]:
    """The Proxy-Authorization field for a proxy URL's user:password, if it has one."""
    if proxy.username is None:
        return []
    credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
    return [("Proxy-Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())]


def _origin_form(parts: SplitResult) -> str:
    """A URL's path and query, as a request to its origin names them."""
    return urlunsplit(("", "", parts.path or "/", parts.query, ""))


def _port(parts: SplitResult, default: int) -> int:
    try:
        return parts.port or default
    except ValueError as error:  # no number, or out of range
        raise BadRequest from error


def _parsed_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """A head (ending in its blank line) as its first line and its fields. ValueError: a bare LF, which
    ffmpeg takes for a line's end, so that a field after it would pass the guard unread (a Location, a
    Set-Cookie); or a bare CR, which HTTP lets a recipient refuse, and no origin that means well sends."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    if any("\n" in line or "\r" in line for line in lines):
        raise ValueError("a bare CR or LF in a head")
    fields = [(name.strip(), value.strip()) for name, colon, value in (line.partition(":") for line in lines[1:])
              if colon and name.strip()]
    return lines[0], fields


def _end_to_end(fields: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """`fields` without the hop-by-hop ones: HOP_BY_HOP and those a Connection field names."""
    dropped = HOP_BY_HOP | {token.strip().lower() for name, value in fields if name.lower() == "connection"
                            for token in value.split(",")}
    return [(name, value) for name, value in fields if name.lower() not in dropped]


def _head(status_line: str, fields: Sequence[tuple[str, str]]) -> bytes:
    lines = [status_line, *(f"{name}: {value}" for name, value in fields), "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


async def _first_chunk(reader: asyncio.StreamReader) -> tuple[bytes, bytes, int]:
    """The first chunk of a chunked body, as far as PIPE_CHUNK of its data: the bytes read (size line
    included), the data among them, and how many of its data bytes are left unread."""
    size_line, size = await _chunk_size(reader)
    data = await asyncio.wait_for(reader.readexactly(min(size, PIPE_CHUNK)), IDLE_TIMEOUT_SECONDS)
    return size_line + data, data, size - len(data)


async def _chunk_size(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """A chunk's size line as read (extensions and all), and the size it gives. ValueError: a size that
    is not hexadecimal digits alone (Python's int() would also take a sign, 0x and underscores)."""
    size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), IDLE_TIMEOUT_SECONDS)
    size = size_line.split(b";")[0].strip(b" \t\r\n")
    if not _CHUNK_SIZE.fullmatch(size):
        raise ValueError("a chunk size that is not hexadecimal")
    return size_line, int(size, 16)


async def _chunk_data(reader: asyncio.StreamReader, size: int) -> bytes:
    """The next `size` bytes of a chunk's data, and the CRLF that ends the chunk (not returned).
    ValueError: the chunk does not end there."""
    data = await asyncio.wait_for(reader.readexactly(size + 2), IDLE_TIMEOUT_SECONDS)
    if data[-2:] != b"\r\n":
        raise ValueError("a chunk longer than its size")
    return data[:-2]


async def _rest_of_chunked(reader: asyncio.StreamReader, values: dict[str, str], chunk_left: int,
                           already: int) -> bytes:
    """The data of a chunked body after _first_chunk's: the rest of its first chunk, then the chunks
    after it (`already`: the data bytes _first_chunk read)."""
    if already + chunk_left > PLAYLIST_LIMIT:
        raise ValueError("a playlist longer than the guard reads")
    rest = await _chunk_data(reader, chunk_left)
    return rest + await _read_body(reader, values, already=already + chunk_left)


async def _read_body(reader: asyncio.StreamReader, values: dict[str, str], already: int = 0) -> bytes:
    """A body as its head frames it (chunked, Content-Length, or until the connection closes), at most
    PLAYLIST_LIMIT bytes (`values`: the head's fields by lower-case name; `already`: how many of its first
    bytes were read: they count towards the limit, and a body that is not chunked continues after them)."""
    if "chunked" in values.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            _, size = await _chunk_size(reader)
            if size == 0:
                while await asyncio.wait_for(reader.readuntil(b"\r\n"), IDLE_TIMEOUT_SECONDS) != b"\r\n":
                    pass  # trailer fields
                return bytes(body)
            if already + len(body) + size > PLAYLIST_LIMIT:
                raise ValueError("a playlist longer than the guard reads")
            body += await _chunk_data(reader, size)
    if "content-length" in values:
        length = int(values["content-length"])
        if not already <= length <= PLAYLIST_LIMIT:
            raise ValueError("a playlist longer than the guard reads")
        return await asyncio.wait_for(reader.readexactly(length - already), IDLE_TIMEOUT_SECONDS)
    body = bytearray()
    while chunk := await asyncio.wait_for(reader.read(PIPE_CHUNK), IDLE_TIMEOUT_SECONDS):
        body += chunk
        if already + len(body) > PLAYLIST_LIMIT:
            raise ValueError("a playlist longer than the guard reads")
    return bytes(body)


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    with contextlib.suppress(OSError):
        writer.write(_head(f"HTTP/1.1 {status} {reason}", [("Content-Length", "0")]))
        await writer.drain()


async def _drained(writer: asyncio.StreamWriter) -> None:
    """What was written, gone to a client that reads (TimeoutError: one that stopped reading)."""
    await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT_SECONDS)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                idle_timeout: float | None = IDLE_TIMEOUT_SECONDS) -> None:
    """The rest of an answer, until the origin closes (Connection: close), or nothing moves for
    `idle_timeout` either way."""
    while chunk := await asyncio.wait_for(source.read(PIPE_CHUNK), idle_timeout):
        sink.write(chunk)
        await _drained(sink)
