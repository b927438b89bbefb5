"""The encoder's status port: anyone who reaches the Pod may read it, only the operator may command it;
a read may wait for the state to change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from onair.encoder.server import status_app
from onair.encoder.status import EncoderState, EncoderStatus, RenditionStatus
from onair.models import MAX_PAUSED_RANGES
from onair.statusread import HEADLINE_HEADER

pytestmark = pytest.mark.unit
KEY = "c0ffee" * 10
Client = TestClient[web.Request, web.Application]


class Job:
    def __init__(self) -> None:
        self.status = EncoderStatus(renditions={"720p": RenditionStatus("720p")}, master_playlist_key="live/m.m3u8",
                                    media_playlist_keys={}, recording=True)
        self.stops: list[bool | None] = []

    def request_stop(self, finishing: bool | None = None) -> None:
        self.stops.append(finishing)


async def client_for(aiohttp_client: Callable[..., Awaitable[Client]], job: Job, key: str | None) -> Client:
    return await aiohttp_client(status_app(job, pausable=True, control_key=key))  # type: ignore[arg-type]


def test_pauses_are_noted_up_to_the_status_limit_and_a_pause_past_it_still_pauses() -> None:
    status = Job().status
    for _ in range(MAX_PAUSED_RANGES):
        status.set_paused(True)
        status.set_paused(False)
    status.set_paused(True)
    assert status.paused and len(status.paused_ranges) == MAX_PAUSED_RANGES
    assert all(end is not None for _, end in status.paused_ranges)
    status.set_paused(False)
    assert not status.paused and len(status.to_json()["recording"]["pausedRanges"]) == MAX_PAUSED_RANGES


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
                         ids=["no-token", "wrong-token", "not-bearer"])
async def test_commands_without_the_control_key_are_refused(
    aiohttp_client: Callable[..., Awaitable[Client]], headers: dict[str, str]
) -> None:
    job = Job()
    client = await client_for(aiohttp_client, job, KEY)
    for command in ("/finish", "/pause", "/resume", "/finish-at?at="):
        response = await client.post(command, headers=headers)
        assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert job.stops == [] and job.status.paused is False and job.status.finish_at is None


async def test_the_operator_moves_the_finish_time_and_reads_it_back(
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    job = Job()
    client = await client_for(aiohttp_client, job, KEY)
    bearer = {"Authorization": f"Bearer {KEY}"}
    moved = await client.post("/finish-at", params={"at": "2026-11-23T15:30:00+01:00"}, headers=bearer)
    assert moved.status == 200 and (await moved.json())["finishAt"] == "2026-11-23T14:30:00Z"
    assert (await (await client.get("/status")).json())["finishAt"] == "2026-11-23T14:30:00Z"
    for bad in ("tomorrow", "2026-11-23T15:30:00"):  # a time without its offset is no time
        refused = await client.post("/finish-at", params={"at": bad}, headers=bearer)
        assert refused.status == 400 and "at: " in (await refused.json())["error"]
    assert (await (await client.get("/status")).json())["finishAt"] == "2026-11-23T14:30:00Z"
    cleared = await client.post("/finish-at", params={"at": ""}, headers=bearer)
    assert cleared.status == 200 and job.status.finish_at is None


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
    assert (await client.get("/livez")).status == 200


async def test_an_encoder_reading_its_store_is_alive_but_not_ready(aiohttp_client: Callable[..., Awaitable[Client]]
                                                                   ) -> None:
    job = Job()
    job.status.store_read = False
    client = await client_for(aiohttp_client, job, KEY)
    assert (await client.get("/healthz")).status == 503
    assert (await client.get("/livez")).status == 200


async def test_a_held_read_answers_a_state_change_at_once(aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    job = Job()
    client = await client_for(aiohttp_client, job, KEY)
    first = await client.get("/status")
    seen = first.headers[HEADLINE_HEADER]
    asyncio.get_running_loop().call_later(0.3, job.status.set_state, EncoderState.LIVE, "publisher connected")
    started = time.monotonic()
    held = await client.get("/status", params={"wait": "30", "seen": seen})
    assert (await held.json())["state"] == "live"
    assert time.monotonic() - started < 20  # the change, not the 30 s wait, ended it
    assert held.headers[HEADLINE_HEADER] != seen


@pytest.mark.parametrize(("change", "news"), [
    (lambda status: setattr(status.renditions["720p"], "segments_written", 2), False),
    (lambda status: setattr(status, "dropped_frames", 5), False),
    (lambda status: setattr(status.renditions["720p"], "segments_written", 1), True),  # the first segment
    (lambda status: setattr(status, "paused", True), True),
    (lambda status: status.set_connected(True), True),
    (lambda status: setattr(status, "spool_full", True), True),
], ids=["more-segments", "dropped-frames", "first-segment", "paused", "connected", "spool-full"])
async def test_only_news_ends_a_held_read(aiohttp_client: Callable[..., Awaitable[Client]],
                                          change: Callable[[EncoderStatus], None], news: bool) -> None:
    """How far the encoder got (segments, frames) does not end a held read; what the operator acts on
    (a first segment, pause, a publisher, a full spool) does."""
    job = Job()
    if not news:
        job.status.renditions["720p"].segments_written = 1
    client = await client_for(aiohttp_client, job, KEY)
    seen = (await client.get("/status")).headers[HEADLINE_HEADER]
    change(job.status)
    started = time.monotonic()
    response = await client.get("/status", params={"wait": "0.6" if not news else "30", "seen": seen})
    waited = time.monotonic() - started
    assert response.status == 200
    if news:
        assert response.headers[HEADLINE_HEADER] != seen and waited < 20
    else:
        assert response.headers[HEADLINE_HEADER] == seen and waited >= 0.55


async def test_a_finished_encoder_holds_no_read(aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    job = Job()
    job.status.set_state(EncoderState.COMPLETED, "stopped")
    client = await client_for(aiohttp_client, job, KEY)
    seen = (await client.get("/status")).headers[HEADLINE_HEADER]
    started = time.monotonic()
    assert (await client.get("/status", params={"wait": "30", "seen": seen})).status == 200
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("wait", ["-1", "61", "nan", "soon"])
async def test_a_wait_out_of_range_is_refused(aiohttp_client: Callable[..., Awaitable[Client]], wait: str) -> None:
    client = await client_for(aiohttp_client, Job(), KEY)
    response = await client.get("/status", params={"wait": wait, "seen": "x"})
    assert response.status == 400 and "wait" in (await response.json())["error"]


async def test_state_connection_and_pause_are_announced_and_counters_are_not() -> None:
    status = Job().status

    async def woken_by(change: Callable[[], object]) -> bool:
        waiting = asyncio.create_task(status.wait_for_news(30))
        await asyncio.sleep(0)  # the wait has begun
        change()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        woken = waiting.done()
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return woken

    assert not await woken_by(lambda: setattr(status, "dropped_frames", 3))
    assert not await woken_by(lambda: status.set_state(status.state, status.message))  # no change
    assert await woken_by(lambda: status.set_state(EncoderState.LIVE, "publisher connected"))
    assert await woken_by(lambda: status.set_connected(True))
    assert not await woken_by(lambda: status.set_connected(True))  # still connected
    assert await woken_by(status.announce)  # what the pause command calls
