"""An rtmps:// pull with real ffmpeg: it keeps the name (TLS sends it), and its TLS reaches the origin
through the pull guard's tunnel, so a name that resolves to a refused address by the time ffmpeg
connects is not reached, and a real RTMP session runs inside that tunnel (see
tests/unit/test_encoder_pullguard.py for the tunnel itself)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from localplatform.pki import LocalPKI
from media_helpers import GOES_LIVE_WITHIN_S, EncoderProcess, ObjectStore, free_port, pattern_input
from waiting import wait_until

from onair.addresses import AddressPolicy
from onair.encoder.ffmpeg import input_args
from onair.encoder.playlist import parse_media_playlist
from onair.encoder.pullguard import PullGuard


def server_context(directory: Path) -> ssl.SSLContext:
    """A TLS server's (its certificate is a test CA's: ffmpeg's rtmps does not verify it by default)."""
    pki = LocalPKI(directory / "pki")
    pki.ensure([])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.path("apiserver.crt"), pki.path("apiserver.key"))
    return context


def serving_rtmp(port: int, seconds: float) -> subprocess.Popen[bytes]:
    """ffmpeg serving a test pattern to the one RTMP player that connects (-listen 1)."""
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *pattern_input(seconds),
                             "-f", "flv", "-listen", "1", f"rtmp://127.0.0.1:{port}/live/source"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def relay(rtmp_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """rtmps in front of the rtmp server at `rtmp_port`: TLS ends here, the bytes go on."""
    async with asyncio.timeout(30):  # ffmpeg listens a moment after it starts
        while True:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", rtmp_port)
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


def tls_front(context: ssl.SSLContext, rtmp_port: int) -> contextlib.AbstractContextManager[int]:
    """relay, served from a thread (for a test that waits on an encoder process); its port."""
    return serving(partial(relay, rtmp_port), context)


@contextlib.contextmanager
def serving(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
            context: ssl.SSLContext | None = None) -> Iterator[int]:
    """A server on 127.0.0.1 (TLS with `context`) run by a thread of its own; its port."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handler, "127.0.0.1", 0, ssl=context))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        server.close()
        loop.run_until_complete(_cancel_the_others())
        loop.close()


async def _cancel_the_others() -> None:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@dataclass
class TlsOrigin:
    """A TLS server (an rtmps origin's front) that records the name each client asked for (SNI) and the
    first byte sent inside TLS (RTMP's C0, 3)."""

    port: int = 0
    names: list[str | None] = field(default_factory=list)
    first_bytes: list[bytes] = field(default_factory=list)
    reached: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def tls_origin(tmp_path: Path) -> AsyncIterator[TlsOrigin]:
    context = server_context(tmp_path)
    origin = TlsOrigin()
    context.sni_callback = lambda _socket, name, _context: origin.names.append(name)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        origin.first_bytes.append(await reader.read(1))
        origin.reached.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    origin.port = server.sockets[0].getsockname()[1]
    yield origin
    server.close()
    await server.wait_closed()


async def pull(url: str, options: list[str]) -> asyncio.subprocess.Process:
    """ffmpeg reading `url` as the encoder does (input_args)."""
    return await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-rw_timeout", "10000000",
        *input_args(url, live_listener=False, guard_options=options), "-t", "1", "-f", "null", "-",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def test_ffmpeg_pulls_rtmps_through_the_guard_keeping_the_name(tls_origin: TlsOrigin) -> None:
    guard = PullGuard(AddressPolicy.allowing(["127.0.0.0/8"]))
    try:
        url, options = await guard.ffmpeg_input(f"rtmps://localhost:{tls_origin.port}/live/source")
        ffmpeg = await pull(url, options)
        async with asyncio.timeout(30):
            await tls_origin.reached.wait()
            with contextlib.suppress(ProcessLookupError):  # gone already: the origin closed at once
                ffmpeg.kill()
            await ffmpeg.wait()
        assert tls_origin.names == ["localhost"] and tls_origin.first_bytes == [b"\x03"]

        # By the time ffmpeg connects, the name resolves to no allowed address: the guard does not open
        # the tunnel, and ffmpeg has no way around it.
        guard.policy = AddressPolicy()
        ffmpeg = await pull(url, options)
        async with asyncio.timeout(30):
            _, stderr = await ffmpeg.communicate()
        assert ffmpeg.returncode != 0, stderr
        assert tls_origin.names == ["localhost"] and len(tls_origin.first_bytes) == 1
        assert (guard.refusal_since() or "").startswith("localhost resolves to no public address")
    finally:
        await guard.close()


async def test_ffmpeg_plays_an_rtmps_stream_through_the_guard(tmp_path: Path) -> None:
    """A real RTMP session inside the tunnel: ffmpeg serves a stream (rtmp, -listen 1), a TLS front
    makes it rtmps, and ffmpeg pulls it through the guard as the encoder does, decoding its frames."""
    context = server_context(tmp_path)
    rtmp_port = free_port()
    server = serving_rtmp(rtmp_port, 30)

    tls_front = await asyncio.start_server(partial(relay, rtmp_port), "127.0.0.1", 0, ssl=context)
    guard = PullGuard(AddressPolicy.allowing(["127.0.0.0/8"]))
    try:
        url, options = await guard.ffmpeg_input(f"rtmps://localhost:{tls_front.sockets[0].getsockname()[1]}/live/source")
        player = await asyncio.create_subprocess_exec(
            "ffmpeg", "-hide_banner", "-nostdin", "-rw_timeout", "10000000",
            *input_args(url, live_listener=False, guard_options=options),
            "-an", "-frames:v", "25", "-f", "framemd5", "-",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(60):
            frames, stderr = await player.communicate()
        assert player.returncode == 0, stderr.decode(errors="replace")[-2000:]
        assert len([line for line in frames.splitlines() if not line.startswith(b"#")]) == 25
    finally:
        await guard.close()
        tls_front.close()
        server.kill()
        server.wait()


def test_a_record_job_records_an_rtmps_stream_through_the_guard(
        start_encoder: Callable[..., EncoderProcess], object_store: ObjectStore, tmp_path: Path) -> None:
    rtmp_port = free_port()
    source = serving_rtmp(rtmp_port, 40)
    try:
        with tls_front(server_context(tmp_path), rtmp_port) as port:
            spec = {"source": {"streamUrl": f"rtmps://localhost:{port}/live/source"}, "output": {"bucket": "ignored"}}
            recorder = start_encoder("RecordJob", spec, None)
            recorder.wait_state("live", GOES_LIVE_WITHIN_S)
            wait_until(lambda: int(recorder.status()["renditions"][0]["segmentsWritten"]) >= 2, 30,
                       "recorded segments")
            assert recorder.post("/finish").status_code == 202
            assert recorder.process.wait(30) == 0, recorder.log()[-3000:]
    finally:
        source.kill()
        source.wait()
    # Its ffmpeg was given the guard's tunnel (and http_proxy, for a connection opened again).
    assert "-http_proxy http://127.0.0.1:" in recorder.log()
    stored = object_store.get_text(recorder.bucket, f"{recorder.prefix}/source/index.m3u8")
    playlist = parse_media_playlist(stored or "")
    assert playlist.ended and len(playlist.segments) >= 2


def _amf_string(text: str) -> bytes:
    data = text.encode()
    return b"\x02" + struct.pack(">H", len(data)) + data


def _connect_rejected_asking_for_adobe_auth() -> bytes:
    """An RTMP _error answer to connect, in one chunk stream: what an origin that wants adobe
    authentication sends, upon which ffmpeg connects again (with credentials from the URL)."""
    info = b"\x03" + b"".join(struct.pack(">H", len(key)) + key.encode() + _amf_string(value) for key, value in (
        ("level", "error"), ("code", "NetConnection.Connect.Rejected"),
        ("description", "[ AccessManager.Reject ] : [ code=403 need auth; authmod=adobe ] : "))) + b"\x00\x00\x09"
    body = _amf_string("_error") + b"\x00" + struct.pack(">d", 1.0) + b"\x05" + info
    header = bytes([3]) + b"\x00\x00\x00" + struct.pack(">I", len(body))[1:] + b"\x14" + b"\x00\x00\x00\x00"
    pieces = [body[i:i + 128] for i in range(0, len(body), 128)]
    return header + pieces[0] + b"".join(bytes([0xC3]) + piece for piece in pieces[1:])


def test_an_rtmps_connection_opened_again_for_authentication_goes_through_the_guard_too(
        start_encoder: Callable[..., EncoderProcess], tmp_path: Path) -> None:
    """ffmpeg's TLS takes -http_proxy on its first connection only; the one it opens again when the
    origin asks for authentication reads http_proxy, which the encoder sets to the guard as well: an
    outbound proxy named there (here a trap that records who asks it) is never asked by ffmpeg."""
    connects: list[bytes] = []  # each connection's connect command
    trapped: list[bytes] = []

    async def auth_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readexactly(1537)  # C0 C1
            writer.write(b"\x03" + bytes(1536) * 2)  # S0 S1 S2
            await writer.drain()
            await reader.readexactly(1536)  # C2
            connects.append(await reader.read(4096))
            writer.write(_connect_rejected_asking_for_adobe_auth())
            await writer.drain()
            await reader.read(4096)
        writer.close()

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        trapped.append(await reader.read(200))
        writer.close()

    with serving(auth_origin, server_context(tmp_path)) as origin_port, serving(trap) as trap_port:
        start_encoder("RecordJob", {"source": {"streamUrl": f"rtmps://user:pw@localhost:{origin_port}/live/source"},
                                    "output": {"bucket": "ignored"}}, None, wait_healthy=False,
                      extra_env={"http_proxy": f"http://127.0.0.1:{trap_port}", "no_proxy": "localhost,127.0.0.1"})
        # The connection opened again for authentication names the scheme the origin asked for.
        wait_until(lambda: any(b"authmod=adobe" in connect for connect in connects), 60,
                   "ffmpeg connecting again to authenticate")
    assert trapped == []
