"""What the benchmarks share: progress lines, a process's memory and CPU time, and a namespace
deletion that waits until the API server has finished it (so the next measurement does not share
the machine with a garbage collector deleting thousands of objects)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from onair.kubeclient import KubeClient


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    return _own_cpu_seconds(_stat_fields(Path(f"/proc/{pid}/stat").read_text()))


def cpu_wait_seconds(pid: int) -> float:
    """How long the process's threads have waited so far for a CPU while ready to run (the
    scheduler's run-queue wait, /proc/<pid>/task/*/schedstat): what a busy machine adds to its
    latency. NaN where the kernel does not keep it."""
    if not Path(f"/proc/{pid}/schedstat").exists():
        return float("nan")
    total = 0.0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[1]) / 1e9
        except OSError:  # the thread has exited since the listing
            continue
    return total


def pid_of(program: str) -> int | None:
    """The pid of the first running process named `program` (as in /proc/<pid>/stat)."""
    return next((pid for pid, (name, _) in process_table().items() if name == program), None)


def _stat_fields(stat: str) -> list[str]:
    """The fields of a /proc/<pid>/stat line after the parenthesised name (which may hold spaces)."""
    return stat[stat.rindex(")") + 2:].split()


def _own_cpu_seconds(fields: list[str]) -> float:
    """utime + stime of the fields of a /proc/<pid>/stat line after the parenthesised name."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_table() -> dict[int, tuple[str, list[str]]]:
    """Every process now: pid -> (its name, the fields of /proc/<pid>/stat after the name, from the
    state on: [1] is the parent, [11:15] utime, stime, cutime, cstime)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone since the listing
            continue
        table[int(stat.parent.name)] = (text[text.index("(") + 1:text.rindex(")")], _stat_fields(text))
    return table


def tree_cpu_seconds(pid: int) -> float:
    """The CPU time so far of `pid` and of its descendants, with the children each of them has reaped:
    what os.wait4 on `pid` will count of that time once the tree has exited."""
    table = process_table()
    tree, grew = {pid}, True
    while grew:
        found = {child for child, (_, fields) in table.items() if int(fields[1]) in tree} - tree
        tree |= found
        grew = bool(found)
    ticks = sum(sum(int(value) for value in table[member][1][11:15]) for member in tree if member in table)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_by_program() -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, summed by program name, so that a
    phase's share of each (API server, etcd, scheduler, operator...) is the difference of two calls."""
    totals: dict[str, float] = {}
    for pid, (name, fields) in process_table().items():
        if name.startswith("python"):
            name = _python_program(Path(f"/proc/{pid}")) or name
        totals[name] = totals.get(name, 0.0) + _own_cpu_seconds(fields)
    return totals


def _python_program(proc: Path) -> str | None:
    """`onair.operator.main` for `python -m onair.operator.main`, `operator_scale.py` for a script."""
    try:
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    return next((Path(arg).name for arg in argv[1:] if arg.endswith(".py")), None)


def cpu_used_since(before: dict[str, float], top: int = 6) -> str:
    """The programs that used the most CPU since `before` (a cpu_by_program() snapshot)."""
    after = cpu_by_program()
    used = sorted(((after[name] - before.get(name, 0.0), name) for name in after), reverse=True)
    return ", ".join(f"{name} {seconds:.1f}" for seconds, name in used[:top] if seconds >= 0.05)


PLATFORM_PROGRAMS = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kwok")


async def wait_until_platform_quiet(threshold: float = 0.1, timeout: float = 180) -> float:
    """Wait until the platform's programs (API server, etcd, controllers, kwok) together use less
    than `threshold` of a core over a second, so that a measurement does not share the machine with
    the after-effects of a burst (controllers and the API server still digesting thousands of new
    objects). Returns the seconds waited; gives up (and says so) after `timeout`."""
    started = time.monotonic()
    last_report = started
    before = cpu_by_program()
    while True:
        await asyncio.sleep(1)
        after = cpu_by_program()
        busy = sum(after.get(name, 0.0) - before.get(name, 0.0) for name in PLATFORM_PROGRAMS)
        before = after
        waited = time.monotonic() - started
        if busy < threshold:
            return waited
        if waited > timeout:
            say(f"the platform is still busy after {waited:.0f}s ({busy:.2f} of a core); measuring anyway")
            return waited
        if time.monotonic() - last_report > 10:
            say(f"waiting for the platform to go quiet: {busy:.2f} of a core after {waited:.0f}s")
            last_report = time.monotonic()


async def delete_namespace(kube: KubeClient, name: str, timeout: float = 900) -> None:
    await kube.delete(f"/api/v1/namespaces/{name}")
    started = time.monotonic()
    last_report = started
    while await kube.get_or_none(f"/api/v1/namespaces/{name}") is not None:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"namespace {name} still there after {timeout:.0f}s")
        if time.monotonic() - last_report > 10:
            say(f"waiting for namespace {name} to be deleted ({time.monotonic() - started:.0f}s)")
            last_report = time.monotonic()
        await asyncio.sleep(0.5)
