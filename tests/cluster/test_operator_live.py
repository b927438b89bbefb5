"""End to end on the process node: the operator runs the real encoder, a real ffmpeg publishes a
test pattern over RTMP, and the job's phase follows the ingest within 2 s; the HLS lands in S3."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster.conftest import (
    STATUS_PROGRESS_INTERVAL,
    get_job,
    own_job_namespace,
    start_operator,
    stop_operator,
    wait_phase,
)
from cluster.test_operator_lifecycle import create_live_job, encoder_pods, patch_spec
from kubernetes import client, watch
from livepreview import receive_preview
from localplatform.platform import PlatformInfo
from waiting import wait_until

from onair.encoder.playlist import parse_media_playlist

REPORT_DEADLINE = dt.timedelta(seconds=2)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def timing(job: dict[str, Any], phase: str, after: dt.datetime) -> dt.datetime | None:
    times = [parse(t["time"]) for t in job["status"]["timings"] if t["phase"] == phase]
    later = [t for t in times if t >= after - dt.timedelta(seconds=1)]
    return later[-1] if later else None


def ingest_url(kube: client.ApiClient, namespace: str, status: dict[str, Any]) -> str:
    key = base64.b64decode(client.CoreV1Api(kube).read_namespaced_secret(
        status["streamKeySecret"], namespace).data["streamKey"]).decode()
    return str(status["urls"]["rtmpServer"]) + key


def test_phases_follow_the_ingest_within_two_seconds(kube: client.ApiClient, job_namespace: str, s3: Any,
                                                     platform: PlatformInfo, publisher: Any) -> None:
    create_live_job(kube, job_namespace, "studio")
    job = wait_phase(kube, job_namespace, "studio", "WaitingForInput", timeout=90)
    ingest = ingest_url(kube, job_namespace, job["status"])

    first = publisher(ingest)
    job = wait_phase(kube, job_namespace, "studio", "Live", timeout=60)
    assert job["status"]["message"] == "publisher connected"  # the encoder's word on its input
    # The statistics follow once the encoder has probed the stream.
    statistics = wait_until(
        lambda: (get_job(kube, job_namespace, "studio")["status"].get("statistics") or {}).get("width") and
        get_job(kube, job_namespace, "studio")["status"]["statistics"], 30, "the ingest statistics")
    assert (statistics["width"], statistics["height"]) == (640, 360)
    assert statistics["videoCodecId"] == 7  # H.264, in FLV's numbering

    dropped_at = now()
    first.kill()
    first.wait()
    job = wait_phase(kube, job_namespace, "studio", "Reconnecting", timeout=30)
    reconnecting = timing(job, "Reconnecting", dropped_at)
    assert reconnecting is not None and reconnecting - dropped_at <= REPORT_DEADLINE
    assert job["status"]["message"] == "input dropped; waiting for it to come back"

    publisher(ingest)
    job = wait_phase(kube, job_namespace, "studio", "Live", timeout=60)
    phases = [t["phase"] for t in job["status"]["timings"]]
    assert phases[-3:] == ["Live", "Reconnecting", "Live"]
    # The live preview the status names (a console's player) plays the publisher's stream.
    assert len(receive_preview(job["status"]["urls"]["webSocketConnection"], 100_000)) >= 100_000

    prefix = "live/studio/"

    def uploaded() -> set[str]:
        listing = s3.list_objects_v2(Bucket=platform.s3_bucket, Prefix=prefix)
        return {o["Key"] for o in listing.get("Contents", [])}

    keys = wait_until(lambda: (k := uploaded()) >= {f"{prefix}master.m3u8", f"{prefix}360p/index.m3u8",
                                                      f"{prefix}180p/index.m3u8"} and k, 60, "the HLS in S3")
    assert any(k.startswith(f"{prefix}360p/") and not k.endswith(".m3u8") for k in keys)
    # The encoder's health reaches the job's status: how fast its segments reach the bucket.
    health = wait_until(lambda: (get_job(kube, job_namespace, "studio")["status"].get("encoder") or {}).get(
        "lastUploadLatencyMs") is not None and get_job(kube, job_namespace, "studio")["status"]["encoder"], 30,
        "the encoder's health in the status")
    assert 0 < health["lastUploadLatencyMs"] < 5000 and health["droppedFrames"] >= 0
    master = s3.get_object(Bucket=platform.s3_bucket, Key=f"{prefix}master.m3u8")["Body"].read().decode()
    assert "RESOLUTION=640x360" in master and "RESOLUTION=320x180" in master

    patch_spec(kube, job_namespace, "studio", {"online": False})
    job = wait_phase(kube, job_namespace, "studio", "Offline", timeout=60)
    assert [t["phase"] for t in job["status"]["timings"]][-2:] == ["Stopping", "Offline"]
    assert get_job(kube, job_namespace, "studio")["status"].get("resourceName") is None
    # The operator had the encoder finish (a command only the job's control key opens), not merely
    # SIGTERMed it: players see the stream end.
    media = s3.get_object(Bucket=platform.s3_bucket, Key=f"{prefix}360p/index.m3u8")["Body"].read().decode()
    assert "#EXT-X-ENDLIST" in media
    # The second session was cut short; it leaves no empty segment behind (players stall on those).
    segments = parse_media_playlist(media).segments
    assert segments and all(segment.duration > 0 for segment in segments), media


def test_a_job_whose_bucket_is_missing_says_so_and_does_not_claim_to_wait_for_input(
        kube: client.ApiClient, job_namespace: str) -> None:
    create_live_job(kube, job_namespace, "nobucket", destination={"bucket": "no-such-bucket", "path": "live/x"})

    def told() -> dict[str, Any] | None:
        status = get_job(kube, job_namespace, "nobucket").get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        storage = conditions.get("StorageAvailable") or {}
        return status if storage.get("reason") == "BucketNotFound" else None

    status = wait_until(told, 90, "the job to name its missing bucket")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["StorageAvailable"]["status"] == "False"
    assert "no-such-bucket" in conditions["StorageAvailable"]["message"]
    assert status["phase"] == "Provisioning" and "no-such-bucket" in status["message"]
    assert conditions["EncoderRunning"]["status"] == "True"
    assert "WaitingForInput" not in [t["phase"] for t in status["timings"]]


def segments_written(job: dict[str, Any]) -> int:
    return sum(int(output.get("segmentsWritten", 0)) for output in job.get("status", {}).get("outputs", []))


def test_a_live_jobs_progress_is_written_at_most_once_an_interval(kube: client.ApiClient, job_namespace: str,
                                                                   publisher: Any) -> None:
    """The encoder's counters move every second while it is live (2 s segments, 2 renditions); the
    job's status follows them, but is written at most every status-progress interval."""
    create_live_job(kube, job_namespace, "ticker")
    job = wait_phase(kube, job_namespace, "ticker", "WaitingForInput", timeout=90)
    publisher(ingest_url(kube, job_namespace, job["status"]))
    wait_phase(kube, job_namespace, "ticker", "Live", timeout=60)
    start = wait_until(lambda: segments_written(job := get_job(kube, job_namespace, "ticker")) > 0 and job, 30,
                       "segments in the status")

    window = 4 * STATUS_PROGRESS_INTERVAL
    writes = [event["object"] for event in watch.Watch().stream(
        client.CustomObjectsApi(kube).list_namespaced_custom_object, "onair.dev", "v1alpha1", job_namespace,
        "livejobs", field_selector="metadata.name=ticker", resource_version=start["metadata"]["resourceVersion"],
        timeout_seconds=int(window)) if event["type"] == "MODIFIED"]
    assert [w["status"]["phase"] for w in writes] == ["Live"] * len(writes)
    assert 2 <= len(writes) <= window / STATUS_PROGRESS_INTERVAL + 1, \
        f"{len(writes)} status writes in {window:.0f} s"
    assert segments_written(writes[-1]) > segments_written(start), "the progress still reaches the status"


@pytest.fixture
def slow_restart_namespace(kube: client.ApiClient, platform: PlatformInfo, crds: None, operator_namespace: str,
                           run_root: Path) -> Iterator[str]:
    """A namespace (c-*) with its own operator, whose restart back-off (two minutes) a test acts within."""
    with own_job_namespace(kube, platform, "c") as namespace:
        running = start_operator(platform, run_root / "slow-restart-operator", name="slow-restart-operator",
                                 ONAIR_WATCH_NAMESPACES=json.dumps(["c-*"]), ONAIR_RESTART_BACKOFF_SECONDS="120")
        try:
            yield namespace
        finally:
            stop_operator(running)


def test_a_job_switched_off_while_its_evicted_encoder_waits_to_restart_has_its_playlists_closed(
        kube: client.ApiClient, slow_restart_namespace: str, s3: Any, platform: PlatformInfo, publisher: Any) -> None:
    namespace = slow_restart_namespace
    create_live_job(kube, namespace, "relay")
    job = wait_phase(kube, namespace, "relay", "WaitingForInput", timeout=90)
    publisher(ingest_url(kube, namespace, job["status"]))
    wait_phase(kube, namespace, "relay", "Live", timeout=60)
    key = "live/relay/180p/index.m3u8"

    def playlist() -> Any:
        try:
            return parse_media_playlist(s3.get_object(Bucket=platform.s3_bucket, Key=key)["Body"].read().decode())
        except s3.exceptions.NoSuchKey:
            return parse_media_playlist("#EXTM3U\n")  # no segment yet

    wait_until(lambda: len(playlist().segments) >= 2, 60, "segments in the bucket")
    evicted = job["status"]["resourceName"]
    client.CoreV1Api(kube).delete_namespaced_pod(evicted, namespace)  # as an eviction: a bare SIGTERM
    wait_until(lambda: (j := get_job(kube, namespace, "relay")["status"]).get("restarts") == 1
               and j["phase"] == "Provisioning", 60, "the restart's back-off")
    wait_until(lambda: evicted not in {p.metadata.name for p in encoder_pods(kube, namespace, "relay")}
               and not client.CoreV1Api(kube).list_namespaced_pod(
                   namespace, field_selector=f"metadata.name={evicted}").items, 60, "the evicted encoder to end")
    left = playlist()
    assert left.segments and not left.ended  # what players see: a stream that stalls, never ends

    patch_spec(kube, namespace, "relay", {"online": False})
    job = wait_phase(kube, namespace, "relay", "Offline", timeout=90)
    stopping = [t for t in job["status"]["timings"] if t["phase"] == "Stopping"][-1]
    assert "is made to close the playlists an encoder that died left open" in stopping["comment"]
    closed = playlist()
    assert closed.ended
    assert [(s.sequence, s.uri) for s in closed.segments] == [(s.sequence, s.uri) for s in left.segments]
    assert not encoder_pods(kube, namespace, "relay")  # nothing runs for a job that is off


@pytest.mark.parametrize(("name", "spec", "field"), [
    ("metadata", {"input": {"serverType": "HLS", "url": "http://169.254.169.254/latest/meta-data/live.m3u8"}},
     "spec.input.url"),
    # Only the installation's own S3 endpoint may be private: one a job names is held to public addresses.
    ("metadata-store", {"destination": {"bucket": "onair", "endpoint": "http://169.254.169.254:8333"}},
     "spec.destination.endpoint"),
])
def test_a_job_that_would_reach_the_cloud_metadata_address_fails_naming_the_field(
        kube: client.ApiClient, job_namespace: str, name: str, spec: dict[str, Any], field: str) -> None:
    """Its encoder refuses the address before any request (the operator here allows 127.0.0.0/8 only)."""
    create_live_job(kube, job_namespace, name, **spec)
    status = wait_phase(kube, job_namespace, name, "Failed", timeout=90)["status"]
    assert f"{field}: 169.254.169.254 is no public address" in status["message"], status
    assert status.get("restarts", 0) == 0  # a configuration that can never work is not retried
