"""onair.http1 against real sockets: a loopback server that answers as each test scripts it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from onair.http1 import Http1Pool, ResponseFramingError

Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Server:
    """Reads requests (head and Content-Length body) and lets `answer` reply; `answer` returns False
    to close the connection afterwards."""

    answer: Answer
    port: int = 0
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # set when a client ends a connection

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed.set()
                    return
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(request, reader, writer):
                    return
        finally:
            self.open_now -= 1
            writer.close()

    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Server:
        server = Server(answer)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        server.port = listening.sockets[0].getsockname()[1]
        servers.append(listening)
        return server

    yield start
    for listening in servers:
        listening.close()


def reply(status: int, body: bytes, *extra: str) -> bytes:
    fields = "".join(f"{line}\r\n" for line in extra)
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{fields}\r\n".encode() + body


async def echo_path(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    target = request.split(b" ")[1]
    writer.write(reply(200, b"you asked for " + target))
    return True


async def test_requests_share_one_kept_alive_connection(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    server = await serve(echo_path)
    pool = Http1Pool(server.origin())
    for i in range(5):
        assert await pool.request("GET", f"/items/{i}?watch=0") == (200, f"you asked for /items/{i}?watch=0".encode())
    assert server.connections == 1
    await pool.close()


async def test_a_post_sends_its_body_with_its_length_and_headers(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    server = await serve(echo_path)
    pool = Http1Pool(server.origin())
    await pool.request("POST", "/jobs", {"Content-Type": "application/json"}, b'{"a": 1}')
    await pool.request("POST", "/empty")
    first, second = server.requests
    assert first.startswith(b"POST /jobs HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first
    assert b"Content-Type: application/json\r\n" in first
    assert first.endswith(b"Content-Length: 8\r\n\r\n" + b'{"a": 1}')
    assert second.endswith(b"Content-Length: 0\r\n\r\n")  # a POST without a body still says so
    await pool.close()


async def test_chunked_interim_and_close_delimited_answers(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        path = request.split(b" ")[1]
        if path == b"/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
            return True
        if path == b"/interim":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(201, b"made"))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        return False

    server = await serve(answer)
    pool = Http1Pool(server.origin())
    assert await pool.request("GET", "/chunked") == (200, b"hello, world")
    assert await pool.request("POST", "/interim", body=b"x") == (201, b"made")
    assert server.connections == 1  # both kept the connection
    assert await pool.request("GET", "/close") == (200, b"until the end")
    assert await pool.request("GET", "/chunked") == (200, b"hello, world")
    assert server.connections == 2  # the close-delimited answer was not followed by a reuse
    await pool.close()


async def test_a_connection_unused_for_too_long_is_closed_not_reused(
        serve: Callable[[Answer], Awaitable[Server]]) -> None:
    now = [100.0]
    server = await serve(echo_path)
    pool = Http1Pool(server.origin(), idle_seconds=15, clock=lambda: now[0])
    await pool.request("GET", "/one")
    now[0] += 14
    await pool.request("GET", "/two")
    assert server.connections == 1
    now[0] += 16
    await pool.request("GET", "/three")
    assert server.connections == 2
    await asyncio.wait_for(server.closed.wait(), 5)  # the client closed the old one
    await pool.close()


@pytest.mark.parametrize("seen_before_reuse", [True, False], ids=["closed-before", "closed-while-writing"])
async def test_a_connection_the_server_closed_while_idle_is_replaced(
        serve: Callable[[Answer], Awaitable[Server]], seen_before_reuse: bool) -> None:
    server = await serve(echo_path)
    pool = Http1Pool(server.origin())
    assert (await pool.request("GET", "/one"))[0] == 200
    for writer in server.writers:  # the server's idle timeout
        writer.close()
    if seen_before_reuse:
        await asyncio.sleep(0.01)  # the client reads the end-of-file before it picks the connection
    # else the request is written to the closing connection and meets its end instead of an answer
    assert await pool.request("POST", "/two", body=b"once") == (200, b"you asked for /two")
    assert server.connections == 2
    assert [r.split(b" ")[1] for r in server.requests] == [b"/one", b"/two"]  # the POST reached it once
    await pool.close()


async def test_a_new_connection_dropped_before_an_answer_is_an_oserror_and_not_retried(
        serve: Callable[[Answer], Awaitable[Server]]) -> None:
    async def hang_up(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return False

    server = await serve(hang_up)
    pool = Http1Pool(server.origin())
    with pytest.raises(ResponseFramingError) as caught:
        await pool.request("POST", "/jobs", body=b"{}")
    assert isinstance(caught.value, OSError)  # what the callers catch for a connection failure
    assert len(server.requests) == 1
    await pool.close()


async def test_an_answer_cut_short_fails_and_its_connection_is_not_reused(
        serve: Callable[[Answer], Awaitable[Server]]) -> None:
    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if request.split(b" ")[1] == b"/short":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
            await writer.drain()
            return False
        return await echo_path(request, reader, writer)

    server = await serve(answer)
    pool = Http1Pool(server.origin())
    with pytest.raises(ResponseFramingError, match="cut short"):
        await pool.request("GET", "/short")
    assert await pool.request("GET", "/next") == (200, b"you asked for /next")
    assert server.connections == 2
    await pool.close()


async def test_what_is_not_http_is_an_oserror(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n" if b"/ssh" in request
                     else b"HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n")
        return True

    server = await serve(answer)
    pool = Http1Pool(server.origin())
    with pytest.raises(ResponseFramingError, match="not an HTTP/1"):
        await pool.request("GET", "/ssh")
    with pytest.raises(ResponseFramingError, match="cannot read"):
        await pool.request("GET", "/length")
    await pool.close()


async def test_a_timeout_closes_the_connection_it_waited_on(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if request.split(b" ")[1] == b"/slow":
            await asyncio.Event().wait()  # never answers; the client gives up
        return await echo_path(request, reader, writer)

    server = await serve(answer)
    pool = Http1Pool(server.origin())
    with pytest.raises(TimeoutError):
        await pool.request("GET", "/slow", timeout=0.05)
    # A late answer to /slow must never be read as the answer to the next request.
    assert await pool.request("GET", "/fast") == (200, b"you asked for /fast")
    assert server.connections == 2
    await pool.close()


async def test_at_most_the_given_connections_are_open(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    release, two_waiting = asyncio.Event(), asyncio.Event()
    waiting = 0

    async def answer(request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        nonlocal waiting
        waiting += 1
        if waiting == 2:
            two_waiting.set()
        await release.wait()
        return await echo_path(request, reader, writer)

    server = await serve(answer)
    pool = Http1Pool(server.origin(), connections=2)
    calls = [asyncio.create_task(pool.request("GET", f"/{i}")) for i in range(6)]
    await asyncio.wait_for(two_waiting.wait(), 5)
    release.set()
    answers = await asyncio.gather(*calls)
    assert sorted(answers) == sorted((200, f"you asked for /{i}".encode()) for i in range(6))
    assert server.most_open == 2
    await pool.close()


def test_an_origin_must_be_http_or_https() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Http1Pool("ftp://example.com")
