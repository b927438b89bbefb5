"""The operator's work queue: coalescing, one worker per key, delays, and urgent keys first."""

from __future__ import annotations

import asyncio

from onair.operator.workqueue import WorkQueue


async def drain(queue: WorkQueue[str], seen: list[str]) -> asyncio.Task[None]:
    """One worker recording the order in which keys are processed."""
    async def process(key: str) -> None:
        seen.append(key)

    return asyncio.create_task(queue.run_workers(1, process))


async def test_a_key_named_many_times_is_processed_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    seen: list[str] = []
    task = await drain(queue, seen)
    await asyncio.sleep(0.05)
    task.cancel()
    assert seen == ["a", "b"]


async def test_a_key_changed_while_processed_runs_again_afterwards_never_twice_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    running = 0
    most = 0
    seen: list[str] = []

    async def process(key: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        seen.append(key)
        if len(seen) == 1:
            queue.add("a")  # an event arrives while "a" is being processed
        await asyncio.sleep(0.02)
        running -= 1

    queue.add("a")
    task = asyncio.create_task(queue.run_workers(4, process))
    await asyncio.sleep(0.2)
    task.cancel()
    assert seen == ["a", "a"] and most == 1


async def test_urgent_keys_go_before_the_waiting_ones() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("new-1", "new-2", "new-3"):
        queue.add(key)
    queue.add("running", urgent=True)
    queue.add("new-2", urgent=True)  # already waiting: moves up, still once
    seen: list[str] = []
    task = await drain(queue, seen)
    await asyncio.sleep(0.05)
    task.cancel()
    assert seen == ["running", "new-2", "new-1", "new-3"]
    assert len(queue) == 0


async def test_a_delayed_key_waits_and_the_earliest_wake_up_wins() -> None:
    queue: WorkQueue[str] = WorkQueue()
    seen: list[str] = []
    task = await drain(queue, seen)
    queue.add_after("a", 0.3)
    queue.add_after("a", 0.05)  # earlier: wins
    queue.add_after("a", 1.0)  # later: ignored
    await asyncio.sleep(0.02)
    assert seen == []
    await asyncio.sleep(0.1)
    assert seen == ["a"]
    await asyncio.sleep(0.3)
    task.cancel()
    queue.close()
    assert seen == ["a"]
