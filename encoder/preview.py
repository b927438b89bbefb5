"""Live preview over WebSocket: the job's source, copied into MPEG-TS without re-encoding, for a
console's player (mpegts.js and its kind play MPEG-TS from a WebSocket). It is the REST contract's
`webSocketConnection`, "the web socket endpoint to view live streaming".

Nothing runs while nobody watches: the first viewer starts the feed, the last one to leave stops it.
- RTMP: an ffmpeg plays the stream from the local nginx-rtmp (with a play token of its own) and
  copies it into MPEG-TS.
- HLS pull: an ffmpeg pulls the source URL likewise (a second pull, while somebody watches).
- SRT: the relay hands over the publisher's payload, MPEG-TS already, as it copies it to the
  encoder's ffmpeg.

A viewer that cannot keep up is dropped (its connection cut), not buffered for without bound. The
URL carries the job's preview key, which is good for watching only (derived like the stream key,
from other text): whoever has the URL can watch, as whoever has the CDN URL can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import WSMsgType, web

from onair.streamkeys import PREVIEW_PATH, PREVIEW_VIEWER_MESSAGE_BYTES

log = logging.getLogger(__name__)

TS_PACKET_BYTES = 188
MAX_VIEWERS = 8
MAX_BEHIND_BYTES = 16 * 1024 * 1024  # some 30 s of a 4 Mbit/s source: a viewer this far behind is gone
FEED_RESTART_SECONDS = 1.0
READ_BYTES = 65536
# What a viewer has queued goes out in messages of about this size at most: the gateway's relay holds a
# message whole, once per viewer, so the size of a backlog must not become the size of one message.
MESSAGE_BYTES = 256 * 1024


@dataclass(eq=False)
class Viewer:
    # An empty chunk ends the viewer: it fell behind, or the preview ends.
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    behind: int = 0  # bytes queued and not yet sent
    limit: int = MAX_BEHIND_BYTES  # how far behind it may fall
    # Set when it fell behind and was let go: one who sends to it may be stuck on its full socket.
    fell_behind: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, chunk: bytes) -> bool:
        """Queues `chunk`, unless that puts the viewer more than `limit` bytes behind."""
        if self.behind + len(chunk) > self.limit:
            return False
        self.behind += len(chunk)
        self.queue.put_nowait(chunk)
        return True

    async def next_chunk(self) -> bytes:
        """What is queued, as one chunk of about MESSAGE_BYTES at most (SRT's payloads come 1,316 bytes
        at a time, the feed's READ_BYTES); empty: the end."""
        chunks = [await self.queue.get()]
        size = len(chunks[0])
        while chunks[-1] and not self.queue.empty() and size < MESSAGE_BYTES:
            chunks.append(self.queue.get_nowait())
            size += len(chunks[-1])
        if not chunks[-1]:
            return b""
        data = b"".join(chunks)
        self.behind -= len(data)
        return data

    def end(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.behind = 0
        self.queue.put_nowait(b"")


class TooManyViewers(Exception):
    pass


class Feed(Protocol):
    """What a hub's bytes come from while it has viewers (ProcessFeed here; the gateway's relay has one
    of its own): `publish` takes them, `restart` says a new source begins."""

    def start(self, publish: Callable[[bytes], None], restart: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...


class PreviewHub:
    """The viewers of one job and the feed that runs while there are any. `feed`: started with the
    hub's `publish` when the first viewer joins, stopped when the last leaves; None when the bytes
    are pushed (SRT's relay calls `publish_threadsafe`). `viewer_limit`: how far behind a viewer may
    fall before it is let go."""

    def __init__(self, feed: Feed | None = None, max_viewers: int = MAX_VIEWERS,
                 viewer_limit: int = MAX_BEHIND_BYTES) -> None:
        self.feed = feed
        self.max_viewers = max_viewers
        self.viewer_limit = viewer_limit
        self.viewers: set[Viewer] = set()
        self._partial = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    def join(self) -> Viewer:
        if len(self.viewers) >= self.max_viewers:
            raise TooManyViewers(f"at most {self.max_viewers} viewers")
        self._loop = asyncio.get_running_loop()
        viewer = Viewer(limit=self.viewer_limit)
        self.viewers.add(viewer)
        if len(self.viewers) == 1:
            self._partial = b""
            if self.feed is not None:
                self.feed.start(self.publish, self.restart)
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        if not self.viewers and self.feed is not None:
            self.feed.stop()

    def restart(self) -> None:
        """A new source begins (the feed's ffmpeg started again): no half packet carries over."""
        self._partial = b""

    def publish(self, data: bytes) -> None:
        """Whole TS packets to every viewer, so that one who joins mid-stream starts on a packet."""
        data = self._partial + data
        whole = len(data) - len(data) % TS_PACKET_BYTES
        self._partial = data[whole:]
        if not whole:
            return
        chunk = data[:whole]
        for viewer in list(self.viewers):
            if not viewer.offer(chunk):
                self.viewers.discard(viewer)
                viewer.end()
                viewer.fell_behind.set()
        if not self.viewers and self.feed is not None:
            self.feed.stop()

    def publish_threadsafe(self, data: memoryview) -> None:
        """From the SRT relay's thread (copied: the relay reuses its buffer); dropped while nobody watches."""
        loop = self._loop
        if self.viewers and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.publish, bytes(data))

    def close(self) -> None:
        for viewer in list(self.viewers):
            viewer.end()
        self.viewers.clear()
        if self.feed is not None:
            self.feed.stop()


class ProcessFeed:
    """Runs the command `argv()` gives (an ffmpeg writing MPEG-TS to its stdout) while started, and
    runs it again when it ends (the publisher left, and the next one will come)."""

    def __init__(self, argv: Callable[[], list[str]], preexec_fn: Callable[[], None] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.preexec_fn = preexec_fn
        self.env = env  # None: the encoder's
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, publish: Callable[[bytes], None], restart: Callable[[], None]) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(publish, restart))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self, publish: Callable[[bytes], None], restart: Callable[[], None]) -> None:
        while True:
            process = await asyncio.create_subprocess_exec(
                *self.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, preexec_fn=self.preexec_fn, env=self.env)
            assert process.stdout is not None
            restart()
            try:
                while chunk := await process.stdout.read(READ_BYTES):
                    publish(chunk)
            finally:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                await process.wait()
            await asyncio.sleep(FEED_RESTART_SECONDS)


def remux_to_ts_argv(input_url: str, guard_options: Sequence[str] = ()) -> list[str]:
    """Every video and audio stream of the input, copied into MPEG-TS on stdout (`guard_options`: a
    pull's, see ffmpeg.input_args)."""
    return ["ffmpeg", "-nostdin", "-loglevel", "error", *guard_options, "-i", input_url, "-map", "0:v?", "-map", "0:a?",
            "-c", "copy", "-f", "mpegts", "pipe:1"]


def preview_app(hub: PreviewHub, preview_key: str) -> web.Application:
    """GET /websocketplay/<preview key>: a WebSocket of binary MPEG-TS messages."""

    async def watch(request: web.Request) -> web.StreamResponse:
        if not secrets.compare_digest(request.match_info["key"].encode(), preview_key.encode()):
            raise web.HTTPNotFound(text="no such stream\n")
        try:
            viewer = hub.join()
        except TooManyViewers as error:
            raise web.HTTPServiceUnavailable(text=f"{error}\n", headers={"Retry-After": "10"}) from None
        # As the gateway's relay: not compressed, and a viewer's messages (it sends none) kept small.
        socket = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=PREVIEW_VIEWER_MESSAGE_BYTES)
        try:
            await socket.prepare(request)
            await stream_to_viewer(viewer, socket)
        except ConnectionError:
            pass  # the viewer went away during the handshake
        finally:
            hub.leave(viewer)
        await let_go(viewer, socket, request, log)
        return socket

    async def close_viewers(_: web.Application) -> None:
        hub.close()

    app = web.Application()
    app.router.add_get(PREVIEW_PATH + "/{key}", watch)
    app.on_shutdown.append(close_viewers)
    return app


async def stream_to_viewer(viewer: Viewer, socket: web.WebSocketResponse) -> None:
    """The viewer's chunks on its WebSocket until the preview ends for it (its end queued), the viewer
    closes it, or its hub lets it go for falling behind (then a send may be stuck on its full socket:
    it is cancelled); also when this is cancelled (the viewer's connection lost, a shutdown)."""
    tasks = {asyncio.create_task(_send(viewer, socket)), asyncio.create_task(_until_closed(socket)),
             asyncio.create_task(viewer.fell_behind.wait())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task


async def let_go(viewer: Viewer, socket: web.WebSocketResponse, request: web.Request, logger: logging.Logger) -> None:
    """After the viewer left its hub: its WebSocket closed, or its connection dropped when it fell
    behind (a close frame would wait behind what it did not read)."""
    if viewer.fell_behind.is_set():
        logger.info("dropped a preview viewer that fell behind")
        if request.transport is not None:
            request.transport.abort()
    elif socket.prepared and not socket.closed:  # not prepared: the viewer left during the handshake
        await socket.close()


async def _send(viewer: Viewer, socket: web.WebSocketResponse) -> None:
    while chunk := await viewer.next_chunk():
        await socket.send_bytes(chunk)


async def _until_closed(socket: web.WebSocketResponse) -> None:
    async for message in socket:  # a viewer has nothing to say; reading answers pings and sees a close
        if message.type == WSMsgType.ERROR:
            break
