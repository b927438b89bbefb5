"""Garbage-collector policy for the long-running programs (operator, gateway).

Both keep tens of thousands of Kubernetes objects in memory as plain dicts and lists. CPython's
full (generation 2) collection walks every tracked container, so with 10,000 jobs one pause takes
100 to 400 ms, and every request or reconcile that arrives meanwhile waits. Those objects do not
form reference cycles: a replaced or deleted object is freed by reference counting at once. So after
a full collection its survivors are moved to the permanent generation (gc.freeze), and the next full
collections only walk what is newer. Some survivors may still be parts of cycles that become garbage
later (exceptions and their frames, say), so every FULL_WALK_SECONDS the permanent generation is
released and the next full collection walks everything once: one long pause every ten minutes
instead of one every few seconds under load.
"""

from __future__ import annotations

import gc
import time
from typing import Any

FULL_WALK_SECONDS = 600.0
_last_full_walk = time.monotonic()


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


__all__ = ["freeze_survivors_of_full_collections"]
