"""The standard process and Python runtime metrics (`process_*`, `python_gc_*`, `python_info`) in a
program's own registry: each program keeps its metrics apart from the client library's global one, so
without this its memory, CPU, open files and collector pauses would go unreported."""

from __future__ import annotations

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.registry import CollectorRegistry


def register_process_metrics(registry: CollectorRegistry) -> None:
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
