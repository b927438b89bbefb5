"""The encoder's status port: anyone who reaches the Pod may read it, only the operator may command it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from onair.encoder.server import status_app
from onair.encoder.status import EncoderStatus

pytestmark = pytest.mark.unit
KEY = "c0ffee" * 10
Client = TestClient[web.Request, web.Application]


class Job:
    def __init__(self) -> None:
        self.status = EncoderStatus(renditions={}, master_playlist_key="live/m.m3u8", media_playlist_keys={},
                                    recording=True)
        self.stops: list[bool | None] = []

    def request_stop(self, finishing: bool | None = None) -> None:
        self.stops.append(finishing)


async def client_for(aiohttp_client: Callable[..., Awaitable[Client]], job: Job, key: str | None) -> Client:
    return await aiohttp_client(status_app(job, pausable=True, control_key=key))  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
                         ids=["no-token", "wrong-token", "not-bearer"])
async def test_commands_without_the_control_key_are_refused(
    aiohttp_client: Callable[..., Awaitable[Client]], headers: dict[str, str]
) -> None:
    job = Job()
    client = await client_for(aiohttp_client, job, KEY)
    for command in ("/finish", "/pause", "/resume"):
        response = await client.post(command, headers=headers)
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert job.stops == [] and job.status.paused is False


async def test_the_operator_with_the_key_is_obeyed(aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    job = Job()
    client = await client_for(aiohttp_client, job, KEY)
    bearer = {"Authorization": f"Bearer {KEY}"}
    paused: Any = await (await client.post("/pause", headers=bearer)).json()
    assert paused["paused"] is True and job.status.paused is True
    assert (await client.post("/finish", headers=bearer)).status == 202
    assert job.stops == [True]


async def test_an_encoder_without_a_control_key_refuses_every_command(
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    job = Job()
    client = await client_for(aiohttp_client, job, None)
    response = await client.post("/finish", headers={"Authorization": "Bearer "})
    assert response.status == 403 and "ONAIR_CONTROL_KEY" in (await response.json())["error"]
    assert job.stops == []


async def test_reads_need_no_key(aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    client = await client_for(aiohttp_client, Job(), KEY)
    assert (await client.get("/status")).status == 200
    assert (await client.get("/healthz")).status == 200
