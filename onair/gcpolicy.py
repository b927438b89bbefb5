"""Garbage-collector and memory policy for the long-running programs (operator, gateway).

The gateway keeps tens of thousands of Kubernetes objects in memory as plain dicts and lists. CPython's
full (generation 2) collection walks every tracked container, so with 10,000 jobs one pause takes
100 to 400 ms, and every request or reconcile that arrives meanwhile waits. Those objects do not
form reference cycles: a replaced or deleted object is freed by reference counting at once. So after
a full collection its survivors are moved to the permanent generation (gc.freeze), and the next full
collections only walk what is newer. Some survivors may still be parts of cycles that become garbage
later (exceptions and their frames, say), so every FULL_WALK_SECONDS the permanent generation is
released and the next full collection walks everything once: one long pause every ten minutes
instead of one every few seconds under load. (The operator keeps its objects as packed JSON bytes,
which the collector does not walk, and makes much short-lived cyclic garbage (connections,
exceptions) that a frozen generation would keep: it does not freeze.)

A burst of events (thousands of objects parsed, handled and dropped) leaves the C heap with free
memory that glibc keeps for later: `release_free_memory_periodically` hands it back to the system with
malloc_trim, so that the resident size follows what the program holds rather than its peak.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

FULL_WALK_SECONDS = 600.0
TRIM_SECONDS = 30.0
_last_full_walk = time.monotonic()


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


_malloc_trim = _load_malloc_trim()
_trimmer: threading.Thread | None = None


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    global _last_full_walk
    if phase != "stop" or info.get("generation") != 2:
        return
    now = time.monotonic()
    if now - _last_full_walk >= FULL_WALK_SECONDS:
        _last_full_walk = now
        gc.unfreeze()
    else:
        gc.freeze()


def freeze_survivors_of_full_collections() -> None:
    """Install the policy (once per process; a second call changes nothing)."""
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def release_free_memory_periodically(seconds: float = TRIM_SECONDS) -> None:
    """Start a daemon thread returning the C heap's free pages to the system every `seconds` (a few
    milliseconds each time, outside the GIL); once per process."""
    global _trimmer
    if _malloc_trim is None or _trimmer is not None:
        return
    trim = _malloc_trim

    def run() -> None:
        while True:
            time.sleep(seconds)
            trim(0)

    _trimmer = threading.Thread(target=run, name="malloc-trim", daemon=True)
    _trimmer.start()


__all__ = ["freeze_survivors_of_full_collections", "release_free_memory_periodically"]
