"""Watching a LiveJob's live preview as a console's player does: a WebSocket of MPEG-TS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp

TS_PACKET_BYTES = 188
TS_SYNC_BYTE = 0x47


async def _receive_together(url: str, viewers: int, want_bytes: int, timeout: float,
                            while_watching: Callable[[], None] | None) -> list[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(http.ws_connect(url)) for _ in range(viewers)]

        async def watch(socket: aiohttp.ClientWebSocketResponse) -> bytes:
            received = bytearray()
            while len(received) < want_bytes:
                message = await asyncio.wait_for(socket.receive(), max(0.1, deadline - loop.time()))
                assert message.type == aiohttp.WSMsgType.BINARY, f"the preview ended: {message}"
                received += message.data
            return bytes(received)

        watched = await asyncio.gather(*(watch(socket) for socket in sockets))
        if while_watching is not None:
            await asyncio.to_thread(while_watching)
    return watched


def receive_preview_together(url: str, viewers: int, want_bytes: int, timeout: float = 30,
                             while_watching: Callable[[], None] | None = None) -> list[bytes]:
    """receive_preview for `viewers` viewers watching at once (all connected before any reads)."""
    watched = asyncio.run(_receive_together(url, viewers, want_bytes, timeout, while_watching))
    for data in watched:
        assert data[0] == TS_SYNC_BYTE and len(data) % TS_PACKET_BYTES == 0, "whole MPEG-TS packets from the first"
    return watched


def receive_preview(url: str, want_bytes: int, timeout: float = 30,
                    while_watching: Callable[[], None] | None = None) -> bytes:
    """The bytes a viewer of `url` receives until it has `want_bytes`; `while_watching` runs before it
    leaves. Fails on a deadline, or when the preview ends first."""
    return receive_preview_together(url, 1, want_bytes, timeout, while_watching)[0]
