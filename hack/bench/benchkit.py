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
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
