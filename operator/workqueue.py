"""A coalescing work queue with delays, as controller-runtime's: a key waiting to be processed is
queued once however many events name it, and a key is never processed by two workers at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()  # re-queued while being processed
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._wake_at: dict[K, float] = {}

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Process `key` after `delay` seconds; an earlier wake-up already set wins."""
        if delay <= 0:
            self.add(key)
            return
        when = time.monotonic() + delay
        if key in self._timers and self._wake_at[key] <= when:
            return
        if key in self._timers:
            self._timers[key].cancel()
        self._wake_at[key] = when
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self._wake_at.pop(key, None)
        self.add(key)

    def __len__(self) -> int:
        return len(self._queued)

    async def run_workers(self, count: int, process: Callable[[K], Awaitable[None]]) -> None:
        await asyncio.gather(*(self._worker(process) for _ in range(count)))

    async def _worker(self, process: Callable[[K], Awaitable[None]]) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await process(key)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
