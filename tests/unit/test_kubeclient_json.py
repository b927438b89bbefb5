"""The Kubernetes client's JSON parsing: pydantic-core's parser, with json.loads for what it refuses."""

from __future__ import annotations

import json

import pytest

from onair.kubeclient import parse_json

LIVE_JOB = {
    "apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
    "metadata": {"name": "c0ffee00-0000-4000-8000-000000000001", "namespace": "team-a", "resourceVersion": "981",
                 "generation": 3, "labels": {"onair.dev/id": "17"}, "annotations": {}},
    "spec": {"description": "Café — 東京 🎥", "dvrWindowSeconds": 7200, "input": {"serverType": "RTMP"},
             "destination": {"bucket": "media", "path": ""}},
    "status": {"phase": "Live", "stats": {"fps": 29.97, "bitrate": 12_345_678_901_234_567_890, "dropped": 0},
               "conditions": [{"type": "Ready", "status": "True", "message": None}], "online": True},
}


def test_an_object_reads_as_json_loads_reads_it() -> None:
    for text in (json.dumps(LIVE_JOB), json.dumps(LIVE_JOB, ensure_ascii=False, indent=2)):
        assert parse_json(text.encode()) == json.loads(text) == LIVE_JOB


def test_a_watch_event_line_with_its_newline() -> None:
    line = json.dumps({"type": "MODIFIED", "object": LIVE_JOB}).encode() + b"\n"
    assert parse_json(line) == {"type": "MODIFIED", "object": LIVE_JOB}


def test_a_lone_surrogate_escape_still_reads() -> None:
    # pydantic-core refuses it; json.loads keeps it as Python does
    assert parse_json(b'{"description": "\\ud800"}') == {"description": "\ud800"}


@pytest.mark.parametrize("text", [b"404 page not found", b'{"kind": "Status"', b"\xff\xfe"])
def test_what_is_not_json_raises_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(text)
