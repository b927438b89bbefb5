"""Reads each running encoder's /status. The encoder needs no API access at all (tight RBAC): the
operator asks it, once a second, and a change wakes the job's reconcile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from onair.operator.metrics import ENCODER_POLLS

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
    failures: int = 0
    next_poll: float = 0.0


class EncoderReports:
    def __init__(self, interval: float, concurrency: int = 64, timeout: float = 0.8) -> None:
        self.interval = interval
        self.timeout = timeout
        self._targets: dict[str, Target] = {}
        self._semaphore = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    def track(self, pod_uid: str, url: str, on_change: Callable[[], None], ready: bool = False) -> None:
        """Poll the Pod's status URL. `ready`: its readiness probe (the encoder's /healthz) passes, so
        a target that has not answered so far is asked again at once instead of after its backoff."""
        target = self._targets.get(pod_uid)
        if target is None or target.url != url:
            self._targets[pod_uid] = Target(url=url, on_change=on_change)
        elif ready and target.failures:
            target.next_poll = 0.0

    def forget(self, pod_uid: str) -> None:
        self._targets.pop(pod_uid, None)

    def report(self, pod_uid: str) -> dict[str, Any] | None:
        target = self._targets.get(pod_uid)
        return None if target is None else target.report

    async def send(self, pod_uid: str, command: str, control_key: str) -> bool:
        """POST /<command> (finish, pause, resume) to the encoder with the job's control key; True when
        it answered 2xx."""
        target = self._targets.get(pod_uid)
        if target is None:
            return False
        base = target.url.rsplit("/", 1)[0]
        try:
            async with self.session.post(f"{base}/{command}", headers={"Authorization": f"Bearer {control_key}"},
                                         timeout=aiohttp.ClientTimeout(total=2)) as response:
                ok = 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False
        if ok:
            target.next_poll = 0.0  # read the new state right away
        return ok

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                limit=0, keepalive_timeout=KEEPALIVE_INTERVALS * self.interval))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            due = [(uid, t) for uid, t in self._targets.items() if t.next_poll <= started]
            if due:
                await asyncio.gather(*(self._poll(uid, t) for uid, t in due))
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    async def _poll(self, pod_uid: str, target: Target) -> None:
        async with self._semaphore:
            try:
                async with self.session.get(target.url, timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                    report = await response.json() if response.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                report = None
        if report is None:
            ENCODER_POLLS.labels("unreachable").inc()
            target.failures += 1
            # An encoder that does not answer (starting, or a simulated Pod) is asked less and less often.
            target.next_poll = time.monotonic() + min(self.interval * 2**target.failures, MAX_BACKOFF_SECONDS)
            return
        ENCODER_POLLS.labels("ok").inc()
        target.failures = 0
        target.next_poll = time.monotonic() + self.interval
        if self._targets.get(pod_uid) is target and report != target.report:
            target.report = report
            target.on_change()
