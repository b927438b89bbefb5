"""The live preview, relayed: GET /websocketplay/<preview key> on the gateway opens the same path on the
job's encoder Pod and copies its messages to the viewer.

A console served over https may open only wss:// (browsers block mixed content), and an encoder serves
plain ws:// on its own address. Through the gateway the preview has the REST API's host and TLS (its
Ingress); the operator's preview_base_url puts that URL into status.urls.webSocketConnection.

The key is the credential, as on the encoder itself: it lets its holder watch that job and nothing
more, so the relay asks for no token (a browser's WebSocket cannot send an Authorization header).

A gateway opens each encoder's preview once, however many of its viewers watch it, and copies every
message to each of them (a PreviewHub, as the encoder's own viewers are served, fed by the encoder's
preview instead of an ffmpeg): an encoder serves a few viewers (onair.encoder.preview.MAX_VIEWERS), and the
console's viewers, all through the gateway, take one of them per gateway replica. A message is whole
MPEG-TS packets, so a viewer who joins mid-stream starts on a packet, as one of the encoder's own does.
The messages are shared, not copied, so a job's preview holds at most MAX_BEHIND_BYTES here, however
many watch it (besides the chunk each viewer is being sent: what it has queued, joined, up to some
256 KiB and one message); a viewer further behind than that is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType, web

from onair.api_gateway.cache import Store
from onair.api_gateway.errors import problem_response
from onair.encoder.preview import PreviewHub, TooManyViewers, let_go, stream_to_viewer
from onair.streamkeys import PREVIEW_PATH, PREVIEW_VIEWER_MESSAGE_BYTES
from onair.urls import url_host

log = logging.getLogger("onair.gateway.preview")

# The encoder sends what a viewer has queued in messages of at most its MESSAGE_BYTES and one read
# (256 + 64 KiB): a message is held whole, so that bounds what one read of the encoder takes.
MAX_MESSAGE_BYTES = 1024 * 1024
# Some 16 s of a 4 Mbit/s source: a viewer further behind the newest message than that is dropped.
MAX_BEHIND_BYTES = 8 * 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 5.0
HEARTBEAT_SECONDS = 30.0


class EncoderPreviewFeed:
    """The feed of the gateway's hub of one job (onair.encoder.preview.Feed): the encoder's own preview,
    opened when the hub's first viewer joins and closed when its last leaves. `ended`: called when the
    encoder ends the preview or cannot be reached, not when the hub stops the feed."""

    def __init__(self, target: str, session: aiohttp.ClientSession, ended: Callable[[], None]) -> None:
        self.target = target
        self.session = session
        self.ended = ended
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Every joiner awaits it, but one that left meanwhile does not: its error is no unhandled one.
        self.connected.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._task: asyncio.Task[None] | None = None

    def start(self, publish: Callable[[bytes], None], restart: Callable[[], None]) -> None:
        self._task = asyncio.create_task(self._run(publish))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()  # nobody here watches: the encoder's viewer slot is given back
            self._task = None

    async def _run(self, publish: Callable[[bytes], None]) -> None:
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    upstream = await self.session.ws_connect(self.target, heartbeat=HEARTBEAT_SECONDS,
                                                             max_msg_size=MAX_MESSAGE_BYTES)
            except Exception as error:  # each viewer is answered why (_refusal); none goes unhandled
                self.connected.set_exception(error)
                return
            self.connected.set_result(None)
            async with upstream:
                async for message in upstream:
                    if message.type != WSMsgType.BINARY:
                        break
                    publish(message.data)  # whole packets already: the hub passes the message on as it is
        finally:
            if not self.connected.done():
                self.connected.cancel()
            if self._task is asyncio.current_task():  # it ended on its own, not stopped
                self._task = None
                self.ended()


@dataclass(frozen=True)
class RelayedPreview:
    """A job's preview as this gateway relays it: the hub of its viewers here, fed by the encoder."""

    hub: PreviewHub
    feed: EncoderPreviewFeed


class PreviewRelay:
    def __init__(self, store: Store, preview_port: int, max_viewers: int = 100) -> None:
        self.store = store
        self.preview_port = preview_port
        self.max_viewers = max_viewers  # of one job, here
        self.session: aiohttp.ClientSession | None = None
        self.viewers: set[web.WebSocketResponse] = set()  # each viewer's WebSocket, of every job
        self.previews: dict[str, RelayedPreview] = {}  # by the encoder's preview URL

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
        response = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, compress=False,
                                         max_msg_size=PREVIEW_VIEWER_MESSAGE_BYTES)
        if not response.can_prepare(request).ok:
            return problem_response(400, ["the preview is a WebSocket: a GET with Upgrade: websocket"])
        relayed = self.previews.get(target)
        if relayed is None or not relayed.hub.viewers:  # a hub left without viewers has stopped its feed
            relayed = self.previews[target] = self._open(target)
        try:
            viewer = relayed.hub.join()
        except TooManyViewers:
            return problem_response(503, [f"the preview has as many viewers as this gateway relays "
                                          f"({self.max_viewers})"], headers={"Retry-After": "10"})
        try:
            await asyncio.wait({relayed.feed.connected})
            refused = _refusal(relayed.feed.connected, target)
            if refused is not None:
                return refused
            await response.prepare(request)
            self.viewers.add(response)
            try:
                await stream_to_viewer(viewer, response)
            finally:
                self.viewers.discard(response)
        finally:
            relayed.hub.leave(viewer)
            if not relayed.hub.viewers:
                self._forget(relayed)
        await let_go(viewer, response, request, log)
        return response

    def _open(self, target: str) -> RelayedPreview:
        assert self.session is not None, "the relay's client session starts with the app"
        hub = PreviewHub(max_viewers=self.max_viewers, viewer_limit=MAX_BEHIND_BYTES)
        relayed = RelayedPreview(hub, EncoderPreviewFeed(target, self.session, lambda: self._ended(relayed)))
        hub.feed = relayed.feed
        return relayed

    def _ended(self, relayed: RelayedPreview) -> None:
        relayed.hub.close()  # the preview is over: what its viewers have queued is dropped, their ends queued
        self._forget(relayed)

    def _forget(self, relayed: RelayedPreview) -> None:
        if self.previews.get(relayed.feed.target) is relayed:
            del self.previews[relayed.feed.target]

    async def client_session(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the session the relay opens encoders' previews with, open while the app runs."""
        self.session = aiohttp.ClientSession()
        yield
        await self.session.close()

    async def close_viewers(self, app: web.Application) -> None:
        """on_shutdown: a gateway going away closes its viewers (their players reconnect to another
        replica) instead of holding its shutdown until they leave."""
        for response in list(self.viewers):
            await response.close(code=aiohttp.WSCloseCode.GOING_AWAY)


def _refusal(connected: asyncio.Future[None], target: str) -> web.Response | None:
    """The answer to a viewer when the encoder's preview could not be opened; None when it was."""
    error = asyncio.CancelledError() if connected.cancelled() else connected.exception()
    if error is None:
        return None
    if isinstance(error, aiohttp.WSServerHandshakeError):
        if error.status == 503:  # the encoder has as many viewers as it serves
            return problem_response(503, ["the preview has as many viewers as it serves"],
                                    headers={"Retry-After": "10"})
        return problem_response(502, [f"the encoder refused the preview ({error.status})"])
    log.info("preview of %s: the encoder did not answer: %r", target.rsplit("/", 1)[0], error)
    return problem_response(502, ["the job's encoder did not answer"], headers={"Retry-After": "5"})

