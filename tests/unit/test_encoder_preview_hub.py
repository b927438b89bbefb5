"""The live preview's hub and WebSocket endpoint, fed by hand: what a viewer receives, when the feed
runs, and who is turned away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from onair.api_gateway.preview_relay import MAX_MESSAGE_BYTES
from onair.encoder.preview import (
    MAX_BEHIND_BYTES,
    MESSAGE_BYTES,
    TS_PACKET_BYTES,
    PreviewHub,
    TooManyViewers,
    preview_app,
)

Client = TestClient[web.Request, web.Application]
PACKET = bytes([0x47]) + bytes(187)


class RecordingFeed:
    """Stands in for the ffmpeg a feed runs: records when the hub starts and stops it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def start(self, publish: Callable[[bytes], None], restart: Callable[[], None]) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")


async def test_viewers_get_whole_packets_and_the_feed_runs_while_anybody_watches() -> None:
    feed = RecordingFeed()
    hub = PreviewHub(feed)
    first = hub.join()
    second = hub.join()
    assert feed.events == ["start"]
    hub.publish(PACKET + PACKET[:100])
    hub.publish(PACKET[100:] + PACKET)
    for viewer in (first, second):
        assert await viewer.next_chunk() == PACKET * 3, "what was queued, in one message"
    hub.leave(first)
    assert feed.events == ["start"]
    hub.leave(second)
    assert feed.events == ["start", "stop"]


async def test_a_backlog_goes_out_in_bounded_messages() -> None:
    """The gateway holds a message whole per viewer: a slow viewer's backlog must not be one message."""
    hub = PreviewHub(RecordingFeed())
    viewer = hub.join()
    chunk = PACKET * 348  # about 64 KiB, one read of the feed
    for _ in range(100):
        hub.publish(chunk)
    sizes = []
    while not viewer.queue.empty():
        sizes.append(len(await viewer.next_chunk()))
    assert sum(sizes) == 100 * len(chunk)
    assert max(sizes) <= MESSAGE_BYTES + len(chunk) <= MAX_MESSAGE_BYTES
    assert all(size % TS_PACKET_BYTES == 0 for size in sizes)


async def test_a_viewer_that_falls_behind_is_let_go_and_the_rest_are_served() -> None:
    feed = RecordingFeed()
    hub = PreviewHub(feed)
    slow = hub.join()
    keeping_up = hub.join()
    chunk = PACKET * 1000
    for _ in range(MAX_BEHIND_BYTES // len(chunk)):
        hub.publish(chunk)
        assert await keeping_up.next_chunk() == chunk
    assert slow in hub.viewers, "up to the limit behind"
    hub.publish(chunk)
    assert await slow.next_chunk() == b"" and slow.queue.empty(), "told to end, its backlog dropped"
    assert hub.viewers == {keeping_up} and await keeping_up.next_chunk() == chunk
    hub.leave(keeping_up)
    assert feed.events == ["start", "stop"]


async def test_viewers_beyond_the_limit_are_turned_away() -> None:
    hub = PreviewHub(max_viewers=2)
    hub.join()
    hub.join()
    with pytest.raises(TooManyViewers):
        hub.join()


async def test_the_endpoint_streams_to_the_right_key_only(aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    hub = PreviewHub()
    client = await aiohttp_client(preview_app(hub, "the-preview-key"))
    assert (await client.get("/websocketplay/not-the-key")).status == 404
    socket: Any = await client.ws_connect("/websocketplay/the-preview-key")
    hub.publish(PACKET * 3)
    message = await socket.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.BINARY and message.data == PACKET * 3
    hub.close()  # the encoder stops
    assert (await socket.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert not hub.viewers


async def test_a_viewer_that_falls_behind_is_dropped_at_once_and_the_others_go_on(
        aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    """Its handler may be stuck sending to it (its socket full): it is dropped when the hub lets it go,
    not when the heartbeat finds it unresponsive half a minute later."""
    hub = PreviewHub(viewer_limit=1024 * 1024)
    client = await aiohttp_client(preview_app(hub, "key"))
    keeping_up: Any = await client.ws_connect("/websocketplay/key")
    stalled: Any = await client.ws_connect("/websocketplay/key")
    server = client.server.runner.server if client.server.runner is not None else None
    assert server is not None and len(server.connections) == 2
    burst = PACKET * 1000  # 188 KB; the stalled viewer reads nothing
    for _ in range(200):  # 37.6 MB: more than the sockets' buffers and the viewer's limit together
        hub.publish(burst)
        received = 0
        while received < len(burst):
            message = await keeping_up.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            received += len(message.data)
    assert len(hub.viewers) == 1
    deadline = asyncio.get_running_loop().time() + 5
    while len(server.connections) > 1:
        assert asyncio.get_running_loop().time() < deadline, "the stalled viewer's connection is still open"
        await asyncio.sleep(0.01)
    hub.publish(PACKET)
    assert (await keeping_up.receive(timeout=5)).data == PACKET
    await stalled.close()
    await keeping_up.close()


async def test_a_full_house_is_answered_503(aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    hub = PreviewHub(max_viewers=1)
    client = await aiohttp_client(preview_app(hub, "key"))
    first: Any = await client.ws_connect("/websocketplay/key")
    response = await client.get("/websocketplay/key")
    assert response.status == 503 and response.headers["Retry-After"]
    await first.close()
