"""The pull guard: a job's pulls reach the public Internet and the networks the installation allows,
never the cluster's own services or the cloud's metadata endpoint, also through a redirect or a name."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from localplatform.pki import LocalPKI
from localplatform.processes import free_port

from onair.addresses import AddressPolicy, NotPublicError
from onair.encoder import pullguard
from onair.encoder.config import ConfigError, load_job_config
from onair.encoder.ffmpeg import input_args
from onair.encoder.hlssource import HlsSource, read_hls_source
from onair.encoder.pullguard import PullGuard, pulling_environment, rewrite_playlist, unguarded_url

PLAYLIST = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2,\nseg_3.ts\n"
ALLOWED_HOST, REFUSED_HOST = "127.0.0.1", "127.0.0.2"  # both on this machine's loopback
ONLY_ALLOWED_HOST = AddressPolicy.allowing([f"{ALLOWED_HOST}/32"])


@dataclass
class Origin:
    """An HTTP server that records the requests it gets."""

    host: str
    port: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"


async def _serve(origin: Origin, redirect_to: Origin | None) -> web.AppRunner:
    async def handle(request: web.Request) -> web.StreamResponse:
        origin.requests.append((request.raw_path, dict(request.headers)))
        if request.path == "/moved.m3u8" and redirect_to is not None:
            raise web.HTTPFound(f"{redirect_to.base}/live.m3u8")
        return web.Response(text=PLAYLIST)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    origin.port = free_port()
    await web.TCPSite(runner, origin.host, origin.port).start()
    return runner


@pytest.fixture
async def origins() -> AsyncIterator[tuple[Origin, Origin]]:
    """An origin at an allowed address that redirects /moved.m3u8 to one at a refused address."""
    allowed, refused = Origin(ALLOWED_HOST), Origin(REFUSED_HOST)
    runners = [await _serve(refused, None), await _serve(allowed, refused)]
    yield allowed, refused
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def guard() -> AsyncIterator[PullGuard]:
    guard = PullGuard(ONLY_ALLOWED_HOST)
    await guard.start()
    yield guard
    await guard.close()


async def test_a_pull_through_the_guard_reaches_an_allowed_address_one_request_per_connection(
        origins: tuple[Origin, Origin], guard: PullGuard) -> None:
    allowed, _ = origins
    source = await read_hls_source(f"{allowed.base}/live.m3u8?token=t", proxy=guard.proxy_url)
    assert source == HlsSource(ended=False, target_duration=2.0, newest_segment=(3, "seg_3.ts"))
    path, headers = allowed.requests[-1]
    assert path == "/live.m3u8?token=t"  # origin-form, as an origin expects it
    assert headers["Connection"] == "close" and headers["Host"] == f"{ALLOWED_HOST}:{allowed.port}"
    assert guard.refusal_since() is None


async def test_a_refused_address_is_never_connected_to_and_the_refusal_says_why(
        origins: tuple[Origin, Origin], guard: PullGuard) -> None:
    _, refused = origins
    async with aiohttp.ClientSession() as session, \
            session.get(f"{refused.base}/live.m3u8", proxy=guard.proxy_url) as response:
        assert response.status == 403
    assert refused.requests == []
    refusal = guard.refusal_since()
    assert refusal is not None and refusal.startswith(f"{REFUSED_HOST} is no public address")
    assert "encoder.pullAllowedNetworks" in refusal and guard.refusal_since() is None  # told once


async def test_a_redirect_to_a_refused_address_is_refused(origins: tuple[Origin, Origin], guard: PullGuard) -> None:
    allowed, refused = origins
    assert await read_hls_source(f"{allowed.base}/moved.m3u8", proxy=guard.proxy_url) is None
    assert [path for path, _ in allowed.requests] == ["/moved.m3u8"]
    assert refused.requests == [] and guard.refusal_since() is not None


async def test_a_name_that_resolves_to_a_refused_address_is_refused(origins: tuple[Origin, Origin]) -> None:
    allowed, _ = origins
    guard = PullGuard(AddressPolicy())  # the default: public addresses only
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://localhost:{allowed.port}/live.m3u8", proxy=await guard.start()) as response:
            assert response.status == 403
    finally:
        await guard.close()
    assert allowed.requests == []
    assert (guard.refusal_since() or "").startswith("localhost resolves to no public address")


@pytest.fixture
async def tls_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Origin]:
    """An HTTPS origin at the allowed address whose certificate the guard trusts (SSL_CERT_FILE), serving a
    playlist that names its segments by https:// URL, an AES key, and a redirect to an https:// URL."""
    pki = LocalPKI(tmp_path / "pki")
    pki.ensure([])  # its server certificate names 127.0.0.1
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.path("ca.crt")))
    origin = Origin(ALLOWED_HOST)

    async def handle(request: web.Request) -> web.StreamResponse:
        origin.requests.append((request.raw_path, dict(request.headers)))
        if request.path == "/moved.m3u8":
            raise web.HTTPFound(f"https://{ALLOWED_HOST}:{origin.port}/live.m3u8")
        if request.path == "/live.m3u8":
            return web.Response(headers={"Set-Cookie": "session=abc; Domain=cdn.example; Path=/live; Secure"}, text=(
                f'#EXTM3U\r\n#EXT-X-KEY:METHOD=AES-128,URI="https://{ALLOWED_HOST}:{origin.port}/key"\r\n'
                f"#EXTINF:2,\r\nhttps://{ALLOWED_HOST}:{origin.port}/seg_1.ts\r\n#EXTINF:2,\r\nseg_2.ts\r\n"
                "#EXTINF:2,\r\nhttp://cdn.example/seg_3.ts\r\n"), content_type="application/vnd.apple.mpegurl")
        return web.Response(body=b"segment bytes", content_type="video/mp2t")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    origin.port = free_port()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.path("apiserver.crt"), pki.path("apiserver.key"))
    await web.TCPSite(runner, origin.host, origin.port, ssl_context=context).start()
    yield origin
    await runner.cleanup()


async def test_an_https_source_is_fetched_by_the_guard_over_verified_tls_and_its_playlist_kept_inside(
        tls_origin: Origin) -> None:
    guard = PullGuard(ONLY_ALLOWED_HOST)  # after SSL_CERT_FILE: it trusts the test's CA
    await guard.start()
    try:
        pulled, options = await guard.ffmpeg_input(f"https://{ALLOWED_HOST}:{tls_origin.port}/moved.m3u8?token=t")
        assert pulled == f"{guard.proxy_url}/~https/{ALLOWED_HOST}:{tls_origin.port}/moved.m3u8?token=t"
        assert options == ["-f", "hls", "-format_whitelist", "hls,mpegts,mov,aac,mp3,ac3,eac3,webvtt",
                           "-http_proxy", guard.proxy_url, "-protocol_whitelist", "http,tcp,crypto"]
        async with aiohttp.ClientSession() as session, session.get(pulled, proxy=guard.proxy_url) as response:
            assert response.status == 200 and response.url.path == f"/~https/{ALLOWED_HOST}:{tls_origin.port}/live.m3u8"
            playlist = await response.text()
        base = f"{guard.proxy_url}/~https/{ALLOWED_HOST}:{tls_origin.port}"
        assert playlist == (f'#EXTM3U\r\n#EXT-X-KEY:METHOD=AES-128,URI="{base}/key"\r\n'
                            f"#EXTINF:2,\r\n{base}/seg_1.ts\r\n#EXTINF:2,\r\nseg_2.ts\r\n"
                            "#EXTINF:2,\r\nhttp://cdn.example/seg_3.ts\r\n")
        async with aiohttp.ClientSession() as session, session.get(f"{base}/seg_1.ts") as response:
            assert await response.read() == b"segment bytes"  # asked of the guard itself, as a path
        assert [path for path, _ in tls_origin.requests] == ["/moved.m3u8?token=t", "/live.m3u8", "/seg_1.ts"]
        assert all(headers["Host"] == f"{ALLOWED_HOST}:{tls_origin.port}" for _, headers in tls_origin.requests)
    finally:
        await guard.close()


async def test_credentials_go_only_to_the_https_origin_the_job_gave_them_for(tls_origin: Origin) -> None:
    """ffmpeg sees every HTTPS origin as the guard, so it would send the job URL's user:password wherever
    a playlist's relative URI leads through the guard ("../../~https/elsewhere/"): the guard passes an
    Authorization on to the origin the job's URL names, and to no other."""
    origin = f"{ALLOWED_HOST}:{tls_origin.port}"
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}  # user:pass
    for job_url, passed_on in ((f"https://user:pass@{origin}/live.m3u8", True),  # this origin's own
                               (f"https://user:pass@{ALLOWED_HOST}:1/live.m3u8", False),  # another port's
                               (f"https://{origin}/live.m3u8", False)):  # no credentials given
        guard = PullGuard(ONLY_ALLOWED_HOST)
        await guard.start()
        try:
            guard.http_input(job_url)
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{guard.proxy_url}/~https/{origin}/seg_1.ts", headers=basic) as response:
                assert await response.read() == b"segment bytes"
        finally:
            await guard.close()
        assert ("Authorization" in tls_origin.requests[-1][1]) == passed_on, job_url


async def test_cookies_go_back_only_to_the_https_origin_that_set_them(tls_origin: Origin) -> None:
    """Every HTTPS origin is the guard to ffmpeg, which would send one origin's cookies to all: each
    reaches ffmpeg tagged with its origin, and goes back untagged to that origin only. ffmpeg, asking a
    proxy for whole URLs, would send back none with a Path: it gets each with an empty Path, no Domain."""
    origin = f"{ALLOWED_HOST}:{tls_origin.port}"
    guard = PullGuard(ONLY_ALLOWED_HOST)
    await guard.start()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            segment = f"{guard.proxy_url}/~https/{origin}/seg_1.ts"
            async with session.get(segment, headers={"Cookie": "session=abc"}) as response:
                assert response.status == 200
            assert "Cookie" not in tls_origin.requests[-1][1]  # an untagged cookie is no origin's
            async with session.get(f"{guard.proxy_url}/~https/{origin}/live.m3u8") as response:
                tagged, *attributes = response.headers["Set-Cookie"].split(";")
            assert tagged.endswith(".session=abc") and attributes == [" Secure", " Path="]
            async with session.get(segment, headers={"Cookie": f"{tagged}; other=set-elsewhere"}) as response:
                assert response.status == 200
            assert tls_origin.requests[-1][1]["Cookie"] == "session=abc"
    finally:
        await guard.close()


def test_origin_cookies_are_kept_apart_in_ffmpegs_one_jar() -> None:
    """ffmpeg keeps a pull's cookies by name and sends them all everywhere: each origin's are tagged, and
    each origin gets its own back, untagged, whatever name the others use."""
    a, b = ("https", "a.example", 443), ("https", "b.example", 443)
    cookies = pullguard.OriginCookies()
    from_a = cookies.for_ffmpeg(a, "token=1; Domain=a.example; Path=/live; Secure; HttpOnly")
    from_b = cookies.for_ffmpeg(b, "token=2; Max-Age=60")
    tagged_a, tagged_b = from_a.split(";")[0], from_b.split(";")[0]
    assert tagged_a == f"{cookies.tag(a)}token=1" and tagged_b == f"{cookies.tag(b)}token=2"
    assert cookies.tag(a) != cookies.tag(b)
    assert from_a.split(";")[1:] == [" Secure", " HttpOnly", " Path="]  # kept by ffmpeg, sent to any URL
    jar = [("Cookie", f"{tagged_a}; {tagged_b}; token=forged"), ("Accept", "*/*")]
    assert cookies.own(a, jar) == [("Cookie", "token=1"), ("Accept", "*/*")]
    assert cookies.own(b, jar) == [("Cookie", "token=2"), ("Accept", "*/*")]
    for other in (("https", "a.example", 8443), ("http", "a.example", 443)):  # another port, another scheme
        assert cookies.own(other, jar) == [("Accept", "*/*")]
    # An origin naming another's tag in its own cookie gets it tagged again: the other never sees it.
    planted = cookies.for_ffmpeg(b, f"{tagged_a.split('=')[0]}=planted").split(";")[0]
    assert cookies.own(a, [("Cookie", planted)]) == []
    assert pullguard.OriginCookies().tag(a) != cookies.tag(a), "each guard's tags are its own"


@pytest.fixture(autouse=True)
def no_outbound_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard reads the outbound proxy from the environment: none here but the tests' own."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@dataclass
class ForwardProxy:
    """An outbound HTTP proxy, as a cluster's egress one, that opens CONNECT tunnels (and sends `slipped_in`
    after its answer to one, as a proxy or a network between would that forged the origin's answer)."""

    host: str
    port: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (request line, Proxy-Authorization)
    slipped_in: bytes = b""

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}{self.host}:{self.port}"


async def _pipe_until_closed(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()


@pytest.fixture
async def forward_proxy() -> AsyncIterator[ForwardProxy]:
    proxy = ForwardProxy(REFUSED_HOST)  # at an address no pull may reach: the proxy's own is not checked

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line, _, block = head.partition("\r\n")
        fields = dict(field.split(": ", 1) for field in block.strip().split("\r\n") if ": " in field)
        proxy.requests.append((line, fields.get("Proxy-Authorization")))
        method, target, _ = line.split(" ")
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        host, port = target.rsplit(":", 1)
        origin_reader, origin_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n" + proxy.slipped_in)
        await asyncio.gather(_pipe_until_closed(reader, origin_writer), _pipe_until_closed(origin_reader, writer))

    server = await asyncio.start_server(handle, proxy.host, 0)
    proxy.port = server.sockets[0].getsockname()[1]
    yield proxy
    server.close()


async def test_pulls_go_through_the_outbound_proxy_the_environment_names_to_the_address_checked_here(
        origins: tuple[Origin, Origin], tls_origin: Origin, forward_proxy: ForwardProxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster whose Pods reach the Internet through a proxy: each request through a CONNECT tunnel to
    the address the guard checked (the proxy resolves no name of a job's), with the proxy's credentials,
    TLS to the origin inside it for https://; the proxy's own address is the installation's."""
    allowed, refused = origins
    monkeypatch.setenv("http_proxy", forward_proxy.url("egress:p%40ss@"))
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url())
    guard = PullGuard(ONLY_ALLOWED_HOST)
    await guard.start()
    try:
        # By a name (localhost: 127.0.0.1, and ::1, which the policy does not allow): the tunnel goes
        # to the address checked, the origin is asked by the name.
        source = await read_hls_source(f"http://localhost:{allowed.port}/live.m3u8", proxy=guard.proxy_url)
        assert source is not None and source.newest_segment == (3, "seg_3.ts")
        assert forward_proxy.requests[-1] == (f"CONNECT {ALLOWED_HOST}:{allowed.port} HTTP/1.1",
                                              "Basic " + base64.b64encode(b"egress:p@ss").decode())
        assert allowed.requests[-1][0] == "/live.m3u8"
        assert allowed.requests[-1][1]["Host"] == f"localhost:{allowed.port}"
        https_origin = f"{ALLOWED_HOST}:{tls_origin.port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{guard.proxy_url}/~https/{https_origin}/seg_1.ts") as response:
                assert await response.read() == b"segment bytes"
            assert forward_proxy.requests[-1] == (f"CONNECT {https_origin} HTTP/1.1", None)
            assert tls_origin.requests[-1][0] == "/seg_1.ts"
            # Refused before the proxy is asked: an address no pull may reach, a name that does not resolve here.
            asked = len(forward_proxy.requests)
            for url, status in ((f"{refused.base}/live.m3u8", 403), ("http://no-such-origin.invalid/live.m3u8", 502)):
                async with session.get(url, proxy=guard.proxy_url) as response:
                    assert response.status == status, url
            assert len(forward_proxy.requests) == asked and refused.requests == []
            # What comes after the proxy's answer, before TLS begins, is not taken for the origin's.
            forward_proxy.slipped_in = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
            async with session.get(f"{guard.proxy_url}/~https/{https_origin}/seg_1.ts") as response:
                assert response.status == 502 and await response.read() != b"forged"
    finally:
        await guard.close()

    monkeypatch.setenv("no_proxy", f"localhost,{ALLOWED_HOST}")  # the hosts reached without it
    guard = PullGuard(ONLY_ALLOWED_HOST)
    await guard.start()
    try:
        asked = len(forward_proxy.requests)
        assert await read_hls_source(f"{allowed.base}/live.m3u8", proxy=guard.proxy_url) is not None
        assert len(forward_proxy.requests) == asked
    finally:
        await guard.close()


async def test_a_proxy_the_guard_cannot_use_is_logged_and_its_pulls_fail(
        origins: tuple[Origin, Origin], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    allowed, _ = origins
    monkeypatch.setenv("http_proxy", "socks5://127.0.0.2:1080")
    guard = PullGuard(ONLY_ALLOWED_HOST)
    await guard.start()
    try:
        assert "only an http:// proxy is supported" in caplog.text
        async with aiohttp.ClientSession() as session, \
                session.get(f"{allowed.base}/live.m3u8", proxy=guard.proxy_url) as response:
            assert response.status == 502
        assert allowed.requests == []  # not around the proxy the installation asked for either
    finally:
        await guard.close()


@pytest.mark.parametrize(("host", "no_proxy", "bypasses"), [
    ("origin.media.svc.cluster.local", ".svc,.cluster.local", True),
    ("cdn.example.com", "example.com", True),
    ("example.com", "*.example.com", True),
    ("badexample.com", "example.com", False),
    ("example.com", "example.com:8443", True),
    ("10.20.1.5", "10.0.0.0/8", True),
    ("8.8.8.8", "10.0.0.0/8,localhost", False),
    ("fd00::1", "[fd00::1]:443", True),
    ("fd00::1", "fd00::/8", True),
    ("anything.example", "*", True),
    ("anything.example", "", False),
])
def test_no_proxy_is_read_as_curl_and_go_read_it(host: str, no_proxy: str, bypasses: bool) -> None:
    assert pullguard.bypasses_proxy(host, no_proxy) is bypasses


@pytest.mark.parametrize("served", ["as octet-stream", "compressed", "chunked as octet-stream"])
async def test_a_playlist_served_as_anything_or_compressed_is_still_kept_inside(guard: PullGuard,
                                                                                served: str) -> None:
    """S3 serves a playlist uploaded without a type as binary/octet-stream; some origins gzip whatever
    was asked, or stream it chunked. Either way its https:// URIs must come back through the guard."""
    playlist = b"#EXTM3U\n#EXTINF:2,\nhttps://cdn.example/s.ts\n"

    async def handle(request: web.Request) -> web.StreamResponse:
        if served == "compressed":
            return web.Response(body=gzip.compress(playlist), content_type="application/vnd.apple.mpegurl",
                                headers={"Content-Encoding": "gzip"})
        if served == "chunked as octet-stream":  # its first chunk holds only the tag
            return await _chunked(request, "binary/octet-stream", [playlist[:9], playlist[9:]])
        return web.Response(body=playlist, content_type="binary/octet-stream")

    async with _serving(handle) as port, aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(f"http://{ALLOWED_HOST}:{port}/stream", proxy=guard.proxy_url) as response:
        assert "Content-Encoding" not in response.headers
        assert await response.read() == f"#EXTM3U\n#EXTINF:2,\n{guard.proxy_url}/~https/cdn.example/s.ts\n".encode()


async def test_a_chunked_body_that_is_no_playlist_passes_through_as_it_came(guard: PullGuard) -> None:
    segment = bytes(range(256)) * 1024  # 256 KiB, in chunks larger and smaller than the guard first reads

    async def handle(request: web.Request) -> web.StreamResponse:
        return await _chunked(request, "application/octet-stream",
                              [segment[at:at + 100_000] for at in range(0, len(segment), 100_000)])

    async with _serving(handle) as port, aiohttp.ClientSession() as session, \
            session.get(f"http://{ALLOWED_HOST}:{port}/seg", proxy=guard.proxy_url) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert await response.read() == segment


@pytest.mark.parametrize(("body", "status"), [
    (b"8\r\n#EXTM3U\n\r\n0\r\n\r\n", 200), (b"+8\r\n#EXTM3U\n\r\n0\r\n\r\n", 502),
    (b"0x8\r\n#EXTM3U\n\r\n0\r\n\r\n", 502), (b"8\r\n#EXTM3U\nXX0\r\n\r\n", 502),
], ids=["framed right", "signed size", "0x size", "chunk longer than its size"])
async def test_a_chunked_playlist_framed_wrong_is_a_502(guard: PullGuard, body: bytes, status: int) -> None:
    """A chunk size Python's int() would read (a sign, 0x) but HTTP does not, or a chunk running on past
    its size: the body's framing is not what the origin meant, so nothing of it is passed on."""
    async with _raw_origin(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n"
                           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body) as port, \
            aiohttp.ClientSession() as session, \
            session.get(f"http://{ALLOWED_HOST}:{port}/live.m3u8", proxy=guard.proxy_url) as response:
        assert response.status == status
        if status == 200:
            assert await response.read() == b"#EXTM3U\n"


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nX-A: 1\nSet-Cookie: planted=1; Path=/\r\n",
                                  b"HTTP/1.1 200 OK\nLocation: http://elsewhere/\r\nX-A: 1\r\n",
                                  b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\n"],
                         ids=["LF in a field", "LF in the status line", "CR in a field"])
async def test_an_answer_with_a_bare_cr_or_lf_in_its_head_is_a_502(guard: PullGuard, head: bytes) -> None:
    """ffmpeg ends a line at a bare LF: a field hidden after one would pass the guard unread (a Set-Cookie
    untagged, a Location not rewritten). A bare CR HTTP lets a recipient refuse."""
    async with _raw_origin(head + b"Content-Length: 2\r\nConnection: close\r\n\r\nok") as port, \
            aiohttp.ClientSession() as session, \
            session.get(f"http://{ALLOWED_HOST}:{port}/seg.ts", proxy=guard.proxy_url) as response:
        assert response.status == 502


@contextlib.asynccontextmanager
async def _raw_origin(answer: bytes) -> AsyncIterator[int]:
    """An origin at the allowed address answering every request with the bytes `answer`; its port."""
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply, ALLOWED_HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _chunked(request: web.Request, content_type: str, parts: list[bytes]) -> web.StreamResponse:
    """An answer of `parts`, one chunk each (Transfer-Encoding: chunked)."""
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response


@contextlib.asynccontextmanager
async def _serving(handle: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[int]:
    """An origin at the allowed address answering every GET with `handle`; its port."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, ALLOWED_HOST, port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_an_https_origin_whose_certificate_is_not_trusted_is_not_pulled(tls_origin: Origin,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    guard = PullGuard(ONLY_ALLOWED_HOST)
    await guard.start()
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(guard.guarded_url(f"https://{ALLOWED_HOST}:{tls_origin.port}/live.m3u8")) as response:
            assert response.status == 502
    finally:
        await guard.close()
    assert tls_origin.requests == []


async def test_an_origin_that_never_answers_holds_no_connection(guard: PullGuard,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pullguard, "READ_TIMEOUT_SECONDS", 0.2)
    silent = await asyncio.start_server(lambda reader, writer: None, ALLOWED_HOST, 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://{ALLOWED_HOST}:{port}/live.m3u8", proxy=guard.proxy_url) as response:
            assert response.status == 502
        reader, writer = await asyncio.open_connection(*guard.authority.split(":"))  # says nothing at all
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
        await asyncio.sleep(0)  # the guard's connection tasks end with their answers
        assert not guard._connections
    finally:
        silent.close()


def test_a_playlists_https_and_root_relative_uris_go_through_the_guard() -> None:
    text = ('#EXTM3U\n#EXT-X-MAP:URI="HTTPS://cdn.example/init.mp4"\n#EXT-X-MEDIA:TYPE=AUDIO,URI="a/index.m3u8"\n'
            "#EXTINF:2,\nhttps://user:pw@cdn.example:8443/s.ts?sig=1\n#EXTINF:2,\n/live/seg_0.ts\n"
            "#EXTINF:2,\nhttpproxy://10.0.0.1:80/x.ts\n")
    guard = "http://127.0.0.1:1/~https"
    assert rewrite_playlist(text, "https://origin.example/live/index.m3u8", "127.0.0.1:1") == (
        f'#EXTM3U\n#EXT-X-MAP:URI="{guard}/cdn.example/init.mp4"\n'
        '#EXT-X-MEDIA:TYPE=AUDIO,URI="a/index.m3u8"\n#EXTINF:2,\n'  # resolves the same from the guard's URL
        "http://user:pw@127.0.0.1:1/~https/cdn.example:8443/s.ts?sig=1\n"
        f"#EXTINF:2,\n{guard}/origin.example/live/seg_0.ts\n#EXTINF:2,\nhttpproxy://10.0.0.1:80/x.ts\n")
    plain = "#EXTM3U\n#EXTINF:2,\nseg.ts\n#EXTINF:2,\n/seg.ts\n"
    assert rewrite_playlist(plain, "http://origin.example/live/index.m3u8", "127.0.0.1:1") == (
        "#EXTM3U\n#EXTINF:2,\nseg.ts\n#EXTINF:2,\nhttp://origin.example/seg.ts\n")
    # httpproxy: and the like are left to ffmpeg's -protocol_whitelist, which refuses them.
    assert unguarded_url("http://127.0.0.1:1/~https/cdn.example/s.ts", "127.0.0.1:1") == "https://cdn.example/s.ts"


async def test_requests_that_are_no_pull_are_answered_400(guard: PullGuard) -> None:
    for request in (b"GET /local/path HTTP/1.1\r\n\r\n", b"GET ftp://example.com/x HTTP/1.1\r\n\r\n",
                    b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n", b"GET http://example.com:99999/x HTTP/1.1\r\n\r\n",
                    b"POST http://127.0.0.1/x HTTP/1.1\r\n\r\n", b"GET /~https/ HTTP/1.1\r\n\r\n",
                    b"nonsense\r\n\r\n", b"GET http://127.0.0.1/x HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n"):
        reader, writer = await asyncio.open_connection(*guard.authority.split(":"))
        writer.write(request)
        assert (await reader.read()).startswith(b"HTTP/1.1 400"), request
        writer.close()


async def ask_for_tunnel(guard: PullGuard, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """What ffmpeg's TLS sends the guard for an rtmps pull; the connection and the guard's answer."""
    reader, writer = await asyncio.open_connection(*guard.authority.split(":"))
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    return reader, writer, await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


@contextlib.asynccontextmanager
async def echo_origin() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server at the allowed address answering what it gets in capitals; its port and what it got."""
    received: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            received.append(data)
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, ALLOWED_HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


async def test_an_rtmps_tunnel_goes_through_the_outbound_proxy_for_https_or_else_for_http(
        forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", forward_proxy.url("egress:p%40ss@"))
    async with echo_origin() as (port, _received):
        for https_proxy, authorization in ((None, "Basic " + base64.b64encode(b"egress:p@ss").decode()),
                                           (forward_proxy.url(), None)):
            if https_proxy:
                monkeypatch.setenv("HTTPS_PROXY", https_proxy)
            guard = PullGuard(ONLY_ALLOWED_HOST)
            try:
                await guard.ffmpeg_input(f"rtmps://{ALLOWED_HOST}:{port}/live/source")
                reader, writer, head = await ask_for_tunnel(guard, f"{ALLOWED_HOST}:{port}")
                assert head.startswith(b"HTTP/1.1 200 "), head
                writer.write(b"through the proxy")
                assert await asyncio.wait_for(reader.readexactly(17), 5) == b"THROUGH THE PROXY"
                writer.close()
                assert forward_proxy.requests[-1] == (f"CONNECT {ALLOWED_HOST}:{port} HTTP/1.1", authorization)
            finally:
                await guard.close()


async def test_an_rtmps_pull_tunnels_through_the_guard_to_an_address_checked_as_it_opens() -> None:
    """TLS sends the name, so ffmpeg keeps it; its TLS asks the guard for a tunnel (-http_proxy), which
    goes to the job's own rtmps origin only, at an address allowed when the tunnel opens (a name that
    resolves elsewhere by then is not connected to)."""
    async with echo_origin() as (port, accepted):
        guard = PullGuard(AddressPolicy.allowing(["127.0.0.0/8"]))
        try:
            url = f"rtmps://LocalHost:{port}/live/source"
            assert await guard.ffmpeg_input(url) == (url, ["-http_proxy", guard.proxy_url])
            assert input_args(url, live_listener=False, guard_options=(await guard.ffmpeg_input(url))[1])[-4:] == [
                "-http_proxy", guard.proxy_url, "-i", url]

            reader, writer, head = await ask_for_tunnel(guard, f"localhost:{port}")
            assert head.startswith(b"HTTP/1.1 200 "), head
            writer.write(b"client hello")
            assert await asyncio.wait_for(reader.readexactly(12), 5) == b"CLIENT HELLO"
            writer.close()
            # Another origin, or the same one by another spelling or port, was not the job's: no tunnel.
            for target in (f"127.0.0.1:{port}", f"localhost:{port + 1}", "localhost:443", f"localhost:{port}x"):
                head = (await ask_for_tunnel(guard, target))[2]
                assert head.startswith(b"HTTP/1.1 400 "), (target, head)
            # The name now resolves to no allowed address (as after a DNS change): refused as the tunnel opens.
            guard.policy = AddressPolicy()
            head = (await ask_for_tunnel(guard, f"localhost:{port}"))[2]
            assert head.startswith(b"HTTP/1.1 403 "), head
            assert accepted == [b"client hello"]
        finally:
            await guard.close()


async def test_rtmp_and_srt_pulls_get_the_address_the_guard_checked() -> None:
    """ffmpeg connects to those itself: given the checked address, it cannot resolve the name to another."""
    guard = PullGuard(AddressPolicy.allowing(["127.0.0.0/8"]))
    try:
        assert await guard.ffmpeg_input("rtmp://user:pw@localhost/live/source") == (
            "rtmp://user:pw@127.0.0.1/live/source", ["-rtmp_tcurl", "rtmp://localhost/live"])
        # As the encoder's ffmpeg reads it (its options before the input).
        pinned, options = await guard.ffmpeg_input("rtmp://localhost/live/source")
        pulled = input_args(pinned, live_listener=False, guard_options=options)
        assert pulled[-4:] == ["-rtmp_tcurl", "rtmp://localhost/live", "-i", "rtmp://127.0.0.1/live/source"]
        assert await guard.ffmpeg_input("srt://localhost:9000?streamid=x") == ("srt://127.0.0.1:9000?streamid=x", [])
        for refused in ("rtmp://169.254.169.254/live/source", "srt://10.96.0.1:9000?streamid=x",
                        "rtmp://[::1]/live/source"):  # allowed was 127/8, IPv4 only
            with pytest.raises(NotPublicError, match="is no public address"):
                await guard.ffmpeg_input(refused)
        with pytest.raises(NotPublicError, match=r"^localhost resolves to no public address"):
            await PullGuard(AddressPolicy()).ffmpeg_input("rtmp://localhost/live/x")
        with pytest.raises(OSError):  # not allowed either: tried again
            await guard.ffmpeg_input("rtmp://name.invalid/live/source")
        with pytest.raises(ValueError):  # ffmpeg would read this port as 40447 (atoi)
            await guard.ffmpeg_input("rtmp://localhost:40447x/live/x")
    finally:
        await guard.close()


def _job_environment(kind: str, url: str, allowed: list[str] | None = None) -> dict[str, str]:
    spec = ({"jobTemplateId": 1, "input": {"serverType": "HLS", "url": url}, "destination": {"bucket": "media"}}
            if kind == "LiveJob" else {"source": {"streamUrl": url}, "output": {"bucket": "media"}})
    job = {"kind": kind, "namespace": "ns", "name": "job", "spec": spec, "template": None,
           "storage": {"endpoint": "http://s3:8333", "bucket": "media"},
           **({"pullAllowedNetworks": allowed} if allowed is not None else {})}
    return {"ONAIR_JOB_CONFIG": json.dumps(job)}


@pytest.mark.parametrize(("kind", "url", "field"), [
    ("LiveJob", "http://169.254.169.254/latest/meta-data.m3u8", "spec.input.url"),
    ("LiveJob", "https://[::ffff:10.0.0.1]/live.m3u8", "spec.input.url"),
    ("LiveJob", "http://2130706433:8080/live.m3u8", "spec.input.url"),  # 127.0.0.1, as inet_aton reads it
    ("RecordJob", "rtmp://10.96.0.1/live/x", "spec.source.streamUrl"),
    ("RecordJob", "rtmp://origin.example:1935x/live/x", "spec.source.streamUrl"),  # ffmpeg: atoi, 1935
])
def test_a_job_that_pulls_from_a_private_address_fails_naming_the_field(kind: str, url: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: (.* is no public address|Port could not be cast)"):
        load_job_config(_job_environment(kind, url))


def test_networks_the_installation_allows_may_be_pulled_from_and_names_are_checked_when_pulled() -> None:
    allowed = load_job_config(_job_environment("LiveJob", "http://10.20.0.5/live.m3u8", ["10.20.0.0/16"]))
    assert allowed.pull_policy.allows("10.20.0.5") and not allowed.pull_policy.allows("10.21.0.5")
    assert load_job_config(_job_environment("RecordJob", "rtmp://origin.internal/live/x")).ingest.url


async def test_ffmpeg_pulls_over_plain_http_through_the_guard_and_ignores_no_proxy(
        guard: PullGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    url, options = await guard.ffmpeg_input("https://origin.example/live.m3u8")
    pulled = input_args(url, live_listener=False, guard_options=options)
    assert pulled[pulled.index("-http_proxy") + 1] == guard.proxy_url
    assert pulled[pulled.index("-protocol_whitelist") + 1] == "http,tcp,crypto"  # no TLS, no tunnel of its own
    assert pulled[-1] == f"{guard.proxy_url}/~https/origin.example/live.m3u8"
    assert pulled[pulled.index("-f") + 1] == "hls"  # nothing else: concat, say, opens URLs of its own
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "origin.example")
    environment = pulling_environment()
    assert "no_proxy" not in environment and "NO_PROXY" not in environment and environment["PATH"]
