"""Benchmark of the Kubernetes client's transport: a LiveJob create through onair.http1 (what
KubeClient sends since this bench was written) next to the same create through aiohttp's client
(what it sent before), in one process, in alternating blocks, so that both meet the same API server
at the same moments.

Each create sends the same bytes to the same path with the same headers, and the answer is parsed
the same way; only the HTTP client differs. Printed per side: p50 and mean latency, and the caller's
CPU per create (thread CPU from just before the request until its answer is parsed: the client's
own work, TLS and the socket calls), and the ratios.

Usage: KUBECONFIG=... python hack/bench/kube_client.py [--creates 1200] [--block 100]
(the CRDs must be installed; `python -m localplatform up` gives a platform).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import aiohttp
import uvloop
from benchkit import delete_namespace, say
from gateway_list import created_by_gateway
from pydantic_core import to_json

from onair.kubeclient import Credentials, KubeClient, parse_json, resource_path
from onair.models import API_VERSION


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=1200, help="creates per side")
    parser.add_argument("--block", type=int, default=100, help="creates in a row before the other side's turn")
    args = parser.parse_args()

    kube = KubeClient(Credentials.discover(), field_manager="onair-bench")
    namespace = f"bench-client-{uuid.uuid4().hex[:8]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    path = resource_path(API_VERSION, "livejobs", namespace)
    target = f"{path}?{urlencode({'fieldManager': kube.field_manager})}"
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=kube.credentials.ssl_context()),
                                    cookie_jar=aiohttp.DummyCookieJar())
    # Made before the clock starts: the jobs are the gateway's, and making one costs more than sending it.
    blocks = max(1, args.creates // args.block)
    bodies = iter([created_by_gateway("bench", namespace, i) for i in range(2 * (blocks * args.block + 20))])

    async def with_http1() -> None:
        await kube.create(path, next(bodies))

    async def with_aiohttp() -> None:
        # KubeClient.request before onair.http1: the same bytes, headers and parsing.
        async with session.request("POST", kube.credentials.server + target, data=to_json(next(bodies)),
                                   headers=kube._headers("application/json"),
                                   timeout=aiohttp.ClientTimeout(total=30)) as response:
            answer = parse_json(await response.read())
            assert response.status == 201, answer

    sides: dict[str, Callable[[], Awaitable[None]]] = {"onair.http1": with_http1, "aiohttp's client": with_aiohttp}
    latency: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for call in sides.values():  # warm-up: connections open, code paths taken once
            for _ in range(20):
                await call()
        for block in range(blocks):
            order = list(sides.items()) if block % 2 == 0 else list(reversed(sides.items()))
            for name, call in order:
                for _ in range(args.block):
                    cpu_start, start = time.thread_time(), time.perf_counter()
                    await call()
                    latency[name].append(time.perf_counter() - start)
                    cpu[name].append(time.thread_time() - cpu_start)
            say(f"block {block + 1}/{blocks} done")
    finally:
        await session.close()
        await delete_namespace(kube, namespace)
        await kube.close()

    print(f"\n{blocks * args.block} LiveJob creates per side, alternating blocks of {args.block}")
    figures: dict[str, dict[str, float]] = {}
    for name in sides:
        figures[name] = {"p50": statistics.median(latency[name]) * 1000, "mean": statistics.mean(latency[name]) * 1000,
                         "cpu": statistics.mean(cpu[name]) * 1000}
        print(f"{name:18s} p50 {figures[name]['p50']:.2f} ms  mean {figures[name]['mean']:.2f} ms  "
              f"CPU per create {figures[name]['cpu']:.3f} ms")
    new, old = figures["onair.http1"], figures["aiohttp's client"]
    print(f"onair.http1 / aiohttp's client: p50 {new['p50'] / old['p50']:.2f}x, CPU per create "
          f"{new['cpu'] / old['cpu']:.2f}x ({old['cpu'] - new['cpu']:.3f} ms less)")


if __name__ == "__main__":
    uvloop.run(main())
