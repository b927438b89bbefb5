"""Reads each running encoder's /status. The encoder needs no API access at all (tight RBAC): the
operator asks it, and a change wakes the job's reconcile.

A running encoder holds each read until what the operator acts on changes, or until `wait` seconds
(the status progress interval) have passed (onair/statusread.py): it costs one request per wait,
and a state change arrives at once. An encoder that does not hold reads is read every `interval`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from onair.operator.metrics import ENCODER_POLLS
from onair.statusread import HEADLINE_HEADER, MAX_WAIT_SECONDS

# An encoder that never answers is asked every two minutes at most; one that turns ready is asked at once.
MAX_BACKOFF_SECONDS = 120.0
# An idle connection is closed after this many poll intervals: an encoder read every interval keeps
# its own, one backing off lets it go. With aiohttp's 15 s, the Pods that had not answered yet (or
# had no encoder behind their address, on kwok) held thousands of idle connections, 8 kB each.
KEEPALIVE_INTERVALS = 2.5


@dataclass
class Target:
    url: str
    on_change: Callable[[], None]
    report: dict[str, Any] | None = None
    headline: str | None = None  # the encoder's last headline; None: it does not hold reads (or never answered)
    failures: int = 0
    next_read: float = 0.0  # when the scheduler reads it next (while it has no follower)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the follower reads again now, whatever its pause
    follower: asyncio.Task[None] | None = None
    stopped: bool = False  # its Pod's container ended or is going: no more reads, the last report kept


class EncoderReports:
    """An encoder that has not answered yet (starting, or a Pod on a simulated node that never will)
    is read by one scheduler loop, with backoff, and costs nothing but its entry; one that answers
    gets a follower task that keeps reading it (held reads) until it stops answering."""

    def __init__(self, interval: float, wait: float = 0.0, concurrency: int = 64, timeout: float = 0.8) -> None:
        """`interval`: the scheduler's period, the shortest time between two reads of an encoder whose
        headline did not change, and the period of an encoder that does not hold reads; `wait`: how
        long an encoder may hold a read (0: reads are never held)."""
        self.interval = interval
        self.wait = min(wait, MAX_WAIT_SECONDS)
        self.timeout = timeout
        self._targets: dict[str, Target] = {}
        # Bounds the scheduler's reads (first reads, retries): thousands of Pods turning ready together
        # do not open thousands of connections at once. A follower's reads are not counted: each
        # running encoder always has one.
        self._semaphore = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    def track(self, pod_uid: str, url: str, on_change: Callable[[], None], ready: bool = False) -> None:
        """Read the Pod's status URL. `ready`: its readiness probe (the encoder's /healthz) passes, so
        a target that has not answered so far is asked again at once instead of after its backoff."""
        target = self._targets.get(pod_uid)
        if target is None or target.url != url or target.stopped:
            self.forget(pod_uid)
            self._targets[pod_uid] = Target(url=url, on_change=on_change)
        elif ready and target.failures:
            target.next_read = 0.0

    def stop(self, pod_uid: str) -> None:
        """No more reads of the Pod, whose container ended or is being stopped; its last report stays
        until `forget` (the Pod's deletion): what a finished recorder wrote is listed from it."""
        target = self._targets.get(pod_uid)
        if target is None:
            return
        target.stopped = True
        if target.follower is not None:
            target.follower.cancel()
            target.follower = None

    def forget(self, pod_uid: str) -> None:
        target = self._targets.pop(pod_uid, None)
        if target is not None and target.follower is not None:
            target.follower.cancel()

    def report(self, pod_uid: str) -> dict[str, Any] | None:
        target = self._targets.get(pod_uid)
        return None if target is None else target.report

    async def send(self, pod_uid: str, command: str, control_key: str, *, stopping_too: bool = False) -> bool:
        """POST /<command> (finish, pause, resume, finish-at?at=...) to the encoder with the job's control
        key; True when it answered 2xx. `stopping_too`: also to an encoder whose Pod is being stopped,
        which still runs (and still answers) through its grace period."""
        target = self._targets.get(pod_uid)
        if target is None or (target.stopped and not stopping_too):
            return False
        base = target.url.rsplit("/", 1)[0]
        try:
            async with self.session.post(f"{base}/{command}", headers={"Authorization": f"Bearer {control_key}"},
                                         timeout=aiohttp.ClientTimeout(total=2)) as response:
                ok = 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False
        if ok:  # read the new state right away (a held read returns by itself)
            target.wake.set()
            target.next_read = 0.0
        return ok

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=0, keepalive_timeout=KEEPALIVE_INTERVALS * self.interval))
        return self._session

    async def close(self) -> None:
        followers = [target.follower for target in self._targets.values() if target.follower is not None]
        self._targets.clear()
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        """The scheduler: reads the encoders that have no follower when they are due."""
        while True:
            started = time.monotonic()
            due = [(uid, t) for uid, t in self._targets.items()
                   if t.follower is None and not t.stopped and t.next_read <= started]
            if due:
                await asyncio.gather(*(self._first_read(uid, t) for uid, t in due))
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    async def _first_read(self, pod_uid: str, target: Target) -> None:
        async with self._semaphore:
            answer = await self._read(target, None)
        # A Pod forgotten (or tracked at a new address) meanwhile gets no follower.
        if self._took(pod_uid, target, *answer) and self._targets.get(pod_uid) is target and not target.stopped:
            target.follower = asyncio.create_task(self._follow(pod_uid, target), name=f"encoder-report-{pod_uid}")

    async def _follow(self, pod_uid: str, target: Target) -> None:
        while True:
            started = time.monotonic()
            seen = target.headline
            target.wake.clear()  # a wake from here on (a command sent) cuts the next pause
            if not self._took(pod_uid, target, *await self._read(target, seen)):
                target.follower = None  # back to the scheduler, and its backoff
                return
            if target.headline is None or target.headline == seen:
                # Not held (an encoder that does not hold reads, or one that has finished), or held
                # until `wait` ran out: no faster than one read an interval.
                await self._pause(target, self.interval - (time.monotonic() - started))

    def _took(self, pod_uid: str, target: Target, report: dict[str, Any] | None, headline: str | None) -> bool:
        """Takes in one read's answer (None: no answer); whether the encoder answered."""
        if report is None:
            ENCODER_POLLS.labels("unreachable").inc()
            target.failures += 1
            target.headline = None
            # An encoder that does not answer (starting, or a simulated Pod) is asked less and less often.
            target.next_read = time.monotonic() + min(self.interval * 2**target.failures, MAX_BACKOFF_SECONDS)
            return False
        ENCODER_POLLS.labels("ok").inc()
        target.failures = 0
        target.headline = headline
        if self._targets.get(pod_uid) is target and report != target.report:
            target.report = report
            target.on_change()
        return True

    async def _read(self, target: Target, seen: str | None) -> tuple[dict[str, Any] | None, str | None]:
        held = seen is not None and self.wait > 0
        params = {"wait": f"{self.wait:g}", "seen": seen} if held and seen is not None else None
        timeout = aiohttp.ClientTimeout(total=self.timeout + (self.wait if held else 0))
        try:
            async with self.session.get(target.url, params=params, timeout=timeout) as response:
                if response.status != 200:
                    return None, None
                return await response.json(), response.headers.get(HEADLINE_HEADER)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None, None

    @staticmethod
    async def _pause(target: Target, seconds: float) -> None:
        if seconds <= 0:
            return
        timer = asyncio.get_running_loop().call_later(seconds, target.wake.set)
        try:
            await target.wake.wait()
        finally:
            timer.cancel()
