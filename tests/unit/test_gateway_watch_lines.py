"""A watch cache reads the API server's event lines; the event of a write it already holds is not parsed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from onair.api_gateway.cache import MAX_STORED_AHEAD, WatchCache, sole_resource_version
from onair.kubeclient import ApiError


def job(version: int, phase: str = "Live", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
            "metadata": {"annotations": annotations or {}, "name": "job-a", "namespace": "team-a",
                         "resourceVersion": str(version)},
            "spec": {"online": True}, "status": {"phase": phase}}


def line(kind: str, obj: dict[str, Any]) -> bytes:
    """An event as the API server writes it: compact JSON, one per line."""
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


def test_the_resource_version_of_a_change_event_is_read_without_parsing() -> None:
    assert sole_resource_version(line("ADDED", job(41))) == "41"
    assert sole_resource_version(line("MODIFIED", job(42))) == "42"
    assert sole_resource_version(line("DELETED", job(43))) is None
    assert sole_resource_version(line("BOOKMARK", {"metadata": {"resourceVersion": "44"}})) is None
    # an annotation of that name makes the line's version ambiguous: it is parsed instead
    assert sole_resource_version(line("MODIFIED", job(45, annotations={"resourceVersion": "1"}))) is None
    assert sole_resource_version(json.dumps({"type": "ADDED", "object": job(46)}).encode()) is None  # not compact


def test_the_event_of_a_stored_write_is_skipped_and_others_are_applied() -> None:
    cache = WatchCache("livejobs", "/apis/onair.dev/v1alpha1/livejobs")
    written = job(50)
    assert cache.upsert(written)
    # Same resourceVersion: the same write. The cache keeps the object it holds (a different phase here
    # only shows that the line was not read) and moves its resume point on.
    cache.apply_line(line("ADDED", job(50, phase="Failed")))
    assert cache.get("team-a", "job-a") is written and cache.resource_version == "50"
    assert not cache.stored_ahead
    # A later change by someone else is parsed and applied.
    cache.apply_line(line("MODIFIED", job(51, phase="Failed")))
    assert cache.get("team-a", "job-a")["status"]["phase"] == "Failed"
    cache.apply_line(line("DELETED", job(52)))
    assert cache.get("team-a", "job-a") is None and cache.resource_version == "52"


def test_an_error_event_raises_its_status() -> None:
    cache = WatchCache("livejobs", "/apis/onair.dev/v1alpha1/livejobs")
    cache.upsert(job(60))
    with pytest.raises(ApiError) as raised:
        cache.apply_line(line("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"}))
    assert raised.value.status == 410


def test_stored_versions_are_bounded_and_a_relist_forgets_them() -> None:
    cache = WatchCache("livejobs", "/apis/onair.dev/v1alpha1/livejobs")
    for version in range(1, MAX_STORED_AHEAD + 11):
        cache.upsert(job(version))
    assert len(cache.stored_ahead) == MAX_STORED_AHEAD and "1" not in cache.stored_ahead
    cache.replace([job(5000)], "5000")
    assert not cache.stored_ahead
