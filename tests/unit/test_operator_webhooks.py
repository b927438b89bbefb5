import time

from onair.operator.controller import merge_patch
from onair.operator.webhooks import build_payload, event_name, sign, verify
from onair.phases import LiveJobPhase, RecordJobPhase


def test_signature_verifies_and_detects_tampering_and_replay() -> None:
    body = b'{"event":"live"}'
    now = int(time.time())
    header = sign("s3cret", body, now)
    assert header.startswith(f"t={now},v1=")
    assert verify("s3cret", body, header)
    assert not verify("other", body, header)
    assert not verify("s3cret", body + b" ", header)
    assert not verify("s3cret", body, sign("s3cret", body, now - 3600))
    assert not verify("s3cret", body, "garbage")


def test_events_named_as_the_issue_lists_them() -> None:
    assert event_name(LiveJobPhase.PROVISIONING, LiveJobPhase.WAITING_FOR_INPUT) == "started"
    assert event_name(LiveJobPhase.WAITING_FOR_INPUT, LiveJobPhase.LIVE) == "live"
    assert event_name(LiveJobPhase.LIVE, LiveJobPhase.RECONNECTING) == "disconnected"
    assert event_name(LiveJobPhase.STOPPING, LiveJobPhase.OFFLINE) == "stopped"
    assert event_name(None, LiveJobPhase.PROVISIONING) is None
    assert event_name(RecordJobPhase.INITIAL, RecordJobPhase.STARTED) == "record_started"
    assert event_name(RecordJobPhase.PAUSED, RecordJobPhase.STARTED) == "resumed"
    assert event_name(RecordJobPhase.STARTED, RecordJobPhase.PAUSED) == "paused"
    assert event_name(RecordJobPhase.STARTED, RecordJobPhase.COMPLETED) == "completed"


def test_payload_names_the_job() -> None:
    job = {"kind": "LiveJob", "metadata": {"name": "n", "namespace": "ns", "uid": "u",
                                             "labels": {"onair.dev/project-id": "p"}}}
    payload = build_payload("live", job, "Live", "input connected")
    assert payload["type"] == "livejob.live"
    assert payload["job"] == {"kind": "LiveJob", "namespace": "ns", "name": "n", "uid": "u", "projectId": "p",
                              "phase": "Live"}


def test_merge_patch_removes_and_replaces() -> None:
    old = {"phase": "Live", "urls": {"a": 1, "b": 2}, "outputs": [1, 2], "gone": True}
    new = {"phase": "Live", "urls": {"a": 1, "c": 3}, "outputs": [1]}
    assert merge_patch(old, new) == {"urls": {"b": None, "c": 3}, "outputs": [1], "gone": None}
    assert merge_patch(old, old) == {}
