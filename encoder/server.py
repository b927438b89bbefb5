"""HTTP endpoints: the status API the operator reads (on the Pod address; its commands need the job's
control key) and the nginx-rtmp hooks (on 127.0.0.1 only, so nothing outside the Pod can fake a
publish)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from onair.statusread import HEADLINE_HEADER, MAX_WAIT_SECONDS

from .rtmp import PLAY_TOKEN_PARAMETER
from .status import FINAL_STATES, EncoderStatus, headline_digest, rfc3339

# A held read answers at once when the state, the publisher's connection or pause change (they are
# announced); the rest of the headline (a first segment, statistics, a full spool, a stalled
# rendition) is set from many places in the encoder, and is looked at this often.
HEADLINE_CHECK_SECONDS = 0.5


class Controllable(Protocol):
    status: EncoderStatus

    def request_stop(self, finishing: bool | None = None) -> None: ...


class RtmpHooks(Protocol):
    async def on_publish(self, name: str) -> bool: ...

    def on_publish_done(self, name: str) -> None: ...

    def allow_play(self, token: str | None) -> bool: ...


def status_app(job: Controllable, *, pausable: bool, control_key: str | None) -> web.Application:
    """Reads are open (state and statistics, no credentials); commands need `Authorization: Bearer
    <control key>`, and without a control key every command is refused."""

    @web.middleware
    async def commands_need_the_control_key(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "POST":
            if control_key is None:
                return web.json_response({"error": "this encoder has no control key (ONAIR_CONTROL_KEY)"},
                                         status=403)
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or not secrets.compare_digest(presented.encode(), control_key.encode()):
                return web.json_response({"error": "Authorization: Bearer <the job's control key> required"},
                                         status=401, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    closing = False

    async def release_held_reads(_: web.Application) -> None:
        nonlocal closing
        closing = True
        job.status.announce()

    async def get_status(request: web.Request) -> web.Response:
        seen = request.query.get("seen")
        try:
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= MAX_WAIT_SECONDS:  # also NaN
            return web.json_response({"error": f"wait: seconds from 0 to {MAX_WAIT_SECONDS:g}"}, status=400)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        parts = job.status.headline_parts()
        unchanged = seen is not None and headline_digest(parts) == seen

        def hold() -> bool:
            # Not for a reader that has gone, nor while the server shuts down or the encoder has finished:
            # no change is coming, and the encoder must not wait for held reads to exit.
            transport = request.transport
            return (unchanged and job.status.headline_parts() == parts and loop.time() < deadline
                    and not closing and job.status.state not in FINAL_STATES
                    and transport is not None and not transport.is_closing())

        while hold():
            await job.status.wait_for_news(min(HEADLINE_CHECK_SECONDS, deadline - loop.time()))
        return web.json_response(job.status.to_json(), headers={HEADLINE_HEADER: job.status.headline()})

    async def healthz(_: web.Request) -> web.Response:
        if not job.status.store_read:
            return web.Response(status=503, text="reading the stored playlists before taking input")
        return web.Response(text="ok")

    async def livez(_: web.Request) -> web.Response:
        # Alive while the event loop answers at all: the kubelet ends an encoder that hangs (not one
        # that waits for its store, which /healthz holds back from input).
        return web.Response(text="ok")

    async def metrics(_: web.Request) -> web.Response:
        job.status.refresh_metrics()
        body = generate_latest(job.status.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def pause_handler(paused: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_: web.Request) -> web.Response:
            if not pausable:
                return web.json_response({"error": "only a RecordJob can be paused"}, status=409)
            job.status.set_paused(paused)
            return web.json_response(job.status.to_json()["recording"])

        return handler

    async def finish_at(request: web.Request) -> web.Response:
        # The operator moves the end when the spec's finish time changes under a running encoder; at
        # the old one the encoder would have ended the job early.
        raw = request.query.get("at", "")
        try:
            when = datetime.fromisoformat(raw) if raw else None
        except ValueError:
            when = None
        if raw and (when is None or when.tzinfo is None):
            return web.json_response({"error": "at: an RFC 3339 time with its offset, or empty for none"},
                                     status=400)
        job.status.finish_at = when
        job.status.announce()
        return web.json_response({"finishAt": rfc3339(when)})

    async def finish(_: web.Request) -> web.Response:
        # The operator calls this before deleting the Pod when the job is over (online: false,
        # schedule end): the playlists get EXT-X-ENDLIST. A bare SIGTERM may be an eviction.
        job.request_stop(finishing=True)
        return web.json_response({"state": job.status.state.value}, status=202)

    app = web.Application(middlewares=[commands_need_the_control_key])
    app.on_shutdown.append(release_held_reads)
    app.router.add_get("/status", get_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/pause", pause_handler(True))
    app.router.add_post("/resume", pause_handler(False))
    app.router.add_post("/finish", finish)
    app.router.add_post("/finish-at", finish_at)
    return app


def hook_app(hooks: RtmpHooks) -> web.Application:
    """nginx-rtmp notify callbacks: any 2xx accepts, anything else refuses the client."""

    async def publish(request: web.Request) -> web.Response:
        form = await request.post()
        return web.Response(status=200 if await hooks.on_publish(str(form.get("name", ""))) else 403)

    async def publish_done(request: web.Request) -> web.Response:
        form = await request.post()
        hooks.on_publish_done(str(form.get("name", "")))
        return web.Response(status=200)

    async def play(request: web.Request) -> web.Response:
        form = await request.post()
        token = form.get(PLAY_TOKEN_PARAMETER)
        return web.Response(status=200 if hooks.allow_play(str(token) if token is not None else None) else 403)

    app = web.Application()
    app.router.add_post("/rtmp/publish", publish)
    app.router.add_post("/rtmp/publish_done", publish_done)
    app.router.add_post("/rtmp/play", play)
    return app
