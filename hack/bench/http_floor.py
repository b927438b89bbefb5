"""A bare aiohttp server, on uvloop as the gateway runs, measured by gateway_list.py in the same run
with the same client: the floor under the gateway's latency.

- GET (any path) answers the bytes of one file (the gateway's own list response): the floor under a
  list request (HTTP parsing, the loopback, the client).
- POST (any path) forwards the body as it came to the same path of the API server (KUBECONFIG, with
  the gateway's Kubernetes client) and answers with the API server's status and bytes: the floor
  under a create through any gateway (two HTTP hops and a wake-up of one more process), without
  authentication, validation, mapping or a cache.

    python hack/bench/http_floor.py PORT BODY_FILE
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvloop
from aiohttp import web

from onair.kubeclient import Credentials, KubeClient


def main() -> None:
    port, body = int(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    kube = KubeClient(Credentials.discover(), connections=8)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    async def forward(request: web.Request) -> web.Response:
        status, reply = await kube.pool.request("POST", request.path_qs, kube._headers("application/json"),
                                                await request.read())
        return web.Response(body=reply, status=status, content_type="application/json")

    async def close_kube(app: web.Application) -> AsyncIterator[None]:
        yield
        await kube.close()

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    app.router.add_post("/{tail:.*}", forward)
    app.cleanup_ctx.append(close_kube)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, loop=uvloop.new_event_loop(),
                print=lambda *_: None)


if __name__ == "__main__":
    main()
