"""The gateway relays a LiveJob's live preview from the encoder's own preview server (onair.encoder.preview,
on a loopback port as an encoder Pod's address) to a viewer, by the job's preview key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from onair.api_gateway.app import init_app
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
    async def start(pod_ip: str | None = "127.0.0.1") -> Client:
        config = GatewayConfig(stream_key_seed=SEED, watch=False, preview_port=encoder.port)
        return await aiohttp_client(init_app(config, store=store_with_job(pod_ip)))
    return start


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

    # As many viewers as the encoder serves: the next is told to come back, not left hanging.
    async with client.ws_connect(f"/websocketplay/{KEY}"), client.ws_connect(f"/websocketplay/{KEY}"):
        await wait_for(lambda: len(encoder.hub.viewers) == 2, "two relayed viewers")
        full = await client.get(f"/websocketplay/{KEY}", headers=UPGRADE)
        assert full.status == 503 and full.headers["Retry-After"]
        assert (await full.json())["success"] is False


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
