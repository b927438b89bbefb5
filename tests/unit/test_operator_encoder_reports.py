"""Reading the encoders' /status: a running encoder holds each read until its state changes, so it
is read about once a `wait` and its state changes arrive at once; an encoder that did not answer at
first is asked again as soon as its Pod turns ready, not after its backoff; one that does not hold
reads is read every interval."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from localplatform.processes import free_port, free_ports

from onair.encoder.server import status_app
from onair.encoder.status import EncoderState, EncoderStatus, RenditionStatus
from onair.operator.encoder_reports import EncoderReports
from onair.statusread import HEADLINE_HEADER


async def wait_for(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


def status_only(handler: Callable[[web.Request], Awaitable[web.Response]]) -> web.Application:
    app = web.Application()
    app.router.add_get("/status", handler)
    return app


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def status_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/status"


@contextlib.asynccontextmanager
async def reading(reports: EncoderReports) -> AsyncIterator[EncoderReports]:
    """`reports` with its scheduler running, closed afterwards."""
    scheduler = asyncio.create_task(reports.run())
    try:
        yield reports
    finally:
        scheduler.cancel()
        await asyncio.gather(scheduler, return_exceptions=True)
        await reports.close()


async def test_a_pod_turning_ready_is_polled_at_once() -> None:
    port = free_port()
    url = status_url(port)
    changes: list[int] = []
    runner: web.AppRunner | None = None
    try:
        async with reading(EncoderReports(interval=0.2)) as reports:
            reports.track("pod-1", url, lambda: changes.append(1))
            # Nothing listens yet (the encoder is starting): the target backs off, 3.2 s after the 4th failure.
            assert await wait_for(lambda: reports._targets["pod-1"].failures >= 4, 5)
            backing_off_since = time.monotonic()

            async def status(_: web.Request) -> web.Response:
                return web.json_response({"state": "waiting"})

            runner = await serve(status_only(status), port)
            assert time.monotonic() - backing_off_since < 2.0, "the machine is too slow for this test"
            reports.track("pod-1", url, lambda: changes.append(1), ready=True)
            assert await wait_for(lambda: reports.report("pod-1") == {"state": "waiting"}, 0.5)
            assert changes == [1]
    finally:
        if runner is not None:
            await runner.cleanup()


async def test_an_encoder_backing_off_holds_no_idle_connection_and_a_healthy_one_keeps_its_own() -> None:
    """Thousands of Pods not answering yet must not hold thousands of idle connections, and an
    encoder read every interval must not pay a new connection each time."""

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"state": "waiting"})

    async def not_yet(_: web.Request) -> web.Response:
        return web.Response(status=404)

    ports = free_ports(2)
    runners = [await serve(status_only(handler), port) for handler, port in zip((healthy, not_yet), ports, strict=True)]
    try:
        async with reading(EncoderReports(interval=0.2, wait=30)) as reports:
            reports.track("healthy", status_url(ports[0]), lambda: None)
            reports.track("not-yet", status_url(ports[1]), lambda: None)
            # Backing off 1.6 s and more between reads: its connection, idle longer than 0.5 s, is closed.
            assert await wait_for(lambda: reports._targets["not-yet"].failures >= 4, 5)
            assert await wait_for(lambda: not runners[1].server.connections, 1.5)  # type: ignore[union-attr]
            assert reports.report("healthy") == {"state": "waiting"}
            server = runners[0].server
            assert server is not None and len(server.connections) == 1
            kept = server.connections[0]
            # Ten more reads (however slowly a loaded machine makes them), all over that one connection.
            more = server.requests_count + 10
            assert await wait_for(lambda: server.requests_count >= more, 10)
            assert server.connections == [kept]
    finally:
        for runner in runners:
            await runner.cleanup()


class LiveEncoder:
    """A real encoder status server (onair.encoder.server) over a status whose counters keep moving."""

    def __init__(self) -> None:
        self.status = EncoderStatus(renditions={"720p": RenditionStatus("720p")}, master_playlist_key="live/m.m3u8",
                                    media_playlist_keys={"720p": "live/720p/index.m3u8"})
        self.stops: list[bool | None] = []

    def request_stop(self, finishing: bool | None = None) -> None:
        self.stops.append(finishing)


async def test_a_running_encoder_is_read_once_a_wait_and_its_state_changes_arrive_at_once() -> None:
    encoder = LiveEncoder()
    encoder.status.renditions["720p"].segments_written = 1
    port = free_port()
    runner = await serve(status_app(encoder, pausable=False, control_key=None), port)
    server = runner.server
    assert server is not None
    states: list[str] = []
    try:
        async with reading(EncoderReports(interval=0.1, wait=30)) as reports:
            reports.track("pod-1", status_url(port), lambda: states.append((reports.report("pod-1") or {})["state"]))
            assert await wait_for(lambda: states == ["waiting"], 5)
            # Two seconds of segments and upload figures: what moved is progress, and the held read stays
            # held (read every 0.1 s, this would be 20 reads).
            for segment in range(2, 22):
                encoder.status.renditions["720p"].segments_written = segment
                encoder.status.dropped_frames = segment
                await asyncio.sleep(0.1)
            assert server.requests_count <= 2  # the first read, and the one held since
            encoder.status.set_state(EncoderState.LIVE, "publisher connected")
            # Long before the 30 s wait is up: the held read answers the change.
            assert await wait_for(lambda: states[-1:] == ["live"], 10)
            assert reports.report("pod-1")["renditions"][0]["segmentsWritten"] == 21  # type: ignore[index]
    finally:
        await runner.cleanup()


async def test_an_encoder_that_goes_away_is_read_again_when_it_is_back() -> None:
    """A restarted encoder process (same Pod, same address): its held read fails, the reader backs off,
    and follows it again once it answers."""
    port = free_port()
    encoder = LiveEncoder()
    runner = await serve(status_app(encoder, pausable=False, control_key=None), port)
    try:
        async with reading(EncoderReports(interval=0.1, wait=30)) as reports:
            reports.track("pod-1", status_url(port), lambda: None)
            assert await wait_for(lambda: reports.report("pod-1") is not None, 5)
            await runner.cleanup()  # releases the held read
            assert await wait_for(lambda: reports._targets["pod-1"].failures >= 1, 5)
            encoder.status.set_state(EncoderState.LIVE, "publisher connected")
            runner = await serve(status_app(encoder, pausable=False, control_key=None), port)
            assert await wait_for(lambda: (reports.report("pod-1") or {}).get("state") == "live", 10)
    finally:
        await runner.cleanup()


async def test_a_pod_forgotten_during_its_first_read_is_not_followed() -> None:
    answering = asyncio.Event()
    requests: list[str] = []

    async def slow_status(request: web.Request) -> web.Response:
        requests.append(request.path_qs)
        answering.set()
        await asyncio.sleep(0.3)
        return web.json_response({"state": "waiting"}, headers={HEADLINE_HEADER: "h1"})

    port = free_port()
    runner = await serve(status_only(slow_status), port)
    try:
        async with reading(EncoderReports(interval=0.1, wait=30)) as reports:
            reports.track("pod-1", status_url(port), lambda: None)
            await asyncio.wait_for(answering.wait(), 5)
            reports.forget("pod-1")  # the Pod was deleted while its encoder answered
            await asyncio.sleep(0.5)  # a follower, were there one, would ask again at once
            assert requests == ["/status"]
    finally:
        await runner.cleanup()


async def test_a_pod_whose_container_ended_keeps_its_last_report_and_is_read_no_more() -> None:
    """What a finished recorder last reported (the playlists it wrote) is what its job lists."""
    requests: list[str] = []

    async def status(request: web.Request) -> web.Response:
        requests.append(request.path_qs)
        return web.json_response({"state": "finished", "masterPlaylistKey": "rec/master.m3u8"})

    port = free_port()
    runner = await serve(status_only(status), port)
    try:
        async with reading(EncoderReports(interval=0.05)) as reports:
            reports.track("pod-1", status_url(port), lambda: None)
            assert await wait_for(lambda: reports.report("pod-1") is not None, 5)
            reports.stop("pod-1")
            asked = len(requests)
            await asyncio.sleep(0.3)  # six intervals: a target still read would have been asked again
            assert len(requests) == asked
            assert reports.report("pod-1") == {"state": "finished", "masterPlaylistKey": "rec/master.m3u8"}
            assert not await reports.send("pod-1", "finish", "key")  # nothing runs there to be told
            reports.forget("pod-1")  # the Pod's deletion
            assert reports.report("pod-1") is None
    finally:
        await runner.cleanup()


async def test_an_encoder_whose_pod_is_being_stopped_is_told_to_finish_only_when_that_is_asked_for() -> None:
    """A deleted LiveJob's encoder runs through its Pod's grace period: the operator's finish still
    reaches it then (the playlists end), where other commands are not sent to an encoder on its way out."""
    encoder = LiveEncoder()
    port = free_port()
    runner = await serve(status_app(encoder, pausable=False, control_key="the-control-key"), port)
    try:
        async with reading(EncoderReports(interval=0.1, wait=30)) as reports:
            reports.track("pod-1", status_url(port), lambda: None)
            assert await wait_for(lambda: reports.report("pod-1") is not None, 5)
            reports.stop("pod-1")  # its Pod is being deleted
            assert not await reports.send("pod-1", "finish", "the-control-key")
            assert encoder.stops == []
            assert await reports.send("pod-1", "finish", "the-control-key", stopping_too=True)
            assert encoder.stops == [True]
    finally:
        await runner.cleanup()
