"""A coalescing work queue with delays, as controller-runtime's: a key waiting to be processed is
queued once however many events name it, and a key is never processed by two workers at once.

Keys added as `urgent` (a change in something already running: a job's Pod, its encoder's report) go
before the others (new jobs, their own status writes): in a burst of new jobs the ones already
started reach their next state without waiting behind the whole burst, and an encoder's report still
reaches the status within its two seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
URGENT, NORMAL = 0, 1


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        # (priority, order, key); an entry whose key was queued again with a higher priority, or
        # already taken, is stale and skipped.
        self._ready: asyncio.PriorityQueue[tuple[int, int, K]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._queued: dict[K, int] = {}  # key -> the priority it waits with
        self._active: set[K] = set()
        self._dirty: dict[K, int] = {}  # re-queued while being processed -> priority
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._wake_at: dict[K, float] = {}

    def add(self, key: K, urgent: bool = False) -> None:
        priority = URGENT if urgent else NORMAL
        if key in self._active:
            self._dirty[key] = min(priority, self._dirty.get(key, NORMAL))
            return
        queued = self._queued.get(key)
        if queued is None or priority < queued:
            self._queued[key] = priority
            self._ready.put_nowait((priority, next(self._order), key))

    def add_after(self, key: K, delay: float, urgent: bool = False) -> None:
        """Process `key` after `delay` seconds; an earlier wake-up already set wins."""
        if delay <= 0:
            self.add(key, urgent)
            return
        when = time.monotonic() + delay
        if key in self._timers and self._wake_at[key] <= when:
            return
        if key in self._timers:
            self._timers[key].cancel()
        self._wake_at[key] = when
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key, urgent)

    def _fire(self, key: K, urgent: bool) -> None:
        self._timers.pop(key, None)
        self._wake_at.pop(key, None)
        self.add(key, urgent)

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, key: object) -> bool:
        """Whether `key` waits to be processed, now or after a delay."""
        return key in self._queued or key in self._timers

    async def run_workers(self, count: int, process: Callable[[K], Awaitable[None]]) -> None:
        await asyncio.gather(*(self._worker(process) for _ in range(count)))

    async def _worker(self, process: Callable[[K], Awaitable[None]]) -> None:
        while True:
            priority, _, key = await self._ready.get()
            if self._queued.get(key) != priority:
                continue  # stale
            del self._queued[key]
            self._active.add(key)
            try:
                await process(key)
            finally:
                self._active.discard(key)
                again = self._dirty.pop(key, None)
                if again is not None:
                    self.add(key, urgent=again == URGENT)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
