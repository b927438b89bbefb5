"""Reading the encoders' /status: an encoder that did not answer at first is asked again as soon as
its Pod turns ready, not after its backoff."""

from __future__ import annotations

import asyncio
import socket
import time

from aiohttp import web

from onair.operator.encoder_reports import EncoderReports


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_pod_turning_ready_is_polled_at_once() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/status"
    changes: list[int] = []
    reports = EncoderReports(interval=0.2)
    runner: web.AppRunner | None = None
    poller = asyncio.create_task(reports.run())
    try:
        reports.track("pod-1", url, lambda: changes.append(1))
        # Nothing listens yet (the encoder is starting): the target backs off.
        assert await wait_for(lambda: reports._targets["pod-1"].failures >= 3, 5)
        async def status(_: web.Request) -> web.Response:
            return web.json_response({"state": "waiting"})

        app = web.Application()
        app.router.add_get("/status", status)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        backoff_left = reports._targets["pod-1"].next_poll - time.monotonic()
        assert backoff_left > 0.5
        reports.track("pod-1", url, lambda: changes.append(1), ready=True)
        assert await wait_for(lambda: reports.report("pod-1") == {"state": "waiting"}, 0.5)
        assert changes == [1]
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await reports.close()
        if runner is not None:
            await runner.cleanup()


async def test_an_encoder_backing_off_holds_no_idle_connection_and_a_healthy_one_keeps_its_own() -> None:
    """Thousands of Pods not answering yet must not hold thousands of idle connections, and an
    encoder read every interval must not pay a new connection each time."""

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"state": "waiting"})

    async def not_yet(_: web.Request) -> web.Response:
        return web.Response(status=404)

    runners: list[web.AppRunner] = []
    urls = []
    for handler in (healthy, not_yet):
        app = web.Application()
        app.router.add_get("/status", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{port}/status")
    reports = EncoderReports(interval=0.2)
    poller = asyncio.create_task(reports.run())
    try:
        reports.track("healthy", urls[0], lambda: None)
        reports.track("not-yet", urls[1], lambda: None)
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
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await reports.close()
        for runner in runners:
            await runner.cleanup()
