"""The pydantic models of the onair resources and the phase state machines."""

from __future__ import annotations

import copy
import enum
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from onair import models
from onair.models import (
    API_VERSION,
    MAX_TIMINGS,
    CelRule,
    Condition,
    JobTemplate,
    JobTemplateSpec,
    LiveJob,
    LiveJobSpec,
    LiveJobStatus,
    LiveJobTiming,
    OnairModel,
    RecordJob,
    append_timing,
    describe_errors,
    error_path,
    parse_resource,
    set_condition,
    update_violations,
)
from onair.phases import (
    LIVE_JOB_ENCODER_PHASES,
    LIVE_JOB_TERMINAL_PHASES,
    LIVE_JOB_TRANSITIONS,
    RECORD_JOB_TERMINAL_PHASES,
    RECORD_JOB_TRANSITIONS,
    ConditionReason,
    ConditionStatus,
    ConditionType,
    LiveJobPhase,
    RecordJobPhase,
    can_transition,
)

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def live_job(**spec: Any) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "LiveJob",
        "metadata": {"name": "news", "namespace": "project-a", "generation": 1},
        "spec": {
            "jobTemplateId": 1,
            "input": {"serverType": "RTMP", "inputClass": "Single"},
            "destination": {"bucket": "live-bucket", "path": "live/news", "endpoint": "http://127.0.0.1:8333"},
            **spec,
        },
    }


def record_job(**spec: Any) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "RecordJob",
        "metadata": {"name": "clip", "namespace": "project-a"},
        "spec": {
            "source": {"liveJobRef": "news"},
            "output": {"bucket": "vod-bucket", "format": "mp4"},
            **spec,
        },
    }


def rendition(**fields: Any) -> Obj:
    return {"name": "720p", "width": 1280, "height": 720, "fps": 30, "videoBitrate": 3_000_000, **fields}


def job_template(**spec: Any) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "JobTemplate",
        "metadata": {"name": "hd", "namespace": "onair-system"},
        "spec": {
            "id": 1,
            "name": "HD ladder",
            "default": True,
            "renditions": [rendition(), rendition(name="360p", width=640, height=360, videoBitrate=800_000)],
            **spec,
        },
    }


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def full_live_job_status() -> Obj:
    return {
        "phase": "Live",
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Live", "lastTransitionTime": NOW.isoformat()},
            {
                "type": "InputConnected",
                "status": "True",
                "reason": "PublisherConnected",
                "message": "publisher 10.0.0.7",
                "lastTransitionTime": NOW.isoformat(),
                "observedGeneration": 1,
            },
        ],
        "timings": [{"time": NOW.isoformat(), "phase": "Live", "reason": "PublisherConnected", "comment": "ok"}],
        "outputs": [
            {
                "name": "720p",
                "status": "Running",
                "segmentsWritten": 12,
                "lastSegmentTime": NOW.isoformat(),
                "encoderId": "news-encoder-1a2b3c4d",
            }
        ],
        "statistics": {
            "width": 1280,
            "height": 720,
            "framerate": 29.97,
            "videoDataRate": 2500,
            "videoCodecId": 7,
            "audioDataRate": 128,
            "audioSampleRate": 48000,
            "audioSampleSize": 16,
            "audioCodecId": 10,
            "audioChannels": 2,
            "stereo": True,
            "encoder": "obs-output module (libobs version 30.0.0)",
        },
        "urls": {
            "ingest": "rtmp://203.0.113.10:1935/live/",
            "rtmpServer": "rtmp://203.0.113.10:1935/live/",
            "cdn": "https://cdn.example.com/live/news/master.m3u8",
            "storageMasterFile": "http://127.0.0.1:8333/live-bucket/live/news/master.m3u8",
            "outputManifests": {"720p": "https://cdn.example.com/live/news/720p/index.m3u8"},
        },
        "resourceName": "news-encoder-1a2b3c4d",
        "serviceName": "news-ingest",
        "streamKeySecret": "news-stream-key",
        "restarts": 0,
        "attempt": 1,
        "startedAt": NOW.isoformat(),
    }


VALID_OBJECTS: dict[str, Obj] = {
    "rtmp live job": live_job(),
    "hls live job": live_job(input={"serverType": "HLS", "url": "https://origin.example.com/live/master.m3u8"}),
    "srt live job with passphrase": live_job(
        input={"serverType": "SRT", "inputClass": "Standard", "srtPassphraseSecretRef": {"name": "srt-pass"}},
        schedule={"startDateTime": "2024-05-01T12:00:00Z", "finishDateTime": "2024-05-01T14:00:00+01:00"},
        dvrWindowSeconds=3600,
        recording=True,
        online=False,
        callbackUrl="https://hooks.example.com/onair",
        description="Evening news",
    ),
    "live job with cdn and status": {
        **live_job(
            destination={
                "bucket": "live.example.com",
                "credentialsSecret": "s3-creds",
                "region": "eu-west-1",
                "cdnBaseUrl": "https://cdn.example.com",
                "cdnDistribution": True,
            }
        ),
        "status": full_live_job_status(),
    },
    "record job clipping a live job": record_job(
        timeRange={"start": "2024-05-01T12:00:00Z", "end": "2024-05-01T12:05:00Z"}
    ),
    "record job transcoding a stream": record_job(source={"streamUrl": "rtmp://example.com/live/a"}, jobTemplateId=2),
    "record job of an rtmp url": record_job(
        source={"streamUrl": "rtmp://example-live.com/live/stream1"},
        output={"type": "oss", "bucket": "imsbucket1", "endpoint": "https://oss-cn-hangzhou.aliyuncs.com"},
        notifyUrl="https://example.com/imsnotify",
        paused=True,
    ),
    "record job of an hls url, with status": {
        **record_job(source={"streamUrl": "https://origin.example.com/live/master.m3u8?token=abc"}),
        "status": {
            "phase": "Completed",
            "progress": 1,
            "retries": 1,
            "recordedSeconds": 300.5,
            "files": [{"name": "720p", "key": "clip/720p.mp4", "format": "mp4", "sizeBytes": 1234}],
            "playbackUrl": "http://127.0.0.1:8333/vod-bucket/clip/720p.mp4",
            "timings": [{"time": NOW.isoformat(), "phase": "Completed"}],
        },
    },
    "job template": job_template(
        audio={"codec": "OPUS", "bitrate": 96000, "sampleRate": 48000, "channels": 2},
        segmentDurationSeconds=2,
        playlistWindow=10,
    ),
    "job template with every codec": job_template(
        renditions=[
            rendition(name="1080p", width=1920, height=1080, codec="HEVC", profile="main10", crf=23),
            rendition(name="720p", codec="H264", profile="high", gopSeconds=1),
            rendition(name="vp9-360p", width=640, height=360, fps=29.97, codec="VP9"),
        ]
    ),
}


@pytest.mark.parametrize("obj", VALID_OBJECTS.values(), ids=VALID_OBJECTS.keys())
def test_valid_objects_parse(obj: Obj) -> None:
    resource = parse_resource(obj)
    assert resource.kind == obj["kind"]


@pytest.mark.parametrize("obj", VALID_OBJECTS.values(), ids=VALID_OBJECTS.keys())
def test_round_trip_through_kubernetes_json(obj: Obj) -> None:
    resource = parse_resource(obj)
    dumped = resource.to_k8s()
    assert parse_resource(dumped) == resource
    # The plain pydantic dump (with nulls) must validate too: that is what a careless caller sends.
    assert type(resource).model_validate(resource.model_dump(by_alias=True)) == resource
    assert type(resource).model_validate_json(resource.model_dump_json(by_alias=True)) == resource


def test_dump_uses_camel_case_and_leaves_unset_fields_out() -> None:
    dumped = parse_resource(live_job()).to_k8s()
    assert dumped["spec"]["jobTemplateId"] == 1
    assert dumped["spec"]["input"] == {"serverType": "RTMP", "inputClass": "Single"}
    assert "schedule" not in dumped["spec"]
    assert "status" not in dumped


def test_defaults() -> None:
    job = parse_resource(live_job())
    assert isinstance(job, LiveJob)
    assert job.spec.online is True
    assert job.spec.recording is False
    assert job.spec.dvr_window_seconds == 0
    assert job.spec.destination.cdn_distribution is False
    template = parse_resource(job_template())
    assert isinstance(template, JobTemplate)
    assert template.spec.audio.codec == "AAC"
    assert template.spec.audio.sample_rate == 48000
    assert template.spec.segment_duration_seconds == 4
    assert template.spec.renditions[0].gop_seconds == 2
    record = parse_resource(record_job())
    assert isinstance(record, RecordJob)
    assert record.spec.paused is False
    assert record.spec.output.type == "s3"


def test_models_accept_python_names() -> None:
    spec = models.LiveJobSpec(
        job_template_id=3,
        input=models.LiveJobInput(server_type=models.ServerType.HLS, url="http://origin/live.m3u8"),
        destination=models.LiveJobDestination(bucket="abc"),
    )
    assert LiveJob(spec=spec).to_k8s()["spec"]["input"]["url"] == "http://origin/live.m3u8"


def without(obj: Obj, *path: str) -> Obj:
    changed = copy.deepcopy(obj)
    node = changed
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return changed


def with_value(obj: Obj, value: Any, *path: str | int) -> Obj:
    changed = copy.deepcopy(obj)
    node: Any = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return changed


# (object, the field path the error must name, the message it must carry or None for pydantic's own)
INVALID_OBJECTS: dict[str, tuple[Obj, str, str | None]] = {
    "hls without url": (
        live_job(input={"serverType": "HLS"}),
        "spec.input.url",
        models.HLS_REQUIRES_URL.message,
    ),
    "rtmp with url": (
        live_job(input={"serverType": "RTMP", "url": "https://origin.example.com/a.m3u8"}),
        "spec.input.url",
        models.PUSH_FORBIDS_URL.message,
    ),
    "srt with url": (
        live_job(input={"serverType": "SRT", "url": "https://origin.example.com/a.m3u8"}),
        "spec.input.url",
        models.PUSH_FORBIDS_URL.message,
    ),
    "passphrase on rtmp": (
        live_job(input={"serverType": "RTMP", "srtPassphraseSecretRef": {"name": "pass"}}),
        "spec.input.srtPassphraseSecretRef",
        models.PASSPHRASE_ONLY_FOR_SRT.message,
    ),
    "finish before start": (
        live_job(schedule={"startDateTime": "2024-05-01T12:00:00Z", "finishDateTime": "2024-05-01T11:00:00Z"}),
        "spec.schedule.finishDateTime",
        models.FINISH_AFTER_START.message,
    ),
    "finish equal to start in another offset": (
        live_job(schedule={"startDateTime": "2024-05-01T12:00:00Z", "finishDateTime": "2024-05-01T14:00:00+02:00"}),
        "spec.schedule.finishDateTime",
        models.FINISH_AFTER_START.message,
    ),
    "schedule without time zone": (
        live_job(schedule={"startDateTime": "2024-05-01T12:00:00"}),
        "spec.schedule.startDateTime",
        None,
    ),
    "unknown server type": (live_job(input={"serverType": "WEBRTC"}), "spec.input.serverType", None),
    "unknown input class": (
        live_job(input={"serverType": "RTMP", "inputClass": "Premium"}),
        "spec.input.inputClass",
        None,
    ),
    "negative template id": (live_job(jobTemplateId=-1), "spec.jobTemplateId", None),
    "missing template id": (without(live_job(), "spec", "jobTemplateId"), "spec.jobTemplateId", None),
    "bucket with capitals": (live_job(destination={"bucket": "My_Bucket"}), "spec.destination.bucket", None),
    "bucket with double dots": (live_job(destination={"bucket": "a..b"}), "spec.destination.bucket", None),
    "bucket too short": (live_job(destination={"bucket": "ab"}), "spec.destination.bucket", None),
    "path with leading slash": (
        live_job(destination={"bucket": "abc", "path": "/live"}),
        "spec.destination.path",
        None,
    ),
    "ftp endpoint": (
        live_job(destination={"bucket": "abc", "endpoint": "ftp://s3.example.com"}),
        "spec.destination.endpoint",
        None,
    ),
    "endpoint whose host urllib3 reads differently": (
        live_job(destination={"bucket": "abc", "endpoint": "http://169.254.169.254\\@s3.example.com"}),
        "spec.destination.endpoint",
        None,
    ),
    "endpoint with user information": (
        live_job(destination={"bucket": "abc", "endpoint": "http://user:secret@s3.example.com"}),
        "spec.destination.endpoint",
        None,
    ),
    "cdn url without scheme": (
        live_job(destination={"bucket": "abc", "cdnBaseUrl": "cdn.example.com"}),
        "spec.destination.cdnBaseUrl",
        None,
    ),
    "credentials secret with capitals": (
        live_job(destination={"bucket": "abc", "credentialsSecret": "S3Creds"}),
        "spec.destination.credentialsSecret",
        None,
    ),
    "description too long": (live_job(description="x" * 1025), "spec.description", None),
    "callback without scheme": (live_job(callbackUrl="hooks.example.com"), "spec.callbackUrl", None),
    "dvr window too long": (live_job(dvrWindowSeconds=86401), "spec.dvrWindowSeconds", None),
    "unknown spec field": (live_job(bogus=True), "spec.bogus", None),
    "unknown nested field": (
        live_job(input={"serverType": "RTMP", "filePath": "x"}),
        "spec.input.filePath",
        None,
    ),
    "wrong api version": (with_value(live_job(), "onair.dev/v1", "apiVersion"), "apiVersion", None),
    "unknown kind": (with_value(live_job(), "LiveStream", "kind"), "kind", None),
    "bad status phase": (
        {**live_job(), "status": {"phase": "Streaming"}},
        "status.phase",
        None,
    ),
    "too many timings": (
        {**live_job(), "status": {"timings": [{"time": NOW.isoformat(), "phase": "Live"}] * (MAX_TIMINGS + 1)}},
        "status.timings",
        None,
    ),
    "condition reason with spaces": (
        {
            **live_job(),
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "all good", "lastTransitionTime": NOW.isoformat()}
                ]
            },
        },
        "status.conditions[0].reason",
        None,
    ),
    "record job without source": (
        record_job(source={}),
        "spec.source",
        models.EXACTLY_ONE_SOURCE.message,
    ),
    "record job with two sources": (
        record_job(source={"liveJobRef": "news", "streamUrl": "rtmp://example.com/live/a"}),
        "spec.source",
        models.EXACTLY_ONE_SOURCE.message,
    ),
    "record job of a live job with a template": (
        record_job(jobTemplateId=2),
        "spec.jobTemplateId",
        models.TEMPLATE_ONLY_FOR_STREAMS.message,
    ),
    "record job of an mp4 url": (
        record_job(source={"streamUrl": "https://example.com/video.mp4"}),
        "spec.source.streamUrl",
        None,
    ),
    "record job end before start": (
        record_job(timeRange={"start": "2024-05-01T12:05:00Z", "end": "2024-05-01T12:00:00Z"}),
        "spec.timeRange.end",
        models.END_AFTER_START.message,
    ),
    "record job to an unknown store": (
        record_job(output={"type": "gcs", "bucket": "abc"}),
        "spec.output.type",
        None,
    ),
    "record job in flv": (record_job(output={"bucket": "abc", "format": "flv"}), "spec.output.format", None),
    "record job progress above one": (
        {**record_job(), "status": {"progress": 1.5}},
        "status.progress",
        None,
    ),
    "template without renditions": (job_template(renditions=[]), "spec.renditions", None),
    "template with nine renditions": (
        job_template(renditions=[rendition(name=f"r{i}") for i in range(9)]),
        "spec.renditions",
        None,
    ),
    "odd width": (job_template(renditions=[rendition(width=1281)]), "spec.renditions[0].width", None),
    "height too large": (job_template(renditions=[rendition(height=4322)]), "spec.renditions[0].height", None),
    "fps zero": (job_template(renditions=[rendition(fps=0)]), "spec.renditions[0].fps", None),
    "crf above 51": (job_template(renditions=[rendition(crf=52)]), "spec.renditions[0].crf", None),
    "unknown codec": (job_template(renditions=[rendition(codec="AV1")]), "spec.renditions[0].codec", None),
    "profile for vp9": (
        job_template(renditions=[rendition(codec="VP9", profile="main")]),
        "spec.renditions[0].profile",
        models.PROFILE_MATCHES_CODEC.message,
    ),
    "main10 for h264": (
        job_template(renditions=[rendition(profile="main10")]),
        "spec.renditions[0].profile",
        models.PROFILE_MATCHES_CODEC.message,
    ),
    "rendition name with spaces": (
        job_template(renditions=[rendition(name="HD 720")]),
        "spec.renditions[0].name",
        None,
    ),
    "duplicate rendition names": (
        job_template(renditions=[rendition(), rendition()]),
        "spec.renditions",
        "rendition names must be unique; duplicated: 720p",
    ),
    "segments too long": (job_template(segmentDurationSeconds=31), "spec.segmentDurationSeconds", None),
    "playlist window too short": (job_template(playlistWindow=2), "spec.playlistWindow", None),
    "odd sample rate": (job_template(audio={"sampleRate": 44000}), "spec.audio.sampleRate", None),
    "six channels": (job_template(audio={"channels": 6}), "spec.audio.channels", None),
}


@pytest.mark.parametrize(("obj", "path", "message"), INVALID_OBJECTS.values(), ids=INVALID_OBJECTS.keys())
def test_invalid_objects_name_the_field(obj: Obj, path: str, message: str | None) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_resource(obj)
    errors = {error_path(error["loc"]): error["msg"] for error in raised.value.errors()}
    assert path in errors, f"expected an error at {path}, got {errors}"
    if message is not None:
        assert errors[path] == message


def test_every_single_object_rule_has_a_test_case() -> None:
    # Each CEL rule that checks one object must also be enforced by pydantic, with the same message;
    # a new rule without an invalid example above fails here.
    single_object_rules = [
        value for value in vars(models).values() if isinstance(value, CelRule) and not value.is_transition_rule
    ]
    tested_messages = {message for _, _, message in INVALID_OBJECTS.values()}
    assert single_object_rules
    for rule in single_object_rules:
        assert rule.message in tested_messages, f"no test case raises {rule.message!r}"


def test_describe_errors_gives_paths_and_messages() -> None:
    with pytest.raises(ValidationError) as raised:
        parse_resource(live_job(input={"serverType": "HLS"}, dvrWindowSeconds=-1))
    lines = describe_errors(raised.value)
    assert f"spec.input.url: {models.HLS_REQUIRES_URL.message}" in lines
    assert any(line.startswith("spec.dvrWindowSeconds: ") for line in lines)


def test_error_path() -> None:
    assert error_path(("spec", "renditions", 2, "width")) == "spec.renditions[2].width"
    assert error_path(()) == ""


def all_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [OnairModel]
    while pending:
        model = pending.pop()
        found.append(model)
        pending += model.__subclasses__()
    return [model for model in found if model is not OnairModel]


@pytest.mark.parametrize("model", all_models(), ids=lambda model: model.__name__)
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description (kubectl explain shows it)"


def test_every_model_forbids_unknown_fields_but_the_status() -> None:
    status_models = set(all_models_under(models.StatusModel))
    assert {models.LiveJobStatus, models.RecordJobStatus, models.Condition, models.PendingWebhook} <= status_models
    for model in all_models():
        expected = "ignore" if model in status_models or model is models.StatusModel else "forbid"
        assert model.model_config.get("extra") == expected, model.__name__


def all_models_under(base: type[BaseModel]) -> list[type[BaseModel]]:
    return [model for model in all_models() if issubclass(model, base) and model is not base]


def test_a_status_written_by_a_newer_operator_still_parses_and_a_spec_field_does_not() -> None:
    """A rollback, or an old replica during a rolling update, reads a status with fields it does not
    know: the job is not invalid for that (its spec is what the user wrote and is still checked)."""
    obj = live_job()
    obj["status"] = {"phase": "Live", "fieldFromTheFuture": {"a": 1},
                     "outputs": [{"name": "720p", "status": "Running", "alsoNew": True}]}
    job = parse_resource(obj)
    assert isinstance(job, LiveJob) and job.status is not None and job.status.phase == LiveJobPhase.LIVE
    with pytest.raises(ValidationError, match=r"spec\.colour"):
        parse_resource({**obj, "spec": {**obj["spec"], "colour": "red"}})


# --- update rules ------------------------------------------------------------------------------


def live(phase: LiveJobPhase | None, **spec: Any) -> LiveJob:
    obj = live_job(**spec)
    if phase is not None:
        obj["status"] = {"phase": phase.value}
    job = parse_resource(obj)
    assert isinstance(job, LiveJob)
    return job


def test_server_type_is_immutable() -> None:
    srt = {"serverType": "SRT"}
    assert update_violations(live(None), live(None, input=srt)) == [models.SERVER_TYPE_IMMUTABLE.message]


def test_input_destination_and_template_frozen_while_the_encoder_runs() -> None:
    old = live(LiveJobPhase.LIVE)
    new_destination = {"bucket": "other-bucket"}
    messages = update_violations(old, live(None, destination=new_destination, jobTemplateId=2))
    assert messages == [
        models.LIVE_JOB_FROZEN_WHILE_RUNNING[1].message,
        models.LIVE_JOB_FROZEN_WHILE_RUNNING[2].message,
    ]
    assert update_violations(live(LiveJobPhase.OFFLINE), live(None, destination=new_destination)) == []
    assert update_violations(old, live(None, online=False, description="switched off")) == []


def test_the_dvr_window_and_recording_are_frozen_while_the_encoder_runs() -> None:
    """The encoder takes them at its start: changed under it, they would be ignored without a word."""
    messages = update_violations(live(LiveJobPhase.LIVE), live(None, dvrWindowSeconds=600, recording=True))
    assert [message.split(" ", 1)[0] for message in messages] == ["spec.dvrWindowSeconds", "spec.recording"]
    assert update_violations(live(LiveJobPhase.OFFLINE), live(None, dvrWindowSeconds=600, recording=True)) == []


def test_a_record_jobs_template_is_frozen_while_it_records() -> None:
    """One recording has one ladder: the next recorder attempt would otherwise write another."""
    def recording(phase: str | None, **spec: Any) -> Any:
        obj = record_job(source={"streamUrl": "rtmp://origin/live/x"}, **spec)
        if phase is not None:
            obj["status"] = {"phase": phase}
        return parse_resource(obj)

    for phase in ("Started", "Paused"):
        for before, after in (({"jobTemplateId": 1}, {"jobTemplateId": 2}), ({"jobTemplateId": 1}, {}),
                              ({}, {"jobTemplateId": 2})):
            assert update_violations(recording(phase, **before), recording(None, **after)) == [
                models.RECORD_TEMPLATE_FROZEN_WHILE_RECORDING.message], (phase, before, after)
        assert update_violations(recording(phase, jobTemplateId=1), recording(None, jobTemplateId=1, paused=True)) == []
    for phase in (None, "Initial", "Completed", "Failed"):
        assert update_violations(recording(phase, jobTemplateId=1), recording(None, jobTemplateId=2)) == []


def test_record_job_source_and_output_are_immutable() -> None:
    old = parse_resource(record_job())
    new = parse_resource(record_job(source={"liveJobRef": "other"}, output={"bucket": "abc"}))
    assert update_violations(old, new) == [models.SOURCE_IMMUTABLE.message, models.OUTPUT_IMMUTABLE.message]
    assert update_violations(old, parse_resource(record_job(paused=True))) == []


def test_template_id_is_immutable() -> None:
    assert update_violations(parse_resource(job_template()), parse_resource(job_template(id=2))) == [
        models.TEMPLATE_ID_IMMUTABLE.message
    ]


def test_update_violations_refuses_mixed_kinds() -> None:
    with pytest.raises(TypeError):
        update_violations(parse_resource(job_template()), parse_resource(record_job()))


# --- status helpers ----------------------------------------------------------------------------


def condition(status: ConditionStatus, at: datetime, reason: ConditionReason = ConditionReason.LIVE) -> Condition:
    return Condition(type=ConditionType.READY, status=status, reason=reason, last_transition_time=at)


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    first = [condition(ConditionStatus.TRUE, NOW)]
    same = set_condition(first, condition(ConditionStatus.TRUE, LATER, ConditionReason.PUBLISHER_CONNECTED))
    assert same[0].last_transition_time == NOW
    assert same[0].reason == ConditionReason.PUBLISHER_CONNECTED
    flipped = set_condition(same, condition(ConditionStatus.FALSE, LATER, ConditionReason.NOT_LIVE))
    assert len(flipped) == 1
    assert flipped[0].last_transition_time == LATER


def test_set_condition_adds_new_types() -> None:
    other = Condition(
        type=ConditionType.INPUT_CONNECTED,
        status=ConditionStatus.FALSE,
        reason=ConditionReason.WAITING_FOR_PUBLISHER,
        last_transition_time=NOW,
    )
    conditions = set_condition([condition(ConditionStatus.TRUE, NOW)], other)
    assert [c.type for c in conditions] == ["Ready", "InputConnected"]
    conditions = set_condition(conditions, condition(ConditionStatus.FALSE, LATER, ConditionReason.NOT_LIVE))
    assert [c.type for c in conditions] == ["Ready", "InputConnected"]  # replaced in place
    # The enum values are plain strings in the dump.
    assert LiveJobStatus(conditions=conditions).to_k8s()["conditions"][1]["reason"] == "WaitingForPublisher"


def test_append_timing_keeps_the_newest_entries() -> None:
    timings: list[LiveJobTiming] = []
    for minute in range(MAX_TIMINGS + 5):
        at = NOW + timedelta(minutes=minute)
        timings = append_timing(timings, LiveJobTiming(time=at, phase=LiveJobPhase.LIVE))
    assert len(timings) == MAX_TIMINGS
    assert timings[-1].time == NOW + timedelta(minutes=MAX_TIMINGS + 4)
    LiveJobStatus(timings=timings)  # still within the CRD's bound


# --- phases ------------------------------------------------------------------------------------


def test_state_machines_cover_every_phase() -> None:
    assert set(LIVE_JOB_TRANSITIONS) == set(LiveJobPhase)
    assert set(RECORD_JOB_TRANSITIONS) == set(RecordJobPhase)
    for targets in [*LIVE_JOB_TRANSITIONS.values(), *RECORD_JOB_TRANSITIONS.values()]:
        assert all(isinstance(target, type(next(iter(targets)))) for target in targets)


def reachable(start: Any, transitions: Any) -> set[Any]:
    seen, pending = {start}, [start]
    while pending:
        for target in transitions[pending.pop()]:
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def test_every_phase_is_reachable_from_the_initial_one() -> None:
    assert reachable(LiveJobPhase.PENDING, LIVE_JOB_TRANSITIONS) == set(LiveJobPhase)
    assert reachable(RecordJobPhase.INITIAL, RECORD_JOB_TRANSITIONS) == set(RecordJobPhase)


def test_terminal_phases_only_lead_back_to_the_start() -> None:
    for phase in LIVE_JOB_TERMINAL_PHASES:
        assert LIVE_JOB_TRANSITIONS[phase] == {LiveJobPhase.PENDING}
    for record_phase in RECORD_JOB_TERMINAL_PHASES:
        assert RECORD_JOB_TRANSITIONS[record_phase] <= {RecordJobPhase.INITIAL}


def test_every_running_phase_can_fail_and_stop() -> None:
    for phase in LIVE_JOB_ENCODER_PHASES:
        assert LiveJobPhase.FAILED in LIVE_JOB_TRANSITIONS[phase]
        assert phase == LiveJobPhase.STOPPING or LiveJobPhase.STOPPING in LIVE_JOB_TRANSITIONS[phase]


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (None, LiveJobPhase.PENDING, True),
        (None, LiveJobPhase.LIVE, False),
        (None, RecordJobPhase.INITIAL, True),
        (LiveJobPhase.PENDING, LiveJobPhase.PROVISIONING, True),
        (LiveJobPhase.PROVISIONING, LiveJobPhase.WAITING_FOR_INPUT, True),
        (LiveJobPhase.WAITING_FOR_INPUT, LiveJobPhase.LIVE, True),
        (LiveJobPhase.LIVE, LiveJobPhase.RECONNECTING, True),
        (LiveJobPhase.RECONNECTING, LiveJobPhase.LIVE, True),
        (LiveJobPhase.LIVE, LiveJobPhase.STOPPING, True),
        (LiveJobPhase.STOPPING, LiveJobPhase.OFFLINE, True),
        (LiveJobPhase.OFFLINE, LiveJobPhase.PROVISIONING, True),
        (LiveJobPhase.LIVE, LiveJobPhase.LIVE, True),
        (LiveJobPhase.PENDING, LiveJobPhase.LIVE, False),
        (LiveJobPhase.LIVE, LiveJobPhase.OFFLINE, False),
        (LiveJobPhase.COMPLETED, LiveJobPhase.LIVE, False),
        (LiveJobPhase.FAILED, LiveJobPhase.PENDING, True),
        (RecordJobPhase.INITIAL, RecordJobPhase.STARTED, True),
        (RecordJobPhase.STARTED, RecordJobPhase.PAUSED, True),
        (RecordJobPhase.PAUSED, RecordJobPhase.STARTED, True),
        (RecordJobPhase.STARTED, RecordJobPhase.COMPLETED, True),
        (RecordJobPhase.COMPLETED, RecordJobPhase.STARTED, False),
        (RecordJobPhase.COMPLETED, RecordJobPhase.INITIAL, False),
        (RecordJobPhase.FAILED, RecordJobPhase.INITIAL, True),
    ],
)
def test_can_transition(current: Any, target: Any, allowed: bool) -> None:
    assert can_transition(current, target) is allowed


def test_can_transition_refuses_mixed_kinds() -> None:
    with pytest.raises(TypeError):
        can_transition(LiveJobPhase.LIVE, RecordJobPhase.STARTED)


@pytest.mark.parametrize(
    "vocabulary", [LiveJobPhase, RecordJobPhase, ConditionType, ConditionReason], ids=lambda enum: enum.__name__
)
def test_status_vocabulary_is_camel_case(vocabulary: type[enum.StrEnum]) -> None:
    # Kubernetes requires CamelCase condition reasons; phases and types follow the same convention.
    for member in vocabulary:
        assert re.fullmatch(models.CONDITION_REASON_PATTERN, member.value), member
        assert member.value[0].isupper(), member


def test_what_a_live_job_keeps_for_clips_is_its_live_window_unless_it_records() -> None:
    template = JobTemplateSpec.model_validate({"id": 1, "name": "ladder", "segmentDurationSeconds": 2,
                                               "playlistWindow": 10, "renditions": [
                                                   {"name": "720p", "width": 1280, "height": 720, "fps": 30,
                                                    "videoBitrate": 3_000_000}]})

    def kept(input_class: str, **spec: Any) -> int | None:
        job = live_job(input={"serverType": "RTMP", "inputClass": input_class}, **spec)
        return LiveJobSpec.model_validate(job["spec"]).kept_seconds(template)

    assert kept("Standard") == 20  # 10 segments of 2 s
    assert kept("Single") == 24  # a pass-through's own 6 segments of 4 s, whatever the template says
    assert kept("Standard", dvrWindowSeconds=3600) == 3600
    assert kept("Standard", dvrWindowSeconds=5) == 20  # the live playlist still holds its segments
    assert kept("Standard", recording=True, dvrWindowSeconds=60) is None
