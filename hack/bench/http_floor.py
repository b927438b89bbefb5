"""A bare aiohttp server that answers every GET with the bytes of one file, on uvloop as the gateway
runs: the floor under the gateway's list latency (HTTP parsing, the loopback, the client), measured
by gateway_list.py in the same run with the same client and the gateway's own response body.

    python hack/bench/http_floor.py PORT BODY_FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvloop
from aiohttp import web


def main() -> None:
    port, body = int(sys.argv[1]), Path(sys.argv[2]).read_bytes()

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, loop=uvloop.new_event_loop(),
                print=lambda *_: None)


if __name__ == "__main__":
    main()
