"""The live preview, relayed: GET /websocketplay/<preview key> on the gateway opens the same path on the
job's encoder Pod and copies its messages to the viewer.

A console served over https may open only wss:// (browsers block mixed content), and an encoder serves
plain ws:// on its own address. Through the gateway the preview has the REST API's host and TLS (its
Ingress); the operator's preview_base_url puts that URL into status.urls.webSocketConnection.

The key is the credential, as on the encoder itself: it lets its holder watch that job and nothing
more, so the relay asks for no token (a browser's WebSocket cannot send an Authorization header).
The encoder bounds its viewers and closes one that falls behind; the relay adds no buffer of its own:
it reads from the encoder only as fast as the viewer takes the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import WSMsgType, web

from onair.api_gateway.cache import Store
from onair.api_gateway.errors import problem_response
from onair.streamkeys import PREVIEW_PATH, PREVIEW_VIEWER_MESSAGE_BYTES
from onair.urls import url_host

log = logging.getLogger("onair.gateway.preview")

# The encoder sends what a viewer has queued in messages of at most its MESSAGE_BYTES and one read
# (256 + 64 KiB): a message is held whole here, once per viewer, so that bounds the relay's memory.
MAX_MESSAGE_BYTES = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 5.0
HEARTBEAT_SECONDS = 30.0


class PreviewRelay:
    def __init__(self, store: Store, preview_port: int) -> None:
        self.store = store
        self.preview_port = preview_port
        self.session: aiohttp.ClientSession | None = None
        self.viewers: set[web.WebSocketResponse] = set()

    def encoder_url(self, key: str) -> str | web.Response:
        """The preview URL on the job's encoder Pod, or the answer to give instead."""
        job = self.store.by_preview_key.get(key)
        obj = self.store.livejobs.get(*job) if job else None
        if job is None or obj is None:
            return problem_response(404, ["no live job has this preview key"])
        pod_name = (obj.get("status") or {}).get("resourceName")
        pod = self.store.pods.get(job[0], pod_name) if pod_name else None
        address = ((pod or {}).get("status") or {}).get("podIP")
        if not address:
            return problem_response(503, ["the job's encoder is not running"], headers={"Retry-After": "5"})
        return f"ws://{url_host(address)}:{self.preview_port}{PREVIEW_PATH}/{key}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = self.encoder_url(request.match_info["key"])
        if isinstance(target, web.Response):
            return target
        # Not compressed (MPEG-TS hardly compresses, and each viewer's copy would cost its own deflate);
        # a viewer sends nothing the relay reads, so a large message from one is refused.
        viewer = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, compress=False,
                                       max_msg_size=PREVIEW_VIEWER_MESSAGE_BYTES)
        if not viewer.can_prepare(request).ok:
            return problem_response(400, ["the preview is a WebSocket: a GET with Upgrade: websocket"])
        assert self.session is not None, "the relay's client session starts with the app"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                upstream = await self.session.ws_connect(target, heartbeat=HEARTBEAT_SECONDS,
                                                         max_msg_size=MAX_MESSAGE_BYTES)
        except aiohttp.WSServerHandshakeError as error:
            if error.status == 503:  # the encoder has as many viewers as it serves
                return problem_response(503, ["the preview has as many viewers as it serves"],
                                        headers={"Retry-After": "10"})
            return problem_response(502, [f"the encoder refused the preview ({error.status})"])
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            log.info("preview of %s: the encoder did not answer: %s", target.rsplit("/", 1)[0], error)
            return problem_response(502, ["the job's encoder did not answer"], headers={"Retry-After": "5"})
        async with upstream:
            await viewer.prepare(request)
            self.viewers.add(viewer)
            try:
                copying = asyncio.create_task(_copy(upstream, viewer))
                watching = asyncio.create_task(_until_closed(viewer))
                await asyncio.wait({copying, watching}, return_when=asyncio.FIRST_COMPLETED)
                for task in (copying, watching):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await task
            finally:
                self.viewers.discard(viewer)
            if not viewer.closed:
                await viewer.close()
        return viewer

    async def client_session(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the session the relay opens encoders' previews with, open while the app runs."""
        self.session = aiohttp.ClientSession()
        yield
        await self.session.close()

    async def close_viewers(self, app: web.Application) -> None:
        """on_shutdown: a gateway going away closes its viewers (their players reconnect to another
        replica) instead of holding its shutdown until they leave."""
        for viewer in list(self.viewers):
            await viewer.close(code=aiohttp.WSCloseCode.GOING_AWAY)


async def _copy(upstream: aiohttp.ClientWebSocketResponse, viewer: web.WebSocketResponse) -> None:
    """The encoder's MPEG-TS messages to the viewer, until the encoder ends the preview."""
    async for message in upstream:
        if message.type != WSMsgType.BINARY:
            break
        await viewer.send_bytes(message.data)


async def _until_closed(viewer: web.WebSocketResponse) -> None:
    async for message in viewer:  # a viewer has nothing to say; reading answers pings and sees a close
        if message.type == WSMsgType.ERROR:
            break
