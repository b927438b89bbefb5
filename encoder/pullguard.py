"""The pull guard: every HTTP connection a pull makes (the source's playlists, its segments and keys,
each redirect; ffmpeg's and the encoder's own) goes through a small proxy in the encoder, which
connects only to addresses the installation's AddressPolicy allows. The address is checked once
resolved and then connected to, so neither a name that resolves elsewhere later (DNS rebinding) nor a
redirect to another host gets past it. A job's author thus cannot make the encoder read the cluster's
own services or the cloud's metadata endpoint.

Plain HTTP comes as an absolute-form request, forwarded as one request per connection (Connection:
close both ways, so a client never sends a second request to a host nobody checked); HTTPS comes as a
CONNECT tunnel to the checked address."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from onair.addresses import AddressPolicy, NotPublicError, literal_address

log = logging.getLogger(__name__)

HEAD_LIMIT = 64 * 1024  # a request's or a response's head; a longer one is refused
CONNECT_TIMEOUT_SECONDS = 10.0
PIPE_CHUNK = 64 * 1024
# Headers that are about the connection to the proxy or one hop, not the request.
HOP_BY_HOP = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization", b"te",
                        b"trailer", b"upgrade"})
DEFAULT_PORTS = {"http": 80, "https": 443, "rtmp": 1935, "rtmps": 443}


def pulling_environment() -> dict[str, str]:
    """The environment of an ffmpeg that pulls: the encoder's without no_proxy, for whose hosts ffmpeg
    would skip its -http_proxy (and so the guard)."""
    return {name: value for name, value in os.environ.items() if name.lower() != "no_proxy"}


class PullGuard:
    """The proxy (start() it before a pull) and the check of a URL's host for pulls ffmpeg makes
    without HTTP (RTMP, SRT)."""

    def __init__(self, policy: AddressPolicy, on_refusal: Callable[[str], None] | None = None) -> None:
        self.policy = policy
        # The last connection refused, in words for the job's status; the pipeline clears it.
        self.refusal: str | None = None
        # Told of each refusal as it happens: ffmpeg goes on after a refused segment, its session does not end.
        self.on_refusal = on_refusal
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        """Starts the proxy (once); its URL."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
        return self.proxy_url

    @property
    def proxy_url(self) -> str:
        assert self._server is not None, "start() the guard first"
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for client in list(self._clients):
                client.close()
            await self._server.wait_closed()

    async def allowed_addresses(self, host: str, port: int) -> list[str]:
        """The addresses of `host` the policy allows, resolved now. NotPublicError (and `refusal` set)
        when there are none; OSError when the name does not resolve."""
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(answer[4][0]) for answer in answers))
        allowed = [address for address in addresses if self.policy.allows(address)]
        if not allowed:
            # The addresses themselves are not named: they would tell a job's author the cluster's.
            refusal = (f"{host} {'is' if literal is not None else 'resolves to'} no public address: pulls "
                       "from loopback, private and link-local addresses are refused (the installation "
                       "allows networks of its own in encoder.pullAllowedNetworks)")
            if refusal != self.refusal:
                log.warning("a pull was refused: %s", refusal)
            self.refusal = refusal
            if self.on_refusal is not None:
                self.on_refusal(refusal)
            raise NotPublicError(refusal)
        return allowed

    async def refusal_of(self, url: str) -> str | None:
        """Why a pull of `url` that ffmpeg makes itself (RTMP, SRT: no proxy) would be refused, or None.
        A name that does not resolve is ffmpeg's to report."""
        parts = urlsplit(url)
        try:
            await self.allowed_addresses(parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme, 0))
        except NotPublicError as refused:
            return str(refused)
        except (OSError, UnicodeError, ValueError):
            return None
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            await self._proxy(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # a client or an upstream that went away, or a head too long to be a pull's
        except ValueError:  # a port that is no number
            await _answer(writer, 400, "Bad Request")
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, _, header_block = head[:-4].partition(b"\r\n")
        method, target, version = [*request_line.decode("latin-1").split(" "), "", "", ""][:3]
        tunnel = method == "CONNECT"
        if tunnel:
            host, _, port_text = target.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            port = int(port_text) if port_text.isdigit() else 0
        else:  # only plain HTTP comes to a proxy as a request: HTTPS comes as a tunnel
            parts = urlsplit(target)
            host = parts.hostname or "" if parts.scheme == "http" else ""
            port = parts.port or 80
            target = parts.path or "/"
            if parts.query:
                target += f"?{parts.query}"
        if not host or not 0 < port < 65536 or not version.startswith("HTTP/"):
            await _answer(writer, 400, "Bad Request")
            return
        try:
            upstream_reader, upstream_writer = await self._connect(host, port)
        except NotPublicError:
            await _answer(writer, 403, "Forbidden")
            return
        except (OSError, UnicodeError, TimeoutError):
            await _answer(writer, 502, "Bad Gateway")
            return
        try:
            if tunnel:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream_writer.write(f"{method} {target} {version}\r\n".encode("latin-1") +
                                      _one_request_headers(header_block) + b"\r\n")
                response_head = await upstream_reader.readuntil(b"\r\n\r\n")
                status_line, _, response_headers = response_head[:-4].partition(b"\r\n")
                writer.write(status_line + b"\r\n" + _one_request_headers(response_headers) + b"\r\n")
            await _relay(reader, writer, upstream_reader, upstream_writer)
        finally:
            upstream_writer.close()

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        error: OSError = OSError(f"no address for {host}")
        for address in await self.allowed_addresses(host, port):
            try:
                return await asyncio.wait_for(asyncio.open_connection(address, port, limit=HEAD_LIMIT),
                                              CONNECT_TIMEOUT_SECONDS)
            except OSError as failed:
                error = failed
        raise error


def _one_request_headers(block: bytes) -> bytes:
    """The header lines of a request or response without its hop-by-hop ones, and Connection: close."""
    lines = [line for line in block.split(b"\r\n")
             if line and line.partition(b":")[0].strip().lower() not in HOP_BY_HOP]
    return b"".join(line + b"\r\n" for line in [*lines, b"Connection: close"])


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                 upstream_reader: asyncio.StreamReader, upstream_writer: asyncio.StreamWriter) -> None:
    """Bytes both ways until either side closes (one request per connection: its answer is done then)."""
    directions = {asyncio.create_task(_pipe(client_reader, upstream_writer)),
                  asyncio.create_task(_pipe(upstream_reader, client_writer))}
    try:
        await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for direction in directions:
            direction.cancel()
        await asyncio.gather(*directions, return_exceptions=True)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await source.read(PIPE_CHUNK):
            sink.write(chunk)
            await sink.drain()
