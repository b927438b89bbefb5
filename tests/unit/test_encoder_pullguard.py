"""The pull guard: a job's pulls reach the public Internet and the networks the installation allows,
never the cluster's own services or the cloud's metadata endpoint, also through a redirect or a name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from localplatform.processes import free_port

from onair.addresses import AddressPolicy
from onair.encoder.config import ConfigError, load_job_config
from onair.encoder.ffmpeg import input_args
from onair.encoder.hlssource import HlsSource, read_hls_source
from onair.encoder.pullguard import PullGuard, pulling_environment

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
    assert guard.refusal is None


async def test_a_refused_address_is_never_connected_to_and_the_refusal_says_why(
        origins: tuple[Origin, Origin], guard: PullGuard) -> None:
    _, refused = origins
    async with aiohttp.ClientSession() as session, \
            session.get(f"{refused.base}/live.m3u8", proxy=guard.proxy_url) as response:
        assert response.status == 403
    assert refused.requests == []
    assert guard.refusal is not None and guard.refusal.startswith(f"{REFUSED_HOST} is no public address")
    assert "encoder.pullAllowedNetworks" in guard.refusal


async def test_a_redirect_to_a_refused_address_is_refused(origins: tuple[Origin, Origin], guard: PullGuard) -> None:
    allowed, refused = origins
    assert await read_hls_source(f"{allowed.base}/moved.m3u8", proxy=guard.proxy_url) is None
    assert [path for path, _ in allowed.requests] == ["/moved.m3u8"]
    assert refused.requests == [] and guard.refusal is not None


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
    assert guard.refusal is not None and guard.refusal.startswith("localhost resolves to no public address")


async def test_an_https_tunnel_goes_to_an_allowed_address_only(guard: PullGuard) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    servers = [await asyncio.start_server(echo, host, 0) for host in (ALLOWED_HOST, REFUSED_HOST)]
    answers = []
    try:
        for server in servers:
            host, port = server.sockets[0].getsockname()[:2]
            reader, writer = await asyncio.open_connection(*guard.proxy_url.removeprefix("http://").split(":"))
            writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            answer = await reader.readuntil(b"\r\n\r\n")
            if answer.startswith(b"HTTP/1.1 200"):
                writer.write(b"hello through the tunnel")
                answer += await reader.read()
            writer.close()
            answers.append(answer)
    finally:
        for server in servers:
            server.close()
    assert answers[0] == b"HTTP/1.1 200 Connection established\r\n\r\nhello through the tunnel"
    assert answers[1].startswith(b"HTTP/1.1 403")


async def test_requests_that_are_no_pull_are_answered_400(guard: PullGuard) -> None:
    for request in (b"GET /local/path HTTP/1.1\r\n\r\n", b"GET ftp://example.com/x HTTP/1.1\r\n\r\n",
                    b"CONNECT example.com:http HTTP/1.1\r\n\r\n", b"GET http://example.com:99999/x HTTP/1.1\r\n\r\n",
                    b"nonsense\r\n\r\n"):
        reader, writer = await asyncio.open_connection(*guard.proxy_url.removeprefix("http://").split(":"))
        writer.write(request)
        assert (await reader.read()).startswith(b"HTTP/1.1 400"), request
        writer.close()


async def test_rtmp_and_srt_pulls_are_checked_before_ffmpeg_connects() -> None:
    guard = PullGuard(AddressPolicy.allowing(["127.0.0.0/8"]))
    assert await guard.refusal_of("rtmp://127.0.0.1/live/source") is None
    assert await guard.refusal_of("rtmp://169.254.169.254/live/source") == (
        "169.254.169.254 is no public address: pulls from loopback, private and link-local addresses are refused "
        "(the installation allows networks of its own in encoder.pullAllowedNetworks)")
    assert await guard.refusal_of("srt://10.96.0.1:9000?streamid=x") is not None
    assert await guard.refusal_of("rtmp://[::1]/live/source") is not None  # allowed was 127/8, IPv4 only
    assert (await PullGuard(AddressPolicy()).refusal_of("rtmp://localhost/live/x") or "").startswith(
        "localhost resolves to no public address")
    assert await guard.refusal_of("rtmp://name.invalid/live/source") is None  # ffmpeg says it does not resolve


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
])
def test_a_job_that_pulls_from_a_private_address_fails_naming_the_field(kind: str, url: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: .* is no public address"):
        load_job_config(_job_environment(kind, url))


def test_networks_the_installation_allows_may_be_pulled_from_and_names_are_checked_when_pulled() -> None:
    allowed = load_job_config(_job_environment("LiveJob", "http://10.20.0.5/live.m3u8", ["10.20.0.0/16"]))
    assert allowed.pull_policy.allows("10.20.0.5") and not allowed.pull_policy.allows("10.21.0.5")
    assert load_job_config(_job_environment("RecordJob", "rtmp://origin.internal/live/x")).ingest.url


def test_ffmpeg_pulls_over_http_through_the_guard_and_ignores_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    pulled = input_args("https://origin.example/live.m3u8", live_listener=False, http_proxy="http://127.0.0.1:1")
    assert pulled[pulled.index("-http_proxy") + 1] == "http://127.0.0.1:1" and pulled[-1].startswith("https://")
    assert "-http_proxy" not in input_args("rtmp://origin/live/x", live_listener=False, http_proxy="http://127.0.0.1:1")
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "origin.example")
    environment = pulling_environment()
    assert "no_proxy" not in environment and "NO_PROXY" not in environment and environment["PATH"]
