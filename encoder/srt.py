"""The SRT gate: the encoder's own SRT listener, so a caller without the job's stream key in its
streamid is refused during the handshake, as nginx-rtmp refuses a wrong RTMP key. ffmpeg's listener
cannot check a streamid.

libsrt (the system library ffmpeg itself links) is called through ctypes. Its listen callback sees
each caller's streamid before the connection is made and rejects with an SRT Access Control code
(the caller gets "connection rejected", not a silent drop). The accepted publisher's live-mode
payload (MPEG-TS) is relayed by a thread into the session's ffmpeg through a pipe; the publisher
leaving closes the pipe, so ffmpeg sees the end of its input and closes its last segment.

Encryption stays libsrt's: the listener has the job's passphrase, and a caller with another (or none)
is rejected by libsrt after the callback accepted its streamid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import enum
import functools
import logging
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

log = logging.getLogger(__name__)

# find_library names first (whichever flavour the distribution ships), then sonames as a fallback for
# images without ldconfig's cache. Debian's ffmpeg depends on libsrt1.5-gnutls.
LIBSRT_NAMES = ("srt-gnutls", "srt-openssl", "srt")
LIBSRT_SONAMES = ("libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5", "libsrt.so.1.4",
                  "libsrt-gnutls.so.1.4", "libsrt-openssl.so.1.4")

# srt.h (1.4 and 1.5 share these values)
SRTO_RCVTIMEO = 14
SRTO_LATENCY = 23
SRTO_PASSPHRASE = 26
SRTO_PBKEYLEN = 27
SRTO_TRANSTYPE = 50
SRTO_IPV6ONLY = 54
SRTT_LIVE = 0
SRT_ERROR = -1
SRT_INVALID_SOCK = -1
SRT_EASYNCRCV = 6002
SRT_ETIMEOUT = 6003
LOG_CRIT = 2  # syslog's level numbers, as srt_setloglevel takes them
RECEIVE_BUFFER_BYTES = 2048  # one live-mode message is at most 1456 bytes

LATENCY_MS = 200
PBKEYLEN = 16  # AES-128, as the ffmpeg listener had
RECEIVE_TIMEOUT_MS = 250  # how soon a relay notices a stop while the publisher sends nothing
ACCEPT_BACKLOG = 4
ACCEPT_RETRY_SECONDS = 0.2
ACCEPT_RETRY_MAX_SECONDS = 5.0
MAX_STREAMID = 512  # SRT's limit


class Rejection(enum.IntEnum):
    """SRT Access Control rejection codes (access_control.h) the gate answers with."""

    BAD_REQUEST = 1400  # a `#!:` streamid we cannot read
    FORBIDDEN = 1403  # not the job's stream key
    BAD_MODE = 1405  # m=request or m=bidirectional: this listener only takes publishers
    CONFLICT = 1409  # another publisher is on the stream


ACCESS_CONTROL_PREFIX = "#!::"


def parse_access_control(streamid: str) -> dict[str, str] | None:
    """The key-value pairs of an SRT Access Control streamid (`#!::u=alice,r=stream,m=publish`), or
    None when the streamid is not in that form. A pair without `=` makes the whole streamid
    unreadable (ValueError); so does the nested `#!:{...}` form, which we do not take."""
    if not streamid.startswith("#!:"):
        return None
    if not streamid.startswith(ACCESS_CONTROL_PREFIX):
        raise ValueError("only the `#!::key=value,...` form of an SRT Access Control streamid is supported")
    pairs: dict[str, str] = {}
    for item in streamid[len(ACCESS_CONTROL_PREFIX):].split(","):
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"not a key=value pair: {item!r}")
        pairs.setdefault(key, value)
    return pairs


def streamid_rejection(streamid: str | None, stream_key: str, key_is_passphrase: bool = False) -> Rejection | None:
    """Why a caller with this streamid may not publish, or None when it may: the streamid is the
    stream key itself, or `#!::r=<key>,m=publish` (other keys ignored). A missing `m` is taken as a
    publish, as the Access Control guidelines allow for a listener with a single purpose; m=request
    (the caller wants to receive) and m=bidirectional are refused.

    `key_is_passphrase`: the listener's passphrase is the stream key, which libsrt checks after this
    (a caller without it is rejected): a caller may then give no streamid at all, and it should, since
    a streamid travels in the clear in the handshake and the passphrase never does."""
    if not streamid and key_is_passphrase:
        return None
    if not streamid or len(streamid) > MAX_STREAMID:
        return Rejection.FORBIDDEN
    try:
        pairs = parse_access_control(streamid)
    except ValueError:
        return Rejection.BAD_REQUEST
    resource = streamid if pairs is None else pairs.get("r", "")
    if not secrets.compare_digest(resource.encode(), stream_key.encode()):
        return Rejection.FORBIDDEN
    if pairs is not None and pairs.get("m", "publish") != "publish":
        return Rejection.BAD_MODE
    return None


class SrtUnavailable(Exception):
    """libsrt cannot be loaded: SRT ingest can never work in this image."""


_LISTEN_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int, ctypes.c_void_p,
                                    ctypes.c_char_p)


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    int32, c_int, void_p = ctypes.c_int32, ctypes.c_int, ctypes.c_void_p
    signatures: dict[str, tuple[object, list[object]]] = {
        "srt_startup": (c_int, []),
        "srt_create_socket": (int32, []),
        "srt_setsockflag": (c_int, [int32, c_int, void_p, c_int]),
        "srt_bind": (c_int, [int32, void_p, c_int]),
        "srt_listen": (c_int, [int32, c_int]),
        "srt_listen_callback": (c_int, [int32, _LISTEN_CALLBACK, void_p]),
        "srt_accept": (int32, [int32, void_p, ctypes.POINTER(c_int)]),
        "srt_recvmsg": (c_int, [int32, ctypes.c_char_p, c_int]),
        "srt_close": (c_int, [int32]),
        "srt_setrejectreason": (c_int, [int32, c_int]),
        "srt_getlasterror": (c_int, [ctypes.POINTER(c_int)]),
        "srt_getlasterror_str": (ctypes.c_char_p, []),
        "srt_setloglevel": (None, [c_int]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(library, name)  # AttributeError: not a libsrt we can use
        function.restype = restype
        function.argtypes = argtypes
    return library


@functools.cache
def load_libsrt() -> ctypes.CDLL:
    """The first libsrt of LIBSRT_NAMES, else LIBSRT_SONAMES, that loads and starts."""
    found = [path for name in LIBSRT_NAMES if (path := ctypes.util.find_library(name))]
    return open_libsrt(tuple(dict.fromkeys(found + list(LIBSRT_SONAMES))))


def open_libsrt(candidates: tuple[str, ...]) -> ctypes.CDLL:
    for candidate in candidates:
        try:
            library = _declare(ctypes.CDLL(candidate))
        except (OSError, AttributeError):
            continue
        if library.srt_startup() < 0:
            continue
        # libsrt's own log is plain text on stderr, beside our JSON lines; the gate logs what matters.
        library.srt_setloglevel(LOG_CRIT)
        return library
    raise SrtUnavailable(f"SRT ingest needs libsrt (Debian: libsrt1.5-gnutls); none of {', '.join(candidates)} "
                         f"could be loaded")


def _sockaddr(host: str, port: int) -> tuple[bytes, int]:
    """The struct sockaddr of host:port, and its family."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    packed = socket.inet_pton(family, str(address[0]).split("%")[0])
    if family == socket.AF_INET6:
        _, _, flowinfo, scope_id = cast(tuple[str, int, int, int], address)
        header = struct.pack("=H", family) + struct.pack("!HI", port, flowinfo)
        return header + packed + struct.pack("=I", scope_id), family
    return struct.pack("=H", family) + struct.pack("!H", port) + packed + bytes(8), family


@dataclass
class Publisher:
    """One accepted SRT caller, relayed by its own thread once `relay` is called."""

    socket_id: int
    stop: threading.Event = field(default_factory=threading.Event)
    ended: asyncio.Future[str] | None = None  # resolves with why the relay ended


class SrtGate:
    """Listens on host:port; hands accepted publishers to the pipeline one at a time."""

    def __init__(self, library: ctypes.CDLL, host: str, port: int, stream_key: str, passphrase: str | None,
                 tap: Callable[[memoryview], None] | None = None) -> None:
        """`tap`: called from the relay's thread with each payload the publisher sends (the preview),
        in a buffer that the next payload overwrites."""
        self.lib = library
        self.tap = tap
        self.host = host
        self.port = port
        self.stream_key = stream_key
        self.passphrase = passphrase
        self._key_is_passphrase = passphrase is not None and secrets.compare_digest(passphrase.encode(),
                                                                                    stream_key.encode())
        self._listener = SRT_INVALID_SOCK
        self._lock = threading.Lock()
        self._publisher: Publisher | None = None  # accepted and not yet gone: the stream is taken
        self._closing = False
        self._accepted: asyncio.Queue[Publisher] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accept_thread: threading.Thread | None = None
        self._relays: set[threading.Thread] = set()
        # Held for the listener's lifetime: libsrt calls it from its own thread.
        self._callback = _LISTEN_CALLBACK(self._on_caller)

    # --- setup and teardown -------------------------------------------------------------------------

    def open(self) -> None:
        """Binds and listens (OSError when the port cannot be had), and starts accepting."""
        self._loop = asyncio.get_running_loop()
        address, family = _sockaddr(self.host, self.port)
        listener = self.lib.srt_create_socket()
        if listener == SRT_INVALID_SOCK:
            raise OSError(f"SRT: cannot create a socket: {self._last_error()}")
        self._listener = listener
        self._set(SRTO_TRANSTYPE, SRTT_LIVE)
        self._set(SRTO_LATENCY, LATENCY_MS)
        self._set(SRTO_RCVTIMEO, RECEIVE_TIMEOUT_MS)  # inherited by accepted sockets
        if self.passphrase:
            self._set(SRTO_PASSPHRASE, self.passphrase)
            self._set(SRTO_PBKEYLEN, PBKEYLEN)
        if family == socket.AF_INET6:
            self._set(SRTO_IPV6ONLY, 0)  # libsrt wants it explicit before binding ::
        if self.lib.srt_bind(listener, address, len(address)) == SRT_ERROR:
            raise OSError(f"SRT: cannot bind {self.host}:{self.port}: {self._last_error()}")
        if self.lib.srt_listen_callback(listener, self._callback, None) == SRT_ERROR:
            raise OSError(f"SRT: cannot set the listen callback: {self._last_error()}")
        if self.lib.srt_listen(listener, ACCEPT_BACKLOG) == SRT_ERROR:
            raise OSError(f"SRT: cannot listen on {self.host}:{self.port}: {self._last_error()}")
        self._accept_thread = threading.Thread(target=self._accept_loop, name="srt-accept", daemon=True)
        self._accept_thread.start()

    async def close(self) -> None:
        """Stops accepting and ends every publisher (a relay closes its pipe)."""
        with self._lock:
            self._closing = True  # from here the accept thread queues nobody
            publisher = self._publisher
        if publisher is not None:
            publisher.stop.set()
        if self._listener != SRT_INVALID_SOCK:
            self.lib.srt_close(self._listener)  # wakes the blocked srt_accept
        for thread in (self._accept_thread, *self._relays):
            if thread is not None:
                await asyncio.to_thread(thread.join, 2)
        while not self._accepted.empty():  # admitted while the last session was ending
            self.lib.srt_close(self._accepted.get_nowait().socket_id)

    def _set(self, option: int, value: int | str) -> None:
        if isinstance(value, str):
            data = value.encode()
            result = self.lib.srt_setsockflag(self._listener, option, data, len(data))
        else:
            number = ctypes.c_int(value)
            result = self.lib.srt_setsockflag(self._listener, option, ctypes.byref(number), ctypes.sizeof(number))
        if result == SRT_ERROR:
            raise OSError(f"SRT: cannot set socket option {option}: {self._last_error()}")

    def _last_error(self) -> str:
        message = self.lib.srt_getlasterror_str()
        return message.decode(errors="replace") if message else "unknown error"

    # --- callers ------------------------------------------------------------------------------------

    def _on_caller(self, _opaque: object, socket_id: int, _version: int, _peer: object, raw: bytes | None) -> int:
        """libsrt's listen callback, on its receiving thread, before the connection exists: 0 admits
        the caller (libsrt still checks the passphrase), -1 rejects it with the reason set."""
        try:
            streamid = raw.decode("utf-8", errors="replace") if raw is not None else None
            rejection = streamid_rejection(streamid, self.stream_key, self._key_is_passphrase)
            with self._lock:
                if rejection is None and (self._publisher is not None or self._closing):
                    rejection = Rejection.CONFLICT
            if rejection is None:
                return 0
            log.warning("refused an SRT caller: %s", _REJECTION_LOG[rejection])
            self.lib.srt_setrejectreason(socket_id, int(rejection))
        except Exception:  # an exception must not cross into libsrt
            log.exception("SRT listen callback failed; refusing the caller")
        return -1

    def _accept_loop(self) -> None:
        retry = ACCEPT_RETRY_SECONDS
        while True:
            socket_id = self.lib.srt_accept(self._listener, None, None)
            if socket_id == SRT_INVALID_SOCK:
                with self._lock:
                    if self._closing:
                        return
                log.warning("SRT accept failed (trying again in %.1fs): %s", retry, self._last_error())
                time.sleep(retry)  # a failing listener must neither spin nor flood the log
                retry = min(retry * 2, ACCEPT_RETRY_MAX_SECONDS)
                continue
            retry = ACCEPT_RETRY_SECONDS
            publisher = Publisher(socket_id)
            with self._lock:
                # Two callers can pass the callback together, before either is accepted.
                taken = self._publisher is not None or self._closing
                if not taken:
                    self._publisher = publisher
            if taken:
                log.warning("closed a second SRT publisher that joined at the same moment as the first")
                self.lib.srt_close(socket_id)
                continue
            log.info("SRT publisher connected")
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._accepted.put_nowait, publisher)

    async def next_publisher(self) -> Publisher:
        return await self._accepted.get()

    # --- relaying -----------------------------------------------------------------------------------

    async def relay(self, publisher: Publisher, pipe: int) -> str:
        """Copies the publisher's payload into `pipe` until it leaves, the reader goes away, or a
        cancel; always closes the pipe and the SRT socket. Returns why it ended."""
        loop = asyncio.get_running_loop()
        publisher.ended = loop.create_future()
        thread = threading.Thread(target=self._relay, args=(publisher, pipe, loop), name="srt-relay", daemon=True)
        self._relays.add(thread)
        try:
            thread.start()
        except BaseException:  # no relay: the pipe and the caller end here, and the stream is free again
            self._relays.discard(thread)
            os.close(pipe)
            self.lib.srt_close(publisher.socket_id)
            with self._lock:
                if self._publisher is publisher:
                    self._publisher = None
            raise
        try:
            return await asyncio.shield(publisher.ended)
        except asyncio.CancelledError:
            publisher.stop.set()
            await asyncio.shield(publisher.ended)
            raise
        finally:
            self._relays.discard(thread)

    def _relay(self, publisher: Publisher, pipe: int, loop: asyncio.AbstractEventLoop) -> None:
        buffer = ctypes.create_string_buffer(RECEIVE_BUFFER_BYTES)
        error = ctypes.c_int()
        reason = "stopped"
        try:
            while not publisher.stop.is_set():
                size = self.lib.srt_recvmsg(publisher.socket_id, buffer, len(buffer))
                if size == SRT_ERROR:
                    code = self.lib.srt_getlasterror(ctypes.byref(error))
                    if code in (SRT_EASYNCRCV, SRT_ETIMEOUT):
                        continue  # nothing within the receive timeout: look at the stop flag again
                    reason = f"publisher left ({self._last_error()})"
                    break
                view = memoryview(buffer)[:size]
                if self.tap is not None:
                    self.tap(view)
                while view:
                    view = view[os.write(pipe, view):]
        except OSError as failure:  # the pipe's reader (ffmpeg) is gone
            reason = f"ffmpeg stopped reading ({failure.strerror})"
        finally:
            with contextlib.suppress(OSError):
                os.close(pipe)
            self.lib.srt_close(publisher.socket_id)
            with self._lock:
                if self._publisher is publisher:
                    self._publisher = None
            log.info("SRT session ended: %s", reason)
            with contextlib.suppress(RuntimeError):  # the loop is already closed at exit
                loop.call_soon_threadsafe(_settle, publisher.ended, reason)


def _settle(future: asyncio.Future[str] | None, result: str) -> None:
    if future is not None and not future.done():
        future.set_result(result)


_REJECTION_LOG = {
    Rejection.BAD_REQUEST: "unreadable streamid",
    Rejection.FORBIDDEN: "the streamid does not carry the stream key",
    Rejection.BAD_MODE: "the streamid asks to receive (m=request), not to publish",
    Rejection.CONFLICT: "another publisher is on the stream",
}
