"""The gateway relays a LiveJob's live preview from the encoder's own preview server (onair.encoder.preview,
on a loopback port as an encoder Pod's address) to a viewer, by the job's preview key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from onair.api_gateway import preview_relay
from onair.api_gateway.app import RELAY_KEY, init_app
from onair.api_gateway.cache import Store
from onair.api_gateway.config import GatewayConfig
from onair.encoder.preview import PreviewHub, preview_app
from onair.streamkeys import derive_preview_key

SEED = "unit-test-stream-key-seed-0123456789abcdef"
NS, JOB, UID, POD = "proj-a", "studio", "uid-studio", "studio-encoder-1a2b3c4d"
KEY = derive_preview_key(SEED, NS, JOB, UID)  # what the operator gives the encoder and puts in the URL
Client = TestClient[web.Request, web.Application]
# A WebSocket handshake's request, sent as a plain GET so that a refusal's status and body can be read.
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def packets(count: int, marker: int) -> bytes:
    """Whole MPEG-TS packets (sync byte 0x47), each marked so a test can tell which arrived."""
    return (bytes([0x47, marker]) + bytes(186)) * count


@dataclass
class Encoder:
    """The encoder's preview server and hub, as in an encoder Pod listening on 127.0.0.1."""

    hub: PreviewHub
    server: TestServer
    port: int


@pytest.fixture
async def encoder() -> AsyncIterator[Encoder]:
    hub = PreviewHub(max_viewers=2)
    server = TestServer(preview_app(hub, KEY), host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    yield Encoder(hub, server, server.port)
    await server.close()


def store_with_job(pod_ip: str | None) -> Store:
    store = Store("onair-system", SEED)
    store.livejobs.upsert({"apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
                           "metadata": {"name": JOB, "namespace": NS, "uid": UID, "resourceVersion": "5"},
                           "spec": {}, "status": {"phase": "Live", "resourceName": POD}})
    pod: dict[str, Any] = {"metadata": {"name": POD, "namespace": NS, "resourceVersion": "6"},
                           "status": {"phase": "Running"}}
    if pod_ip:
        pod["status"]["podIP"] = pod_ip
    store.pods.upsert(pod)
    return store


@pytest.fixture
def gateway(aiohttp_client: Callable[..., Awaitable[Client]],
            encoder: Encoder) -> Callable[..., Awaitable[Client]]:
    async def start(pod_ip: str | None = "127.0.0.1", max_viewers: int = 100) -> Client:
        config = GatewayConfig(stream_key_seed=SEED, watch=False, preview_port=encoder.port,
                               preview_max_viewers=max_viewers)
        return await aiohttp_client(init_app(config, store=store_with_job(pod_ip)))
    return start


async def receive(viewer: aiohttp.ClientWebSocketResponse, size: int) -> bytes:
    """The next `size` bytes of binary messages."""
    received = b""
    while len(received) < size:
        message = await asyncio.wait_for(viewer.receive(), 5)
        assert message.type == aiohttp.WSMsgType.BINARY, message
        received += message.data
    return received


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_viewer_of_the_gateway_gets_the_encoders_preview_until_the_encoder_ends_it(
        gateway: Callable[..., Awaitable[Client]], encoder: Encoder) -> None:
    client = await gateway()
    async with client.ws_connect(f"/websocketplay/{KEY}") as viewer:
        await wait_for(lambda: len(encoder.hub.viewers) == 1, "the relay joined the encoder's viewers")
        metrics = await (await client.get("/metrics")).text()
        assert "onair_gateway_preview_viewers 1.0" in metrics
        sent = packets(50, 1) + packets(50, 2)
        encoder.hub.publish(sent)
        received = b""
        while len(received) < len(sent):
            message = await asyncio.wait_for(viewer.receive(), 5)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            received += message.data
        assert received == sent
        encoder.hub.close()  # the encoder stops
        message = await asyncio.wait_for(viewer.receive(), 5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message


async def test_a_viewer_leaving_leaves_the_encoder_too(gateway: Callable[..., Awaitable[Client]],
                                                       encoder: Encoder) -> None:
    client = await gateway()
    async with client.ws_connect(f"/websocketplay/{KEY}"):
        await wait_for(lambda: len(encoder.hub.viewers) == 1, "the relay joined the encoder's viewers")
    await wait_for(lambda: not encoder.hub.viewers, "the relay left the encoder's viewers")
    metrics = await (await client.get("/metrics")).text()
    assert "onair_gateway_preview_viewers 0.0" in metrics


async def test_what_cannot_be_relayed_is_answered_in_the_envelope(gateway: Callable[..., Awaitable[Client]],
                                                                  encoder: Encoder) -> None:
    client = await gateway()
    wrong = await client.get(f"/websocketplay/{KEY[:-1]}x")
    assert wrong.status == 404
    assert (await wrong.json())["errors"] == ["no live job has this preview key"]

    # The encoder serves as many viewers as it does (watching it directly): the next is told to come
    # back, not left hanging.
    encoder_url = f"ws://127.0.0.1:{encoder.port}/websocketplay/{KEY}"
    async with aiohttp.ClientSession() as direct, direct.ws_connect(encoder_url), direct.ws_connect(encoder_url):
        await wait_for(lambda: len(encoder.hub.viewers) == 2, "two direct viewers")
        full = await client.get(f"/websocketplay/{KEY}", headers=UPGRADE)
        assert full.status == 503 and full.headers["Retry-After"]
        assert (await full.json())["errors"] == ["the preview has as many viewers as it serves"]
    await wait_for(lambda: not encoder.hub.viewers, "the direct viewers gone")

    # As many viewers of one job as this gateway relays: likewise.
    relaying = await gateway(max_viewers=2)
    async with relaying.ws_connect(f"/websocketplay/{KEY}"), relaying.ws_connect(f"/websocketplay/{KEY}"):
        await wait_for(lambda: len(encoder.hub.viewers) == 1, "one preview opened for both")
        full = await relaying.get(f"/websocketplay/{KEY}", headers=UPGRADE)
        assert full.status == 503 and full.headers["Retry-After"]
        assert (await full.json())["errors"] == ["the preview has as many viewers as this gateway relays (2)"]


async def test_the_gateway_opens_an_encoders_preview_once_for_all_its_viewers(
        gateway: Callable[..., Awaitable[Client]], encoder: Encoder) -> None:
    """More viewers than the encoder serves (2 here), all through the gateway: each gets every message
    from when it joined, whole packets first to last, and the encoder serves one viewer, the gateway."""
    client = await gateway()
    async with contextlib.AsyncExitStack() as stack:
        viewers = [await stack.enter_async_context(client.ws_connect(f"/websocketplay/{KEY}")) for _ in range(2)]
        await wait_for(lambda: len(encoder.hub.viewers) == 1, "the relay joined the encoder's viewers once")
        encoder.hub.publish(packets(10, 1))
        for viewer in viewers:
            assert await receive(viewer, 1880) == packets(10, 1)
        # Those joining mid-stream start with the next message, on a packet.
        viewers += [await stack.enter_async_context(client.ws_connect(f"/websocketplay/{KEY}")) for _ in range(3)]
        await wait_for(lambda: len(client.app[RELAY_KEY].viewers) == 5, "five viewers relayed")
        assert len(encoder.hub.viewers) == 1
        metrics = await (await client.get("/metrics")).text()
        assert "onair_gateway_preview_viewers 5.0" in metrics and "onair_gateway_preview_encoders 1.0" in metrics
        encoder.hub.publish(packets(20, 2) + packets(20, 3))
        for viewer in viewers:
            assert await receive(viewer, 7520) == packets(20, 2) + packets(20, 3)
        # Viewers leaving keep the preview open for the rest; the last one gives the encoder's slot back.
        for viewer in viewers[:4]:
            await viewer.close()
        encoder.hub.publish(packets(5, 4))
        assert await receive(viewers[4], 940) == packets(5, 4)
        assert len(encoder.hub.viewers) == 1
    await wait_for(lambda: not encoder.hub.viewers, "the relay left the encoder's viewers")
    await wait_for(lambda: not client.app[RELAY_KEY].previews, "the relay forgot the preview")


async def test_a_relayed_viewer_that_falls_behind_is_dropped_and_the_others_go_on(
        gateway: Callable[..., Awaitable[Client]], encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preview_relay, "MAX_BEHIND_BYTES", 1024 * 1024)
    client = await gateway()
    async with client.ws_connect(f"/websocketplay/{KEY}") as keeping_up, \
            client.ws_connect(f"/websocketplay/{KEY}") as stalled:
        await wait_for(lambda: len(client.app[RELAY_KEY].viewers) == 2, "two viewers relayed")
        burst = packets(1000, 5)  # 188 KB a message; the stalled viewer reads nothing
        received = 0
        for _ in range(200):  # 37.6 MB: more than the sockets' buffers and the relay's backlog together
            encoder.hub.publish(burst)
            received += len(await receive(keeping_up, len(burst)))
        assert received == 200 * len(burst)
        await wait_for(lambda: len(client.app[RELAY_KEY].viewers) == 1, "the stalled viewer closed")
        # What the stalled viewer's sockets held still comes, then the end: it was dropped, not served on.
        got = 0
        while (message := await asyncio.wait_for(stalled.receive(), 5)).type == aiohttp.WSMsgType.BINARY:
            got += len(message.data)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert got < received
        encoder.hub.publish(packets(3, 6))
        assert await receive(keeping_up, 564) == packets(3, 6)


async def test_a_gateway_shutting_down_closes_its_viewers_as_going_away(
        gateway: Callable[..., Awaitable[Client]], encoder: Encoder) -> None:
    client = await gateway()
    async with client.ws_connect(f"/websocketplay/{KEY}") as viewer:
        await wait_for(lambda: len(encoder.hub.viewers) == 1, "the relay joined the encoder's viewers")
        await client.app.shutdown()  # what a rolling update's SIGTERM starts
        message = await asyncio.wait_for(viewer.receive(), 5)
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.GOING_AWAY
    await wait_for(lambda: not encoder.hub.viewers, "the relay left the encoder's viewers")


async def test_a_plain_get_of_a_preview_is_400(gateway: Callable[..., Awaitable[Client]], encoder: Encoder) -> None:
    client = await gateway()
    response = await client.get(f"/websocketplay/{KEY}")
    assert response.status == 400 and "WebSocket" in (await response.json())["errors"][0]
    assert not encoder.hub.viewers


async def test_a_job_whose_encoder_has_no_address_yet_is_503(gateway: Callable[..., Awaitable[Client]]) -> None:
    client = await gateway(pod_ip=None)
    response = await client.get(f"/websocketplay/{KEY}")
    assert response.status == 503 and response.headers["Retry-After"]
    assert (await response.json())["errors"] == ["the job's encoder is not running"]


async def test_an_encoder_that_does_not_answer_is_502(gateway: Callable[..., Awaitable[Client]],
                                                      encoder: Encoder) -> None:
    await encoder.server.close()  # the Pod's address, with nothing listening any more
    client = await gateway()
    response = await client.get(f"/websocketplay/{KEY}", headers=UPGRADE)
    assert response.status == 502
    assert (await response.json())["errors"] == ["the job's encoder did not answer"]


async def test_a_viewer_whose_connection_is_lost_leaves_nothing_running(
        gateway: Callable[..., Awaitable[Client]], encoder: Encoder) -> None:
    client = await gateway()
    viewer = await client.ws_connect(f"/websocketplay/{KEY}")
    await wait_for(lambda: len(client.app[RELAY_KEY].viewers) == 1, "a viewer relayed")
    assert viewer._response is not None and viewer._response.connection is not None
    transport = viewer._response.connection.transport
    assert transport is not None
    transport.abort()  # no close frame: the test server cancels the viewer's handler
    await wait_for(lambda: not encoder.hub.viewers, "the encoder's slot given back")

    def sending() -> list[asyncio.Task[Any]]:
        return [task for task in asyncio.all_tasks() if "_send" in repr(task.get_coro()) and not task.done()]
    await wait_for(lambda: not sending(), "no task still sending to the viewer that left")
