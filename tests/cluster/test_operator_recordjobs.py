"""RecordJobs end to end on the process node: a clip cut from a LiveJob's stored segments, and a
recording of a stream URL that pauses, resumes and completes when its time range ends."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from cluster.conftest import get_job, wait_phase
from cluster.test_operator_lifecycle import create_live_job
from kubernetes import client
from localplatform.platform import PlatformInfo
from localplatform.processes import free_port
from waiting import wait_until

from onair.encoder.playlist import parse_media_playlist

API = ("onair.dev", "v1alpha1")


def create_record_job(kube: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        *API, namespace, "recordjobs", {"apiVersion": "onair.dev/v1alpha1", "kind": "RecordJob",
                                        "metadata": {"name": name}, "spec": spec})


def patch_record_job(kube: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube).patch_namespaced_custom_object(*API, namespace, "recordjobs", name, {"spec": spec})


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def objects(s3: Any, bucket: str, prefix: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}


def recorded_live_job(kube: client.ApiClient, namespace: str, name: str, publisher: Any) -> None:
    """A LiveJob that records (recording: true), Live with a publisher."""
    create_live_job(kube, namespace, name, recording=True)
    status = wait_phase(kube, namespace, name, "WaitingForInput", timeout=90)["status"]
    key = base64.b64decode(client.CoreV1Api(kube).read_namespaced_secret(
        status["streamKeySecret"], namespace).data["streamKey"]).decode()
    publisher(status["urls"]["rtmpServer"] + key)
    wait_phase(kube, namespace, name, "Live", timeout=60)


def test_clip_of_a_past_range_is_a_vod_playlist(kube: client.ApiClient, job_namespace: str, s3: Any,
                                                platform: PlatformInfo, publisher: Any) -> None:
    recorded_live_job(kube, job_namespace, "event", publisher)
    started = dt.datetime.now(dt.UTC)
    segments = wait_until(
        lambda: len(k := [o for o in objects(s3, platform.s3_bucket, "live/event/360p/") if o.endswith(".ts")]) >= 5
        and k, 90, "five stored segments")
    assert segments
    end = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    create_record_job(kube, job_namespace, "highlight", {
        "source": {"liveJobRef": "event"},
        "timeRange": {"start": stamp(started - dt.timedelta(seconds=30)), "end": stamp(end)},
        "output": {"bucket": platform.s3_bucket, "path": "clips/highlight"},
    })
    job = wait_phase(kube, job_namespace, "highlight", "Completed", timeout=90, plural="recordjobs")
    assert job["status"]["progress"] == 1.0
    media = s3.get_object(Bucket=platform.s3_bucket, Key="clips/highlight/360p/index.m3u8")["Body"].read().decode()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in media and "#EXT-X-ENDLIST" in media
    assert "clips/highlight/master.m3u8" in objects(s3, platform.s3_bucket, "clips/highlight/")
    assert job["status"]["files"][0]["key"] == "clips/highlight/master.m3u8"
    # the recorder's termination message, through its Pod's status
    ready = {c["type"]: c for c in job["status"]["conditions"]}["Ready"]
    assert ready["message"].startswith("recording complete: clip of ") and "segments written" in ready["message"]


def test_a_recording_that_follows_its_live_job_pauses_and_leaves_the_pause_out(
    kube: client.ApiClient, job_namespace: str, s3: Any, platform: PlatformInfo, publisher: Any
) -> None:
    recorded_live_job(kube, job_namespace, "match", publisher)
    start = dt.datetime.now(dt.UTC)
    create_record_job(kube, job_namespace, "second-half", {
        "source": {"liveJobRef": "match"},
        "timeRange": {"start": stamp(start)},
        "output": {"bucket": platform.s3_bucket, "path": "clips/second-half"},
    })
    wait_phase(kube, job_namespace, "second-half", "Started", timeout=60, plural="recordjobs")

    def stored_segment_starts() -> list[dt.datetime]:
        try:
            body = s3.get_object(Bucket=platform.s3_bucket, Key="live/match/360p/index.m3u8")["Body"].read().decode()
        except s3.exceptions.NoSuchKey:
            return []  # no segment yet
        return [segment.program_date_time for segment in parse_media_playlist(body).segments
                if segment.program_date_time is not None]

    # Something to record before the pause: a stored segment that begins in the range.
    wait_until(lambda: any(begun >= start for begun in stored_segment_starts()), 30, "a segment in the range")
    patch_record_job(kube, job_namespace, "second-half", {"paused": True})
    paused = wait_phase(kube, job_namespace, "second-half", "Paused", timeout=30, plural="recordjobs")["status"]
    assert [r.get("end") for r in paused["pausedRanges"]] == [None]
    # Paused while three segments of the LiveJob are stored: they begin, and end, inside the pause.
    paused_from = dt.datetime.fromisoformat(paused["pausedRanges"][0]["start"])
    wait_until(lambda: sum(begun >= paused_from for begun in stored_segment_starts()) >= 3, 30, "a paused stretch")
    patch_record_job(kube, job_namespace, "second-half", {"paused": False})
    resumed = wait_phase(kube, job_namespace, "second-half", "Started", timeout=30, plural="recordjobs")["status"]
    assert resumed["pausedRanges"][0].get("end")
    resumed_at = dt.datetime.fromisoformat(resumed["pausedRanges"][0]["end"])
    wait_until(lambda: sum(begun >= resumed_at for begun in stored_segment_starts()) >= 2, 30,
               "segments recorded after the resume")
    patch_record_job(kube, job_namespace, "second-half", {"timeRange": {"end": stamp(dt.datetime.now(dt.UTC))}})
    job = wait_phase(kube, job_namespace, "second-half", "Completed", timeout=90, plural="recordjobs")
    assert [t["phase"] for t in job["status"]["timings"]] == ["Initial", "Started", "Paused", "Started", "Completed"]
    media = s3.get_object(Bucket=platform.s3_bucket, Key="clips/second-half/360p/index.m3u8")["Body"].read().decode()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in media and media.count("#EXT-X-DISCONTINUITY\n") == 1, media


@pytest.fixture
def rtmp_source() -> Iterator[str]:
    """A stream URL to record: ffmpeg serving a test pattern to one RTMP client (listen mode)."""
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/source"
    process = subprocess.Popen([
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-f", "flv", "-listen", "1", url,
    ], stdin=subprocess.DEVNULL)
    yield url
    process.kill()
    process.wait()


def test_recording_pauses_resumes_and_completes_at_the_end_of_its_range(
    kube: client.ApiClient, job_namespace: str, s3: Any, platform: PlatformInfo, rtmp_source: str
) -> None:
    create_record_job(kube, job_namespace, "tape", {
        "source": {"streamUrl": rtmp_source},
        "output": {"bucket": platform.s3_bucket, "path": "recordings/tape", "format": "mp4"},
    })
    wait_phase(kube, job_namespace, "tape", "Started", timeout=60, plural="recordjobs")
    # Joining and uploading the MP4s is the stop's work at the end: the recorder's Pod gets minutes for it,
    # and the recorder is told how long it has.
    recorder = client.CoreV1Api(kube).list_namespaced_pod(job_namespace, label_selector="onair.dev/job=tape").items[0]
    assert recorder.spec.termination_grace_period_seconds == 600
    assert {"ONAIR_TERMINATION_GRACE_SECONDS": "600"}.items() <= {e.name: e.value for e in
                                                                  recorder.spec.containers[0].env}.items()
    wait_until(lambda: [o for o in objects(s3, platform.s3_bucket, "recordings/tape/") if o.endswith(".ts")], 60,
               "recorded segments")
    patch_record_job(kube, job_namespace, "tape", {"paused": True})
    wait_phase(kube, job_namespace, "tape", "Paused", timeout=30, plural="recordjobs")
    patch_record_job(kube, job_namespace, "tape", {"paused": False})
    wait_phase(kube, job_namespace, "tape", "Started", timeout=30, plural="recordjobs")
    patch_record_job(kube, job_namespace, "tape", {"timeRange": {"end": stamp(dt.datetime.now(dt.UTC))}})
    job = wait_phase(kube, job_namespace, "tape", "Completed", timeout=60, plural="recordjobs")
    phases = [t["phase"] for t in job["status"]["timings"]]
    assert phases == ["Initial", "Started", "Paused", "Started", "Completed"]
    files = job["status"]["files"]
    key = next(f["key"] for f in files if f["name"] != "master" and f["format"] == "hls")
    media = s3.get_object(Bucket=platform.s3_bucket, Key=key)["Body"].read().decode()
    assert "#EXT-X-ENDLIST" in media
    mp4 = next(f["key"] for f in files if f["format"] == "mp4")
    assert s3.head_object(Bucket=platform.s3_bucket, Key=mp4)["ContentLength"] > 0
    assert get_job(kube, job_namespace, "tape", "recordjobs")["status"]["phase"] == "Completed"
