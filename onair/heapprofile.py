"""An opt-in memory report, to find what holds a long-running program's memory in a real run.

With ONAIR_HEAP_PROFILE set to a file path, each SIGUSR1 appends to that file: the resident size,
glibc's heap (in use, and free but kept), CPython's small-object allocator (arenas held, blocks in
use), and the live objects by type. That much is cheap and tells held objects from a fragmented
heap. With ONAIR_HEAP_PROFILE_TRACE=1 as well, tracemalloc records every allocation from the start
(several times slower: for diagnosis only) and the report adds the lines whose allocations are still
held, biggest first, and the call chains of the biggest.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import os
import re
import signal
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

ENV = "ONAIR_HEAP_PROFILE"
TRACE_ENV = "ONAIR_HEAP_PROFILE_TRACE"
FRAMES = 12
TOP_LINES = 40
TOP_CHAINS = 8
TOP_TYPES = 30


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc_heap() -> str:
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return "glibc heap: unknown"
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    mib = 2**20
    return (f"glibc heap: {info.arena / mib:.1f} MiB in arenas ({info.uordblks / mib:.1f} in use, "
            f"{info.fordblks / mib:.1f} free), {info.hblkhd / mib:.1f} MiB mmapped")


def _pymalloc() -> str:
    """The totals of sys._debugmallocstats (it writes to the C stderr)."""
    with tempfile.TemporaryFile("w+") as capture:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read()
    wanted = ("# arenas allocated current", "# bytes in allocated blocks", "# bytes in available blocks",
              "Total", "# bytes lost to")
    return "pymalloc: " + "; ".join(re.sub(r"\s+", " ", line.strip()) for line in text.splitlines()
                                    if line.startswith(wanted))


def _resident() -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return line
    return "VmRSS: unknown"


def _objects_by_type() -> list[str]:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return [f"{sizes[name] / 2**20:8.2f} MiB {counts[name]:9d}  {name}" for name, _ in sizes.most_common(TOP_TYPES)]


def _traced(snapshot: tracemalloc.Snapshot) -> list[str]:
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"traced {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB)"]
    for stat in snapshot.statistics("lineno")[:TOP_LINES]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks  {frame.filename}:{frame.lineno}")
    for stat in snapshot.statistics("traceback")[:TOP_CHAINS]:
        lines.append(f"-- {stat.size / 2**20:.2f} MiB in {stat.count} blocks:")
        lines.extend(f"     {line}" for line in stat.traceback.format(most_recent_first=True))
    return lines


def report() -> str:
    lines = [f"== {dt.datetime.now(dt.UTC):%H:%M:%S} {_resident()}", _glibc_heap(), _pymalloc(),
             "live objects tracked by the collector, by type (sys.getsizeof, shallow):", *_objects_by_type()]
    if tracemalloc.is_tracing():
        lines.extend(_traced(tracemalloc.take_snapshot()))
    return "\n".join(lines) + "\n"


def install_from_env() -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    if os.environ.get(TRACE_ENV) == "1":
        tracemalloc.start(FRAMES)

    def dump(*_: object) -> None:
        with Path(path).open("a") as out:
            out.write(report())

    signal.signal(signal.SIGUSR1, dump)
