"""How the operator reads its running encoders' /status (issue 3: "the encoder's reports reach the
status within 2 s"), with N live encoders at once.

A second process runs N real encoder status servers (onair.encoder.server.status_app) whose counters
move every second, as a live encoder's do (a segment every 2 s, input data rates, dropped frames),
and switches one encoder at a time between live and reconnecting, 4 a second (a publisher
connecting or dropping). This process runs the operator's reader
(onair.operator.encoder_reports, configured as the operator configures it: interval 1 s, wait = the
status progress interval, 10 s) against them, in two phases of the same run:

  baseline  the encoders answer at once, without the headline header (an encoder image that does not
            hold reads): the reader reads each one every second, as the operator did before;
  held      the encoders hold each read until their headline changes or the wait is up.

For each it prints the reads per second, the CPU the reader and the encoders used, and how long a
state change took from the encoder to the reader (p50, p99), and the ratios of held to baseline.

    .venv/bin/python hack/bench/encoder_reports.py [--encoders 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from functools import partial
from typing import Any

from aiohttp import web
from benchkit import cpu_seconds, say

from onair.encoder.ffmpeg import InputStatistics
from onair.encoder.server import status_app
from onair.encoder.status import EncoderState, EncoderStatus, RenditionStatus
from onair.operator.encoder_reports import EncoderReports
from onair.operator.metrics import REGISTRY

INTERVAL = 1.0  # the operator's default poll interval
WAIT = 10.0  # the operator's default status progress interval
FLIPS_PER_SECOND = 4


def raise_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class LiveEncoder:
    def __init__(self, index: int) -> None:
        self.status = EncoderStatus(
            renditions={name: RenditionStatus(name, status="Running") for name in ("720p", "480p", "360p")},
            master_playlist_key=f"live/{index}/master.m3u8",
            media_playlist_keys={name: f"live/{index}/{name}/index.m3u8" for name in ("720p", "480p", "360p")},
        )

    def request_stop(self, finishing: bool | None = None) -> None:
        pass


def plain_status_app(job: LiveEncoder) -> web.Application:
    """/status as an encoder that does not hold reads answers it: at once, without the headline."""

    async def get_status(_: web.Request) -> web.Response:
        return web.json_response(job.status.to_json())

    app = web.Application()
    app.router.add_get("/status", get_status)
    return app


async def serve_encoders(count: int, hold: bool) -> None:
    """The encoders' process: prints their ports, then one JSON line per state switch {index, state, at}."""
    raise_file_limit()
    encoders = [LiveEncoder(i) for i in range(count)]
    ports = []
    for encoder in encoders:
        app = status_app(encoder, pausable=False, control_key=None) if hold else plain_status_app(encoder)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    print(json.dumps({"ports": ports}), flush=True)
    second = 0
    flip = 0
    while True:
        second += 1
        for encoder in encoders:  # what a live encoder's counters do in a second
            status = encoder.status
            status.statistics = InputStatistics(width=1280, height=720, framerate=30.0,
                                                video_data_rate=3000 + second % 7, audio_data_rate=128)
            status.dropped_frames += second % 2
            if second % 2 == 0:
                for rendition in status.renditions.values():
                    rendition.segments_written += 1
        for _ in range(FLIPS_PER_SECOND):
            encoder = encoders[flip % count]
            live = encoder.status.state != EncoderState.LIVE
            encoder.status.set_state(EncoderState.LIVE if live else EncoderState.RECONNECTING,
                                     "publisher connected" if live else "input dropped")
            print(json.dumps({"index": flip % count, "state": encoder.status.state.value, "at": time.time()}),
                  flush=True)
            flip += 1
            await asyncio.sleep(1 / FLIPS_PER_SECOND)


async def measure(count: int, seconds: float, hold: bool) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(count), *(["--hold"] if hold else []),
        stdout=asyncio.subprocess.PIPE, limit=2**24)
    assert process.stdout is not None
    ports = json.loads(await process.stdout.readline())["ports"]
    reports = EncoderReports(INTERVAL, wait=WAIT)
    seen: dict[int, list[tuple[float, str]]] = {}  # encoder -> (when, state) each time the reader saw a new state

    def on_change(index: int) -> None:
        state = (reports.report(str(index)) or {}).get("state")
        changes = seen.setdefault(index, [])
        if state is not None and (not changes or changes[-1][1] != state):
            changes.append((time.time(), state))

    def seen_after(flip: dict[str, Any]) -> float:
        return next((at for at, state in seen.get(flip["index"], []) if state == flip["state"] and at >= flip["at"]),
                    float("inf"))

    scheduler = asyncio.create_task(reports.run())
    for index, port in enumerate(ports):
        reports.track(str(index), f"http://127.0.0.1:{port}/status", partial(on_change, index), ready=True)
    say(f"{'held' if hold else 'baseline'}: {count} encoders; settling for {WAIT + 2:.0f} s")
    await asyncio.sleep(WAIT + 2)  # every reader has read once, and held reads have cycled

    flips: list[dict[str, Any]] = []

    async def collect() -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            flips.append(json.loads(line))

    collector = asyncio.create_task(collect())
    requests_before = reads_so_far()
    my_cpu, their_cpu = time.process_time(), cpu_seconds(process.pid)
    started, measured_from = time.monotonic(), time.time()
    say(f"measuring for {seconds:.0f} s")
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    reader_cpu, encoders_cpu = time.process_time() - my_cpu, cpu_seconds(process.pid) - their_cpu
    reads = reads_so_far() - requests_before
    measured_to = time.time()
    await asyncio.sleep(WAIT + 2)  # let the last switches arrive
    process.kill()
    await process.wait()
    collector.cancel()
    scheduler.cancel()
    await reports.close()
    measured = [flip for flip in flips if measured_from <= flip["at"] <= measured_to]
    latencies = sorted((seen_after(flip) - flip["at"]) * 1000 for flip in measured)
    missed = sum(1 for latency in latencies if latency == float("inf"))
    return {"reads_per_second": reads / elapsed, "reader_cpu_percent": 100 * reader_cpu / elapsed,
            "encoders_cpu_percent": 100 * encoders_cpu / elapsed, "switches": len(latencies), "missed": missed,
            "p50_ms": statistics.median(latencies), "p99_ms": latencies[min(len(latencies) - 1,
                                                                            int(0.99 * len(latencies)))]}


def reads_so_far() -> float:
    return sum(REGISTRY.get_sample_value("onair_operator_encoder_polls_total", {"result": result}) or 0.0
               for result in ("ok", "unreachable"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve_encoders(args.serve, args.hold)
        return
    raise_file_limit()
    baseline = await measure(args.encoders, args.seconds, hold=False)
    held = await measure(args.encoders, args.seconds, hold=True)
    print(f"\n{args.encoders} live encoders, reader interval {INTERVAL:g} s, wait {WAIT:g} s, "
          f"{FLIPS_PER_SECOND} state switches a second, {args.seconds:g} s measured")
    print(f"{'':10} {'reads/s':>8} {'reader CPU':>11} {'encoders CPU':>13} {'switch p50':>11} {'p99':>9} {'missed':>7}")
    for name, figures in (("baseline", baseline), ("held", held)):
        print(f"{name:10} {figures['reads_per_second']:8.1f} {figures['reader_cpu_percent']:10.1f}% "
              f"{figures['encoders_cpu_percent']:12.1f}% {figures['p50_ms']:9.0f}ms {figures['p99_ms']:7.0f}ms "
              f"{figures['missed']:3.0f}/{figures['switches']:.0f}")
    print(f"held / baseline: reads {held['reads_per_second'] / baseline['reads_per_second']:.3f}, reader CPU "
          f"{held['reader_cpu_percent'] / baseline['reader_cpu_percent']:.3f}, switch p50 "
          f"{held['p50_ms'] / baseline['p50_ms']:.3f}, p99 {held['p99_ms'] / baseline['p99_ms']:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
