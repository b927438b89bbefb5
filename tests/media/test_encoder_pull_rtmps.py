"""An rtmps:// pull with real ffmpeg: it keeps the name (TLS sends it), and its TLS reaches the origin
through the pull guard's tunnel, so a name that resolves to a refused address by the time ffmpeg
connects is not reached, and a real RTMP session runs inside that tunnel (see
tests/unit/test_encoder_pullguard.py for the tunnel itself)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from localplatform.pki import LocalPKI

from onair.addresses import AddressPolicy
from onair.encoder.pullguard import PullGuard


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
    pki = LocalPKI(tmp_path / "pki")
    pki.ensure([])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.path("apiserver.crt"), pki.path("apiserver.key"))
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
    return await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-rw_timeout", "10000000", *options, "-i", url,
        "-t", "1", "-f", "null", "-", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


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
    pki = LocalPKI(tmp_path / "pki")
    pki.ensure([])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.path("apiserver.crt"), pki.path("apiserver.key"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        rtmp_port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
        "-i", "testsrc=size=320x240:rate=25", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-t", "30",
        "-f", "flv", "-listen", "1", f"rtmp://127.0.0.1:{rtmp_port}/live/source",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

    tls_front = await asyncio.start_server(front, "127.0.0.1", 0, ssl=context)
    guard = PullGuard(AddressPolicy.allowing(["127.0.0.0/8"]))
    try:
        url, options = await guard.ffmpeg_input(f"rtmps://localhost:{tls_front.sockets[0].getsockname()[1]}/live/source")
        player = await asyncio.create_subprocess_exec(
            "ffmpeg", "-hide_banner", "-nostdin", "-rw_timeout", "10000000", *options, "-i", url,
            "-frames:v", "25", "-f", "framemd5", "-", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(60):
            frames, stderr = await player.communicate()
        assert player.returncode == 0, stderr.decode(errors="replace")[-2000:]
        assert len([line for line in frames.splitlines() if not line.startswith(b"#")]) == 25
    finally:
        await guard.close()
        tls_front.close()
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        await server.wait()
