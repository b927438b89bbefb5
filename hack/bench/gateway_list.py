"""Benchmark of the REST gateway against the API server it fronts (issue 5).

Creates N LiveJobs (default 10,000) in one project directly through the API server with a
bounded-concurrency async client, starts the gateway in-process (aiohttp, pointed at the same API
server), then measures in the same run:

- GET .../livejobs?pageSize=100&search=... through the gateway: p50, p99, requests per second;
- a direct API-server LIST with the same label selector (onair.dev/project-id=...): p50, p99, rps;
- POST .../livejobs through the gateway vs a direct LiveJob create: p50, p99 - with the ratios.

Usage: KUBECONFIG=... python hack/bench/gateway_list.py [--jobs 10000] [--requests 300]
(the CRDs must be installed; `python -m localplatform up` gives a platform).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from onair.api_gateway.app import init_app
from onair.api_gateway.auth import parse_api_keys
from onair.api_gateway.config import GatewayConfig
from onair.kubeclient import Credentials, KubeClient, gather_limited, resource_path
from onair.models import API_VERSION

TEMPLATE = {"apiVersion": API_VERSION, "kind": "JobTemplate", "metadata": {"name": "bench-ladder"},
            "spec": {"id": 7, "name": "bench", "renditions": [
                {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 800000}]}}


def job_body(project: str, index: int) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "LiveJob",
            "metadata": {"name": str(uuid.uuid4()), "labels": {"onair.dev/project-id": project,
                                                              "onair.dev/id": str(index + 1)}},
            "spec": {"jobTemplateId": 7, "description": f"bench job {index}",
                     "input": {"serverType": "RTMP"}, "destination": {"bucket": "bench", "path": f"b/{index}"}}}


def summary(name: str, samples: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    rps = len(samples) / elapsed
    print(f"{name:<34} n={len(samples):<5} p50={p50:8.2f} ms  p99={p99:8.2f} ms  rps={rps:8.1f}")
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="list requests per side")
    parser.add_argument("--posts", type=int, default=100, help="creates per side")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    args = parser.parse_args()

    kube = KubeClient(Credentials.discover(), connections=64)
    project = str(uuid.uuid4())
    namespace = f"bench-{project[:8]}"
    await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace,
                                                          "labels": {"onair.dev/project-id": project}}})
    jobs_path = resource_path(API_VERSION, "livejobs", namespace)
    try:
        await kube.create(resource_path(API_VERSION, "jobtemplates", namespace), TEMPLATE)
        started = time.perf_counter()
        await gather_limited(32, *(kube.create(jobs_path, job_body(project, i)) for i in range(args.jobs)))
        print(f"created {args.jobs} LiveJobs in {time.perf_counter() - started:.1f}s")

        config = GatewayConfig(jwt_secret="bench-signing-key-0123456789abcdefghij",
                               api_keys=parse_api_keys([{"key": "bench", "projects": ["*"], "role": "write"}]),
                               cache_sync_timeout=300)
        runner = web.AppRunner(init_app(config))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/v1/login", json={"apiKey": "bench"}) as response:
                token = (await response.json())["result"]["token"]
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{base}/api/v1/projects/{project}/livejobs"

            async def gateway_list(i: int) -> None:
                params = {"pageSize": "100", "search": f"bench job {i % 100}", "pageIndex": "1"}
                async with http.get(url, params=params, headers=headers) as response:
                    assert response.status == 200, await response.text()
                    await response.read()

            async def direct_list(i: int) -> None:
                await kube.get(jobs_path, labelSelector=f"onair.dev/project-id={project}", limit=100)

            await timed(20, 2, gateway_list)  # warm-up
            gw = summary("gateway GET livejobs (pageSize=100)", *await timed(args.requests, args.concurrency,
                                                                            gateway_list))
            direct = summary("direct LIST (label selector, 100)", *await timed(max(20, args.requests // 5),
                                                                              args.concurrency, direct_list))

            async def gateway_post(i: int) -> None:
                body = {"jobTemplateId": 7, "bucket": "bench", "serverType": 0, "description": f"post {i}"}
                async with http.post(url, json=body, headers=headers) as response:
                    assert response.status == 201, await response.text()

            async def direct_create(i: int) -> None:
                await kube.create(jobs_path, job_body(project, args.jobs + 10_000 + i))

            post_gw = summary("gateway POST livejobs", *await timed(args.posts, 1, gateway_post))
            post_direct = summary("direct create LiveJob", *await timed(args.posts, 1, direct_create))
        await runner.cleanup()
        print(f"list p99 {gw['p99']:.2f} ms (goal <= 20 ms); direct LIST p99 / gateway p99 = "
              f"{direct['p99'] / gw['p99']:.1f}x, rps ratio {gw['rps'] / direct['rps']:.1f}x (goal >= 20x)")
        print(f"POST p50 gateway/direct = {post_gw['p50'] / post_direct['p50']:.2f}x, "
              f"p99 = {post_gw['p99'] / post_direct['p99']:.2f}x (goal <= 1.3x)")
    finally:
        if not args.keep:
            await kube.delete(f"/api/v1/namespaces/{namespace}")
        await kube.close()


if __name__ == "__main__":
    asyncio.run(main())
