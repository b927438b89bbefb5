"""Benchmark of the REST gateway against the API server it fronts (issue 5).

Creates N LiveJobs (default 10,000) in one project directly through the API server with a
bounded-concurrency async client, starts the gateway in its own process as it is deployed
(`python -m onair.api_gateway.main`, pointed at the same API server), waits until its caches are
synced, then measures in the same run:

- GET .../livejobs?pageSize=100&search=... through the gateway, and a direct API-server LIST with
  the same label selector (onair.dev/project-id=..., limit=100): p50 and p99 one request at a time
  (latency), requests per second with --concurrency in flight (throughput), and the gateway's CPU
  time per request; and the floor under the list latency: a bare aiohttp server (http_floor.py)
  answering the gateway's own response bytes to the same client. Two kinds of gateway list: a query
  asked before (a console polling its list: the gateway keeps each page it answered until a job
  changes; every round asks its 100 queries once untimed first) and a fresh search, never asked
  before in the run (looked up in the gateway's n-gram postings, or, when even its rarest n-gram is
  common, a scan of all 10,000 jobs' search texts);
- POST .../livejobs through the gateway vs a direct create of the LiveJob the gateway makes of the
  same body, one at a time: p50, p99; and the floor under any gateway's create: the bare aiohttp
  server forwarding that LiveJob, ready-made, to the API server (two HTTP hops instead of one, and one
  more process to wake);
and prints the ratios, the API server's CPU per request on each side (the gateway's lists are
served from its cache: none), and for each side of the POSTs how long the client, the server in
front (gateway or floor) and the API server waited for a CPU while ready to run: what the load on
the machine's CPUs, the gateway's own work among it, adds to the latency. The two sides alternate in
rounds, each starting on a quiet platform (no round inherits the API server's garbage collection
after the other side's LISTs). The client is the same for every side and reads the response bytes
without decoding them: onair.http1, the keep-alive HTTP/1.1 client on uvloop that the gateway's
Kubernetes client uses too, whose own cost per request is about a third of aiohttp's (`--client
aiohttp` measures with aiohttp's client instead, as runs before G did).

Usage: KUBECONFIG=... python hack/bench/gateway_list.py [--jobs 10000] [--requests 1000] [--client http1]
(the CRDs must be installed; `python -m localplatform up` gives a platform).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import uvloop
from benchkit import (
    cpu_by_program,
    cpu_seconds,
    cpu_wait_seconds,
    delete_namespace,
    pid_of,
    rss_mb,
    say,
    wait_until_platform_quiet,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from localplatform.processes import free_port

from onair.api_gateway import mapping
from onair.api_gateway.schemas import LiveJobCreate
from onair.http1 import Http1Pool
from onair.kubeclient import Credentials, KubeClient, gather_limited, resource_path
from onair.models import API_VERSION

TEMPLATE = {"apiVersion": API_VERSION, "kind": "JobTemplate", "metadata": {"name": "bench-ladder"},
            "spec": {"id": 7, "name": "bench", "renditions": [
                {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 800000}]}}


ROUNDS = 5
LABELS = {
    "gateway list c1": "gateway list, 1 in flight",
    "gateway fresh c1": "gateway fresh search, 1",
    "floor list c1": "bare aiohttp, same bytes, 1",
    "direct list c1": "direct LIST, 1 in flight",
    "gateway list cN": "gateway list, N in flight",
    "direct list cN": "direct LIST, N in flight",
    "gateway POST": "gateway POST livejobs",
    "floor POST": "bare aiohttp, forwarding",
    "direct create": "direct create LiveJob",
}


def job_body(project: str, index: int) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "LiveJob",
            "metadata": {"name": str(uuid.uuid4()), "labels": {"onair.dev/project-id": project,
                                                              "onair.dev/id": str(index + 1)}},
            "spec": {"jobTemplateId": 7, "description": f"bench job {index}",
                     "input": {"serverType": "RTMP"}, "destination": {"bucket": "bench", "path": f"b/{index}"}}}


def list_params(i: int) -> dict[str, str]:
    """The 100 queries a round asks (and asks again): a console polling its lists."""
    return {"pageSize": "100", "search": f"bench job {i % 100}", "pageIndex": "1"}


def post_body(index: int) -> dict[str, Any]:
    return {"jobTemplateId": 7, "bucket": "bench", "serverType": 0, "description": f"post {index}"}


def created_by_gateway(project: str, namespace: str, index: int) -> dict[str, Any]:
    """The LiveJob the gateway writes for post_body(index), so that the direct create sends the API
    server the same object to validate and store (the bench's POSTs carry no Idempotency-Key)."""
    spec = mapping.live_job_spec_from_request(LiveJobCreate.model_validate(post_body(index)))
    return mapping.live_job_object(str(uuid.uuid4()), namespace, project, index + 1, spec, None)


class AiohttpClient:
    """Http1Pool's interface over aiohttp's client: the client of the runs before G."""

    def __init__(self, session: aiohttp.ClientSession, origin: str) -> None:
        self.session, self.origin = session, origin

    async def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> tuple[int, bytes]:
        async with self.session.request(method, self.origin + target, headers=headers, data=body or None) as response:
            return response.status, await response.read()

    async def close(self) -> None:
        pass


def summary(name: str, samples: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    rps = len(samples) / elapsed
    print(f"{name:<28} n={len(samples):<5} p50={p50:8.2f} ms  p99={p99:8.2f} ms  rps={rps:8.1f}")
    return {"p50": p50, "p99": p99, "rps": rps}


async def timed(requests: int, concurrency: int, call: Any) -> tuple[list[float], float]:
    samples: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await gather_limited(concurrency, *(one(i) for i in range(requests)))
    return samples, time.perf_counter() - started


async def wait_ready(process: asyncio.subprocess.Process, url: str, what: str) -> None:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        while True:
            if process.returncode is not None:
                raise SystemExit(f"{what} exited with {process.returncode}")
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.perf_counter() - started > 120:
                raise SystemExit(f"{what} did not become ready in 120 s")
            await asyncio.sleep(0.1)


async def start_floor(body: bytes) -> tuple[asyncio.subprocess.Process, str]:
    """http_floor.py answering with `body`: what any aiohttp server costs to answer those bytes."""
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="gateway-list-body-", delete=False) as file:
        file.write(body)
    process = await asyncio.create_subprocess_exec(sys.executable, str(Path(__file__).with_name("http_floor.py")),
                                                   str(port), file.name)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(process, f"{base}/", "the bare aiohttp server")
    finally:
        os.unlink(file.name)  # read at its start
    return process, base


async def start_gateway() -> tuple[asyncio.subprocess.Process, str]:
    """The gateway as it is deployed: its own process (and so its own core), KUBECONFIG from ours."""
    port = free_port()
    env = {**os.environ, "ONAIR_GATEWAY_HOST": "127.0.0.1", "ONAIR_GATEWAY_PORT": str(port),
           "ONAIR_GATEWAY_JWT_SECRET": "bench-signing-key-0123456789abcdefghij",
           "ONAIR_GATEWAY_API_KEYS": json.dumps([{"key": "bench-key-0123456789", "projects": ["*"], "role": "write"}]),
           "ONAIR_GATEWAY_STREAM_KEY_SEED": "bench-stream-key-seed-0123456789abcdef",
           "ONAIR_GATEWAY_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "onair.api_gateway.main", env=env)
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    await wait_ready(process, f"{base}/readyz", "the gateway")
    say(f"gateway ready (caches synced) in {time.perf_counter() - started:.1f}s")
    return process, base


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000, help="gateway list requests per concurrency "
                        "(and as many direct LISTs: each side's p99 is then its tenth-worst of 1,000)")
    parser.add_argument("--posts", type=int, default=500, help="creates per side")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--client", choices=("http1", "aiohttp"), default="http1",
                        help="the client every side is measured with (default: onair.http1)")
    parser.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    args = parser.parse_args()

    kube = KubeClient(Credentials.discover(), connections=64)
    # The gateway's own namespace, as in a deployment: its id counters live there.
    await kube.create("/api/v1/namespaces", {"metadata": {"name": "onair-system"}})
    project = str(uuid.uuid4())
    namespace = f"bench-{project[:8]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace,
                                                          "labels": {"onair.dev/project-id": project}}})
    jobs_path = resource_path(API_VERSION, "livejobs", namespace)
    gateway = floor = None
    try:
        await kube.create(resource_path(API_VERSION, "jobtemplates", namespace), TEMPLATE)
        started = time.perf_counter()
        await gather_limited(32, *(kube.create(jobs_path, job_body(project, i)) for i in range(args.jobs)))
        say(f"created {args.jobs} LiveJobs in {time.perf_counter() - started:.1f}s")

        gateway, base = await start_gateway()
        say("waiting for the API server and controllers to finish with the new jobs")
        say(f"quiet after {await wait_until_platform_quiet():.0f}s")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/v1/login", json={"apiKey": "bench-key-0123456789"}) as response:
                token = (await response.json())["result"]["token"]
            headers = {"Authorization": f"Bearer {token}"}
            path = f"/api/v1/projects/{project}/livejobs"
            async with http.get(base + path, params=list_params(0), headers=headers) as response:
                floor, floor_base = await start_floor(await response.read())

            def client(origin: str, ssl_context: ssl.SSLContext | bool = False) -> Http1Pool | AiohttpClient:
                if args.client == "aiohttp":
                    return AiohttpClient(kube.session if ssl_context else http, origin)
                return Http1Pool(origin, ssl_context=ssl_context, connections=args.concurrency)

            to_gateway, to_floor = client(base), client(floor_base)
            to_apiserver = client(kube.credentials.server, kube.credentials.ssl_context())
            json_headers = {**headers, "Content-Type": "application/json"}

            async def ok(expected: int, call: Any) -> None:
                status, body = await call
                assert status == expected, body[:500]

            async def gateway_list(i: int) -> None:
                await ok(200, to_gateway.request("GET", f"{path}?{urlencode(list_params(i))}", headers))

            fresh_searches = iter(range(10**9))

            async def gateway_fresh(i: int) -> None:
                # "bench job 7" matches 1,111 jobs, "bench job 70" 111, "bench job 700" 11: a mix.
                params = {"pageSize": "100", "search": f"bench job {next(fresh_searches)}", "pageIndex": "1"}
                await ok(200, to_gateway.request("GET", f"{path}?{urlencode(params)}", headers))

            async def floor_list(i: int) -> None:
                await ok(200, to_floor.request("GET", f"{path}?{urlencode(list_params(i))}", headers))

            selector = {"labelSelector": f"onair.dev/project-id={project}", "limit": "100"}
            direct_target = f"{jobs_path}?{urlencode(selector)}"
            direct_headers = kube._headers()  # what onair's Kubernetes client sends on its own requests

            async def direct_list(i: int) -> None:
                await ok(200, to_apiserver.request("GET", direct_target, direct_headers))

            await timed(20, 2, gateway_list)  # warm-up
            # Both sides alternate in rounds, so that any background work of the API server (its
            # controllers still digesting the jobs just created) falls on both alike.
            samples: dict[str, list[float]] = {}
            seconds: dict[str, float] = {}
            apiserver_cpu: dict[str, float] = {}
            server_cpu: dict[str, float] = {}  # the gateway's or the floor's own, per side
            # Per side, how long each process waited for a CPU while ready to run: what the load on the
            # machine's CPUs adds to the latency, apart from the work each process does.
            cpu_waits: dict[str, dict[str, float]] = {}
            apiserver_pid = pid_of("kube-apiserver")

            def waits_now(server: asyncio.subprocess.Process | None) -> dict[str, float]:
                pids = {"client": os.getpid(), "server": server.pid if server else None, "API server": apiserver_pid}
                return {who: cpu_wait_seconds(pid) for who, pid in pids.items() if pid is not None}

            async def measure(name: str, requests: int, concurrency: int, call: Any, warm: bool = False,
                              server: asyncio.subprocess.Process | None = None) -> None:
                # Each side starts on a quiet platform, so that what the other left running (the API
                # server's garbage collection after a round of LISTs) does not land on it.
                await wait_until_platform_quiet()
                if warm:  # every query of the round asked once, untimed: a console polling its lists
                    await timed(100, 1, call)
                cpu_before = cpu_by_program().get("kube-apiserver", 0.0)
                server_before = cpu_seconds(server.pid) if server else 0.0
                waits_before = waits_now(server)
                got, elapsed = await timed(requests, concurrency, call)
                side_waits = cpu_waits.setdefault(name, {})
                for who, waited in waits_now(server).items():
                    side_waits[who] = side_waits.get(who, 0.0) + waited - waits_before[who]
                samples.setdefault(name, []).extend(got)
                seconds[name] = seconds.get(name, 0.0) + elapsed
                apiserver_cpu[name] = (apiserver_cpu.get(name, 0.0)
                                       + cpu_by_program().get("kube-apiserver", 0.0) - cpu_before)
                if server:
                    server_cpu[name] = server_cpu.get(name, 0.0) + cpu_seconds(server.pid) - server_before

            for _ in range(ROUNDS):
                await measure("gateway list c1", args.requests // ROUNDS, 1, gateway_list, warm=True)
                await measure("gateway fresh c1", args.requests // ROUNDS, 1, gateway_fresh, server=gateway)
                await measure("floor list c1", args.requests // ROUNDS, 1, floor_list)
                await measure("direct list c1", args.requests // ROUNDS, 1, direct_list)
                await measure("gateway list cN", args.requests // ROUNDS, args.concurrency, gateway_list, warm=True,
                              server=gateway)
                await measure("direct list cN", args.requests // ROUNDS, args.concurrency, direct_list)

            async def gateway_post(i: int) -> None:
                await ok(201, to_gateway.request("POST", path, json_headers, json.dumps(post_body(i)).encode()))

            create_target = f"{jobs_path}?{urlencode({'fieldManager': 'onair-gateway'})}"
            create_headers = kube._headers("application/json")

            async def direct_create(i: int) -> None:
                job = created_by_gateway(project, namespace, args.jobs + 10_000 + i)
                await ok(201, to_apiserver.request("POST", create_target, create_headers, json.dumps(job).encode()))

            async def floor_post(i: int) -> None:
                # The job the gateway would make, sent ready-made: the floor does nothing but forward it.
                job = created_by_gateway(project, namespace, args.jobs + 20_000 + i)
                await ok(201, to_floor.request("POST", create_target, {"Content-Type": "application/json"},
                                               json.dumps(job).encode()))

            for _ in range(ROUNDS):
                await measure("gateway POST", args.posts // ROUNDS, 1, gateway_post, server=gateway)
                await measure("floor POST", args.posts // ROUNDS, 1, floor_post, server=floor)
                await measure("direct create", args.posts // ROUNDS, 1, direct_create)
            for each in (to_gateway, to_floor, to_apiserver):
                await each.close()
            rss = rss_mb(gateway.pid)
        for process in (gateway, floor):
            process.terminate()
            await process.wait()

        print(f"\n10,000-job project: {args.jobs} LiveJobs; list = GET livejobs?pageSize=100&search=...; "
              f"direct = LIST with the project's label selector, limit=100")
        figures = {name: summary(LABELS[name], samples[name], seconds[name]) for name in LABELS}
        gw1, direct1, floor1 = figures["gateway list c1"], figures["direct list c1"], figures["floor list c1"]
        fresh1 = figures["gateway fresh c1"]
        gwn, directn = figures["gateway list cN"], figures["direct list cN"]
        post_gw, post_direct = figures["gateway POST"], figures["direct create"]
        cpu_ms = {name: seconds_used * 1000 / len(samples[name]) for name, seconds_used in server_cpu.items()}
        print(f"gateway: {cpu_ms['gateway list cN']:.2f} ms CPU per list request (a query asked before), "
              f"{cpu_ms['gateway fresh c1']:.2f} ms per fresh search, {cpu_ms['gateway POST']:.2f} ms CPU per POST "
              f"(the forwarding floor {cpu_ms['floor POST']:.2f} ms), RSS {rss:.0f} MB")
        per_request = {name: apiserver_cpu[name] * 1000 / len(samples[name]) for name in LABELS}
        print(f"API server CPU per request: gateway list {per_request['gateway list c1']:.3f} ms, "
              f"direct LIST {per_request['direct list c1']:.2f} ms (one at a time)")
        print(f"list p99 (one at a time) {gw1['p99']:.2f} ms (goal <= 20 ms); "
              f"{args.concurrency} in flight: {gwn['p99']:.2f} ms")
        print(f"faster than the direct LIST (goal >= 20x), a query asked before: "
              f"p50 {direct1['p50'] / gw1['p50']:.1f}x, "
              f"p99 {direct1['p99'] / gw1['p99']:.1f}x one at a time; "
              f"requests/s {gwn['rps'] / directn['rps']:.1f}x with {args.concurrency} in flight")
        print(f"faster than the direct LIST (goal >= 20x), a fresh search: p50 {direct1['p50'] / fresh1['p50']:.1f}x, "
              f"p99 {direct1['p99'] / fresh1['p99']:.1f}x one at a time (list p99 {fresh1['p99']:.2f} ms)")
        print(f"floor: a bare aiohttp server answering the same bytes to the same client, p50 {floor1['p50']:.2f} ms "
              f"(the gateway's own share {gw1['p50'] - floor1['p50']:.2f} ms); no aiohttp server can be more than "
              f"{direct1['p50'] / floor1['p50']:.1f}x faster than the direct LIST at p50 on this machine")
        print(f"POST gateway / direct create (goal <= 1.3x): p50 {post_gw['p50'] / post_direct['p50']:.2f}x, "
              f"p99 {post_gw['p99'] / post_direct['p99']:.2f}x")
        post_floor = figures["floor POST"]
        print(f"POST floor: a bare aiohttp server forwarding the ready-made job, p50 {post_floor['p50']:.2f} ms = "
              f"{post_floor['p50'] / post_direct['p50']:.2f}x the direct create (the gateway's own share "
              f"{post_gw['p50'] - post_floor['p50']:.2f} ms); no gateway in front of the API server can be "
              f"faster than that on this machine")
        print("waiting for a CPU while ready to run, per create: " + "; ".join(
            f"{side} " + ", ".join(f"{who} {waited * 1000 / len(samples[side]):.2f} ms"
                                   for who, waited in cpu_waits[side].items())
            for side in ("gateway POST", "floor POST", "direct create")))
    finally:
        for process in (gateway, floor):
            if process is not None and process.returncode is None:
                process.kill()
        if not args.keep:
            await delete_namespace(kube, namespace)
        await kube.close()


if __name__ == "__main__":
    # The client on uvloop, as the gateway serves: a slow client adds the same to both sides' latency
    # and so shrinks the ratio the servers make.
    uvloop.run(main())
