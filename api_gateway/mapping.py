"""CR <-> REST translation, pure functions over the raw objects (dicts as the API server sends them).

LiveJob -> contract fields: status <- status.phase; insertDate <- metadata.creationTimestamp;
startDateTime/endDateTime <- spec.schedule, else status.startedAt and the time the job went Offline,
Completed or Failed (live_job_times); destination and filePath <- spec.destination.path (the key
prefix in the bucket, "the destination in a bucket where chunk files will be saved"); bucket <-
spec.destination.bucket; serverType/inputClass <- spec.input; callbackUrl <- spec.callbackUrl;
statistics <- status.statistics; outputs <- status.outputs; timings <- status.timings; the urls from
status.urls. The integer id is the label onair.dev/id (or, for jobs made with kubectl, a stable hash
in the upper half of the int32 range, so it never collides with allocated ids).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from onair.api_gateway.errors import ApiProblem, validation_errors
from onair.api_gateway.query import FieldSpec
from onair.api_gateway.schemas import INPUT_CLASSES, SERVER_TYPES, LiveJobCreate, StateTotals
from onair.models import API_VERSION, InputStatistics, LiveJobSpec, RecordJobSpec
from onair.phases import LIVE_JOB_TERMINAL_PHASES, LiveJobPhase, OutputStatus, RecordJobPhase
from onair.urls import shown_url

LABEL_PROJECT = "onair.dev/project-id"
LABEL_ID = "onair.dev/id"
ANNOTATION_NEXT_ID = "onair.dev/next-id"  # where gateways before the id ConfigMap kept a project's counter
ANNOTATION_BODY_HASH = "onair.dev/request-sha256"
ANNOTATION_DISPLAY_NAME = "onair.dev/display-name"
HASHED_ID_BASE = 2**30
OUTPUT_STATUS_IDS = {status.value: index for index, status in enumerate(OutputStatus)}
Obj = Mapping[str, Any]


def fnv32a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def object_id(obj: Obj) -> int:
    meta = obj.get("metadata") or {}
    label = (meta.get("labels") or {}).get(LABEL_ID, "")
    if label.isdigit() and 0 < int(label) < HASHED_ID_BASE:
        return int(label)
    return HASHED_ID_BASE + fnv32a(str(meta.get("uid") or meta.get("name"))) % HASHED_ID_BASE


def parse_time(text: Any) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def millis(text: Any) -> int:
    moment = parse_time(text)
    return int(moment.timestamp() * 1000) if moment else 0


def iso(text: Any) -> str | None:
    """A time as the contract writes every DateTime: UTC with a Z (`2021-11-04T15:12:19.222Z`), or None.
    Kubernetes' own stamps are that already; a schedule or time range may have been given in another
    zone (through kubectl, or the REST create)."""
    if not isinstance(text, str) or not text:
        return None
    moment = parse_time(text)
    return text if moment is None or moment.tzinfo is None else utc_text(moment)


def utc_text(moment: datetime) -> str:
    """`moment` in UTC with a Z, to the second, millisecond or microsecond it has; as it is when UTC
    cannot hold it (year 1 or 9999 in another zone: a job made with kubectl, which the operator fails)."""
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        return moment.isoformat()
    timespec = "seconds" if not moment.microsecond else "milliseconds" if not moment.microsecond % 1000 else "auto"
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


# Kubernetes quantity suffixes (k8s.io/apimachinery resource.Quantity): binary, then decimal.
QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                     "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
                     "E": 1e18}
QUANTITY_RE = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)")


def quantity(text: Any) -> float | None:
    """A Kubernetes quantity ("250m", "1Gi", "123456789n", "2") as a number; None when it is not one."""
    match = QUANTITY_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    return float(match.group(1)) * QUANTITY_SUFFIXES[match.group(2)] if match else None


def percent_of(used: Any, available: Any) -> int | None:
    """`used` as a whole percent of `available` (two quantities), or None."""
    numerator, denominator = quantity(used), quantity(available)
    if numerator is None or not denominator:
        return None
    return round(100 * numerator / denominator)


def modified_millis(obj: Obj) -> int:
    meta = obj.get("metadata") or {}
    times = [millis(meta.get("creationTimestamp"))]
    times.extend(millis(entry.get("time")) for entry in meta.get("managedFields") or [])
    timings = (obj.get("status") or {}).get("timings") or []
    if timings:
        times.append(millis(timings[-1].get("time")))
    return max(times)


# --- live jobs -----------------------------------------------------------------------------------

LIVE_JOB_FIELDS: dict[str, FieldSpec] = {}
for _spec in (
    FieldSpec("state", "enum", "status", tuple(p.value for p in LiveJobPhase), "Phase (status)."),
    FieldSpec("status", "enum", "status", tuple(p.value for p in LiveJobPhase), "Phase."),
    FieldSpec("created_at", "time", "created_at", description="Creation time, Unix ms or ISO 8601."),
    FieldSpec("modified_at", "time", "modified_at", description="Last change, Unix ms or ISO 8601."),
    FieldSpec("id", "int", "id", description="Integer id."),
    FieldSpec("name", "str", "name", description="GUID name."),
    FieldSpec("description", "str", "description"),
    FieldSpec("file_path", "str", "file_path"),
    FieldSpec("bucket", "str", "bucket"),
    FieldSpec("server_type", "enum", "server_type", SERVER_TYPES, numbered=True),
    FieldSpec("input_class", "enum", "input_class", INPUT_CLASSES, numbered=True),
    FieldSpec("online", "bool", "online"),
    FieldSpec("recording", "bool", "recording"),
    FieldSpec("cdn_distribution", "bool", "cdn_distribution"),
    FieldSpec("job_template_id", "int", "job_template_id"),
):
    LIVE_JOB_FIELDS[_spec.name] = _spec
for _alias, _target in (("filePath", "file_path"), ("serverType", "server_type"), ("inputClass", "input_class"),
                        ("jobTemplateId", "job_template_id"), ("cdnDistribution", "cdn_distribution")):
    LIVE_JOB_FIELDS[_alias] = LIVE_JOB_FIELDS[_target]


def live_phase(obj: Obj) -> str:
    """A LiveJob's phase; Pending until the operator has written its first status (a job the gateway
    just created is listed, and filtered, as Pending rather than with no status)."""
    return str((obj.get("status") or {}).get("phase") or LiveJobPhase.PENDING)


def live_job_facts(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    destination = spec.get("destination") or {}
    inp = spec.get("input") or {}
    name = str(meta.get("name"))
    facts = {
        "id": object_id(obj),
        "name": name,
        "status": live_phase(obj),
        "description": spec.get("description"),
        "file_path": destination.get("path") or name,
        "bucket": destination.get("bucket"),
        "server_type": inp.get("serverType"),
        "input_class": inp.get("inputClass", "Standard"),
        "online": spec.get("online", True),
        "recording": spec.get("recording", False),
        "cdn_distribution": destination.get("cdnDistribution", False),
        "job_template_id": spec.get("jobTemplateId"),
        "created_at": millis(meta.get("creationTimestamp")),
        "modified_at": modified_millis(obj),
    }
    facts["search"] = search_text(*(facts[k] for k in ("id", "name", "status", "description", "file_path", "bucket")))
    return facts


# Between the fields of one job's search text: a search matches within a field (the id, or the name,
# ...), never text that spans two of them.
FIELD_SEPARATOR = "\x1f"


def search_text(*parts: Any) -> str:
    """What `search` and `Keyword` look in: case-folded (STRASSE finds Straße) and without NUL, which
    the job index uses to join the texts of all jobs into one string."""
    fields = (str(part or "").replace("\0", "").replace(FIELD_SEPARATOR, "") for part in parts)
    return FIELD_SEPARATOR.join(fields).casefold()


def search_needle(text: str) -> str:
    """What a search looks for in search texts: case-folded; a FIELD_SEPARATOR in it becomes NUL, which
    no search text holds, so that nothing matches across two fields."""
    return text.casefold().replace(FIELD_SEPARATOR, "\0")


# A job that no longer runs: endDateTime is when it became so.
ENDED_PHASES = LIVE_JOB_TERMINAL_PHASES | {LiveJobPhase.OFFLINE}


def live_job_times(obj: Obj) -> tuple[str | None, str | None]:
    """startDateTime and endDateTime: the schedule's, else when the job last went Live and, once it
    is Offline, Completed or Failed, when it became so (the reference: "the date when that live job
    has started")."""
    spec = obj.get("spec") or {}
    schedule = spec.get("schedule") or {}
    status = obj.get("status") or {}
    ended = None
    # Offline but switched on again (online: true, the operator not there yet): not ended, as its
    # client, which has just switched it on, reads it.
    switched_on = status.get("phase") == LiveJobPhase.OFFLINE and spec.get("online") is not False
    if status.get("phase") in ENDED_PHASES and not switched_on:
        entered = [t.get("time") for t in status.get("timings") or [] if t.get("phase") == status["phase"]]
        ended = entered[-1] if entered else status.get("finishedAt")
    return (iso(schedule.get("startDateTime") or status.get("startedAt")),
            iso(schedule.get("finishDateTime") or ended))


def live_job_summary(obj: Obj, facts: Mapping[str, Any], key: str | None) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    start, end = live_job_times(obj)
    return {
        "id": facts["id"],
        "name": facts["name"],
        "key": key,
        "status": facts["status"],
        "description": facts["description"],
        "filePath": facts["file_path"],
        "insertDate": iso(meta.get("creationTimestamp")),
        "startDateTime": start,
        "endDateTime": end,
        "modifiedDate": _ms_to_iso(facts["modified_at"]),
    }


def _ms_to_iso(ms: int) -> str | None:
    if not ms:
        return None
    return utc_text(datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000))


def _options(values: tuple[str, ...], chosen: str) -> list[dict[str, Any]]:
    return [{"id": index, "value": value, "enabled": value == chosen} for index, value in enumerate(values)]


def url_for(url: str | None, secrets_shown: bool) -> str | None:
    """A job's URL (a pulled source, a webhook receiver) as a token reads it: whole for one that may
    write the job; without user:password and query, either of which may hold credentials, for a
    read-only one (a dashboard), as Events and logs show it."""
    return url if url is None or secrets_shown else shown_url(url)


def live_job_detail(obj: Obj, facts: Mapping[str, Any], key: str | None, project_id: str, *,
                    secrets_shown: bool) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    urls = status.get("urls") or {}
    destination = spec.get("destination") or {}
    inp = spec.get("input") or {}
    start, end = live_job_times(obj)
    server_type = str(inp.get("serverType", "RTMP"))
    input_class = str(inp.get("inputClass", "Standard"))
    return {
        "id": facts["id"],
        "name": facts["name"],
        "key": key,
        "destination": facts["file_path"],
        "description": spec.get("description"),
        "projectId": project_id,
        "status": facts["status"],
        "startDateTime": start,
        "endDateTime": end,
        "jobTemplateId": int(spec.get("jobTemplateId", 0)),
        "argoResourceName": status.get("resourceName"),
        "resourceName": status.get("resourceName"),
        "bucket": destination.get("bucket"),
        "cdnDistribution": bool(destination.get("cdnDistribution", False)),
        "rtmpServer": urls.get("rtmpServer"),
        "srtUrl": urls.get("srtUrl"),
        "webSocketConnection": urls.get("webSocketConnection"),
        "cdn": urls.get("cdn"),
        "storageMasterFile": urls.get("storageMasterFile"),
        "outputManifests": dict(urls.get("outputManifests") or {}),
        "input": {
            "filePath": facts["file_path"],
            "serverType": SERVER_TYPES.index(server_type) if server_type in SERVER_TYPES else 0,
            "serverTypeOptions": _options(SERVER_TYPES, server_type),
            "inputClass": INPUT_CLASSES.index(input_class) if input_class in INPUT_CLASSES else 1,
            "inputClassOptions": _options(INPUT_CLASSES, input_class),
            "callbackUrl": url_for(spec.get("callbackUrl"), secrets_shown),
            "url": url_for(inp.get("url"), secrets_shown),
        },
        "statistics": statistics(obj),
        "tags": pricing_tags(spec),
        "online": bool(spec.get("online", True)),
        "insertDate": iso(meta.get("creationTimestamp")),
        "message": status.get("message"),
    }


def pricing_tags(spec: Mapping[str, Any]) -> str:
    """The contract's `tags`: what the job is billed by (see schemas.LiveJobDetail.tags)."""
    inp = spec.get("input") or {}
    tags = [str(inp.get("inputClass", "Standard")).lower(), str(inp.get("serverType", "RTMP")).lower(),
            f"jobTemplateId:{int(spec.get('jobTemplateId', 0))}"]
    if (spec.get("destination") or {}).get("cdnDistribution"):
        tags.append("cdn")
    return ",".join(tags)


def live_job_outputs(obj: Obj, facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    status = obj.get("status") or {}
    uid = str((obj.get("metadata") or {}).get("uid") or facts["name"])
    rows = []
    for index, output in enumerate(status.get("outputs") or [], start=1):
        progress = output.get("progress")
        text = str(output.get("status", "Pending"))
        rows.append({
            "liveJobId": facts["id"],
            "outputId": index,
            "progress": round(float(progress) * 100) if isinstance(progress, int | float) else 0,
            "status": OUTPUT_STATUS_IDS.get(text, 0),
            "lockKey": str(uuid.uuid5(uuid.NAMESPACE_URL, f"onair:{uid}:{output.get('name')}")),
            "counter": int(output.get("segmentsWritten") or 0),
            "encoderId": int(status.get("attempt") or 0),
            "name": output.get("name"),
            "statusText": text,
        })
    return rows


# --- rows of the smaller lists, for handlers.run_rows ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListRow:
    """One row of a smaller list and what the query language reads of it."""

    row: dict[str, Any]  # what the client gets
    facts: Mapping[str, Any]  # the filter values (FieldSpec attributes)
    keys: Mapping[str, int]  # a sort value per accepted sort: Unix ms or an order number
    # Ties are broken by order, then ident: unique per row, so keyset pages neither repeat nor skip one.
    order: int = 0
    ident: str = ""

OUTPUT_STATUSES = tuple(status.value for status in OutputStatus)
OUTPUT_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec for spec in (
        FieldSpec("status", "enum", "status", OUTPUT_STATUSES, "Output status (statusText): "
                  + ", ".join(OUTPUT_STATUSES) + ", or its number as the rows give it (0 to "
                  + f"{len(OUTPUT_STATUSES) - 1}).", numbered=True),
        FieldSpec("statusText", "enum", "status", OUTPUT_STATUSES, "Same as status."),
        FieldSpec("name", "str", "name", description="Rendition name, e.g. 720p."),
        FieldSpec("rendition", "str", "name", description="Same as name."),
        FieldSpec("jobId", "int", "job_id", description="The live job's integer id (liveJobId)."),
        FieldSpec("job", "str", "job", description="The live job's name (GUID)."),
        FieldSpec("outputId", "int", "output_id", description="Output number within its job, from 1."),
        FieldSpec("progress", "num", "progress", description="Percent, 0 to 100."),
        FieldSpec("counter", "int", "counter", description="Segments written."),
        FieldSpec("created_at", "time", "created_at", description="The job's creation time, Unix ms or ISO 8601."),
        FieldSpec("modified_at", "time", "modified_at", description="The job's last change, Unix ms or ISO 8601."),
    )
}


def output_rows(obj: Obj, facts: Mapping[str, Any]) -> list[ListRow]:
    """The outputs of a live job. Order: the job's sort value, its id, the output number."""
    created, modified = int(facts["created_at"]), int(facts["modified_at"])
    return [ListRow(row, {"status": row["statusText"], "name": row["name"], "job_id": row["liveJobId"],
                          "job": facts["name"], "output_id": row["outputId"], "progress": row["progress"],
                          "counter": row["counter"], "created_at": created, "modified_at": modified},
                    {"created_at": created, "modified_at": modified},
                    row["liveJobId"], f"{facts['name']}/{row['outputId']:06d}")
            for row in live_job_outputs(obj, facts)]


TIMING_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec for spec in (
        FieldSpec("status", "str", "status", description="The phase (or, with outputId, the output's status)."),
        FieldSpec("childStatus", "str", "child_status", description="The reason (or the rendition)."),
        FieldSpec("startDateTime", "time", "created_at", description="When, Unix ms or ISO 8601."),
        FieldSpec("created_at", "time", "created_at", description="Same as startDateTime."),
    )
}


def timing_rows(obj: Obj, output_id: int | None = None) -> list[ListRow]:
    """Sort created_at is the row's startDateTime; rows of the same time keep their order in the history."""
    rows = []
    for position, row in enumerate(live_job_timings(obj, output_id)):
        when = millis(row["startDateTime"])
        rows.append(ListRow(row, {"status": row["status"], "child_status": row["childStatus"], "created_at": when},
                            {"created_at": when}, position))
    return rows


STATISTICS_FIELDS = ("width", "height", "framerate", "videoDataRate", "videoCodecId", "audioDataRate",
                     "audioSampleRate", "audioSampleSize", "audioCodecId", "audioChannels", "stereo", "encoder")
_STATISTICS_DOC = {field.alias or name: field.description or "" for name, field in InputStatistics.model_fields.items()}
STATS_FIELDS: dict[str, FieldSpec] = {
    name: FieldSpec(name, "bool" if name == "stereo" else "str" if name == "encoder" else "num", name,
                    description=_STATISTICS_DOC.get(name, ""))
    for name in STATISTICS_FIELDS
}


def statistics(obj: Obj) -> dict[str, Any]:
    """The documented statistics object: every field, null until the encoder has reported it (a job that
    is pending, offline or waiting for its publisher has none yet)."""
    reported = (obj.get("status") or {}).get("statistics")
    out: dict[str, Any] = dict.fromkeys(STATISTICS_FIELDS)
    if isinstance(reported, Mapping):
        out.update({k: v for k, v in reported.items() if k in out and v is not None})
    if out["framerate"] is not None:  # the reference's int32: 29.97 fps is 30
        out["framerate"] = int(out["framerate"] + 0.5)
    return out


def stats_rows(obj: Obj, facts: Mapping[str, Any]) -> list[ListRow]:
    row = statistics(obj)
    return [ListRow(row, row, {"created_at": int(facts["created_at"]), "modified_at": int(facts["modified_at"])})]


TEMPLATE_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec for spec in (
        FieldSpec("id", "int", "id", description="Template id (spec.id)."),
        FieldSpec("name", "str", "name", description="Display name."),
        FieldSpec("default", "bool", "default", description="The project's default template."),
        FieldSpec("shared", "bool", "shared", description="A platform-wide template."),
        FieldSpec("created_at", "time", "created_at", description="Creation time, Unix ms or ISO 8601."),
        FieldSpec("modified_at", "time", "modified_at", description="Last change, Unix ms or ISO 8601."),
    )
}


def template_rows(templates: Mapping[int, tuple[Obj, bool]]) -> list[ListRow]:
    """Sort default (the default): the default template first, then by id; sort id: by id."""
    rows = []
    for template_id, (obj, shared) in templates.items():
        spec = obj.get("spec") or {}
        created = millis((obj.get("metadata") or {}).get("creationTimestamp"))
        modified = modified_millis(obj)
        default = bool(spec.get("default", False))
        rows.append(ListRow({**spec, "shared": shared},
                            {"id": template_id, "name": spec.get("name"), "default": default, "shared": shared,
                             "created_at": created, "modified_at": modified},
                            {"default": 0 if default else 1, "id": template_id, "created_at": created,
                             "modified_at": modified},
                            template_id))
    return rows


STREAMER_ROLES = ("node", "encoder", "recorder")
STREAMER_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec for spec in (
        FieldSpec("role", "enum", "role", STREAMER_ROLES, "node, encoder or recorder."),
        FieldSpec("hostname", "str", "hostname", description="Pod or node name."),
        FieldSpec("node", "str", "node", description="The node (for a node: its own name)."),
        FieldSpec("status", "str", "status", description="A Pod's phase (Running, Pending...); a node's Ready "
                                                        "or NotReady."),
        FieldSpec("job", "str", "job", description="The job (its name) an encoder or recorder runs."),
        FieldSpec("namespace", "str", "namespace", description="An encoder's or recorder's namespace."),
        FieldSpec("projectId", "str", "project_id", description="An encoder's or recorder's project (GUID)."),
        FieldSpec("created_at", "time", "created_at", description="Creation time, Unix ms or ISO 8601."),
        FieldSpec("modified_at", "time", "modified_at", description="Last change, Unix ms or ISO 8601."),
    )
}


def live_job_timings(obj: Obj, output_id: int | None = None) -> list[dict[str, Any]]:
    """The job's phase history, oldest first. With `output_id` (1-based, as live_job_outputs numbers
    them): the history of that output, i.e. the job's phases (every output goes through them) followed
    by the output's own state: status its status (Running, Stalled...), childStatus its rendition name,
    startDateTime its last segment's time. The operator keeps no per-rendition history."""
    status = obj.get("status") or {}
    rows = [{"status": str(t.get("phase")), "childStatus": t.get("reason"), "startDateTime": iso(t.get("time")),
             "messageComment": t.get("comment")}
            for t in status.get("timings") or [] if t.get("time")]
    if output_id is None:
        return rows
    outputs = status.get("outputs") or []
    if not 1 <= output_id <= len(outputs):
        return []
    output = outputs[output_id - 1]
    since = iso(output.get("lastSegmentTime")) or (rows[-1]["startDateTime"] if rows else None)
    if since:
        written = int(output.get("segmentsWritten") or 0)
        rows.append({"status": str(output.get("status", "Pending")), "childStatus": output.get("name"),
                     "startDateTime": since, "messageComment": f"segments written: {written}"})
    return rows


# REST field names for the errors of LiveJobSpec validation.
_SPEC_TO_REST = [
    ("destination.bucket", "bucket"), ("destination.path", "filePath"), ("destination.endpoint", "endpoint"),
    ("destination.cdnBaseUrl", "cdnBaseUrl"), ("destination.cdnDistribution", "cdnDistribution"),
    ("input.serverType", "serverType"), ("input.inputClass", "inputClass"), ("input.url", "url"),
    ("input", "input"), ("schedule.startDateTime", "startDateTime"), ("schedule.finishDateTime", "endDateTime"),
    ("callbackUrl", "callbackUrl"), ("jobTemplateId", "jobTemplateId"), ("description", "description"),
    ("dvrWindowSeconds", "dvrWindowSeconds"),
]


def rest_field_name(spec_path: str) -> str:
    for prefix, rest in _SPEC_TO_REST:
        if spec_path == prefix or spec_path.startswith(prefix + ".") or spec_path.startswith(prefix + "["):
            return rest + spec_path[len(prefix):]
    return spec_path


def _pick(name: str, top: Any, nested: Any, errors: list[str]) -> Any:
    if top is not None and nested is not None and top != nested:
        errors.append(f"{name}: given twice (top level and in input) with different values")
    return nested if nested is not None else top


def live_job_object(name: str, namespace: str, project_id: str, job_id: int, spec: dict[str, Any],
                    body_digest: str | None) -> dict[str, Any]:
    """The LiveJob a REST create writes: its project and integer id as labels, and for a create with an
    Idempotency-Key the digest of its body (a retry with another body is refused)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {LABEL_PROJECT: project_id, LABEL_ID: str(job_id)}}
    if body_digest:
        metadata["annotations"] = {ANNOTATION_BODY_HASH: body_digest}
    return {"apiVersion": API_VERSION, "kind": "LiveJob", "metadata": metadata, "spec": spec}


def clip_record_spec(live_job: Obj, clip_name: str, start: datetime, finish: datetime) -> dict[str, Any]:
    """The RecordJob spec of a live cut: the range of `live_job`, into clips/<clip_name> under the
    job's own prefix in its bucket (and store). A finish in the future is allowed: the clip's
    RecordJob waits for the stream to reach it."""
    destination = (live_job.get("spec") or {}).get("destination") or {}
    output = {"type": "s3", "format": "hls", "bucket": destination.get("bucket"),
              "path": f"{_live_job_prefix(live_job)}/clips/{clip_name}"}
    for key in ("endpoint", "region", "credentialsSecret"):
        if destination.get(key):
            output[key] = destination[key]
    return RecordJobSpec.model_validate({
        "source": {"liveJobRef": live_job["metadata"]["name"]},
        "timeRange": {"start": start.isoformat(), "end": finish.isoformat()},
        "output": output}).to_k8s()


def clip_playback_url(live_job: Obj, clip_spec: Mapping[str, Any]) -> str | None:
    """Where the clip's master playlist will be played: beside the live job's own master, through its
    CDN when it has one (as the job's own playBackPathURL), or None while the job has no master URL yet."""
    urls = (live_job.get("status") or {}).get("urls") or {}
    master = urls.get("cdn") or urls.get("storageMasterFile")
    suffix = f"/{_live_job_prefix(live_job)}/master.m3u8"
    if not master or not master.endswith(suffix):
        return None
    return f"{master[:-len(suffix)]}/{clip_spec['output']['path']}/master.m3u8"


def _live_job_prefix(live_job: Obj) -> str:
    destination = (live_job.get("spec") or {}).get("destination") or {}
    return str(destination.get("path") or live_job["metadata"]["name"]).strip("/")


def live_job_spec_from_request(body: LiveJobCreate) -> dict[str, Any]:
    """The REST create body -> a validated LiveJob spec (JSON dict); 400 with REST field names."""
    errors: list[str] = []
    nested = body.input
    file_path = _pick("filePath", body.file_path, nested.file_path if nested else None, errors)
    server_type = _pick("serverType", body.server_type, nested.server_type if nested else None, errors)
    input_class = _pick("inputClass", body.input_class, nested.input_class if nested else None, errors)
    callback_url = _pick("callbackUrl", body.callback_url, nested.callback_url if nested else None, errors)
    url = _pick("url", body.url, nested.url if nested else None, errors)
    # destination is the place inside the bucket (the key prefix), the fact filePath names too.
    if body.destination is not None and file_path is not None and body.destination != file_path:
        errors.append("destination: the key prefix in the bucket, which filePath names too; the two differ")
    path = body.destination if body.destination is not None else file_path
    if not body.bucket:
        errors.append("bucket: required (the bucket's name; destination is the key prefix inside it)")
    if server_type is None:
        errors.append("serverType: required (0 RTMP, 1 SRT, 2 HLS)")
    if errors:
        raise ApiProblem(400, *errors)
    spec: dict[str, Any] = {
        "jobTemplateId": body.job_template_id,
        "input": {"serverType": server_type, "inputClass": input_class or "Standard"},
        "destination": {"bucket": body.bucket, "path": path or ""},
    }
    if url is not None:
        spec["input"]["url"] = url
    if body.endpoint is not None:
        spec["destination"]["endpoint"] = body.endpoint
    if body.cdn_base_url is not None:
        spec["destination"]["cdnBaseUrl"] = body.cdn_base_url
    if body.cdn_distribution is not None:
        spec["destination"]["cdnDistribution"] = body.cdn_distribution
    for key, value in (("description", body.description), ("callbackUrl", callback_url), ("online", body.online),
                       ("recording", body.recording), ("dvrWindowSeconds", body.dvr_window_seconds)):
        if value is not None:
            spec[key] = value
    if body.start_date_time or body.end_date_time:
        spec["schedule"] = {k: v.isoformat() for k, v in (("startDateTime", body.start_date_time),
                                                          ("finishDateTime", body.end_date_time)) if v}
    path_name = "destination" if body.destination is not None else "filePath"

    def rename(spec_path: str) -> str:
        if spec_path == "destination.path":
            return path_name
        return rest_field_name(spec_path)

    try:
        return LiveJobSpec.model_validate(spec).to_k8s()
    except ValidationError as error:
        raise ApiProblem(400, *validation_errors(error, rename=rename)) from error


# --- record jobs ---------------------------------------------------------------------------------

RECORD_STATUSES = tuple(p.value.lower() for p in RecordJobPhase)
RECORD_JOB_FIELDS: dict[str, FieldSpec] = {
    spec.name: spec for spec in (
        FieldSpec("state", "enum", "status", RECORD_STATUSES, "Status."),
        FieldSpec("status", "enum", "status", RECORD_STATUSES, "Status."),
        FieldSpec("created_at", "time", "created_at"),
        FieldSpec("modified_at", "time", "modified_at"),
        FieldSpec("id", "int", "id"),
        FieldSpec("job_id", "str", "job_id"),
        FieldSpec("name", "str", "name"),
        FieldSpec("live_job", "str", "live_job"),
        FieldSpec("output_type", "enum", "output_type", ("s3", "oss", "vod")),
        FieldSpec("format", "enum", "format", ("hls", "mp4")),
        FieldSpec("bucket", "str", "bucket"),
        FieldSpec("template_id", "int", "template_id"),
        FieldSpec("paused", "bool", "paused"),
    )
}


def record_status(obj: Obj) -> str:
    """The Alibaba status of a record job: its phase, except that spec.paused (what the caller set, and
    where the operator takes the phase next) decides paused or not at once for a job still running: a job
    just paused is "paused", a job just resumed is "started", before the operator reports either."""
    spec = obj.get("spec") or {}
    status = str((obj.get("status") or {}).get("phase") or "Initial").lower()
    if status in ("completed", "failed"):
        return status
    if spec.get("paused"):
        return "paused"
    return "started" if status == "paused" else status


def record_job_facts(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    output = spec.get("output") or {}
    facts = {
        "id": object_id(obj),
        "job_id": str(meta.get("name")),
        "name": (meta.get("annotations") or {}).get(ANNOTATION_DISPLAY_NAME),
        "status": record_status(obj),
        "created_at": millis(meta.get("creationTimestamp")),
        "modified_at": modified_millis(obj),
        "live_job": (spec.get("source") or {}).get("liveJobRef"),
        "output_type": output.get("type", "s3"),
        "format": output.get("format", "hls"),
        "bucket": output.get("bucket"),
        "template_id": spec.get("jobTemplateId"),
        "paused": bool(spec.get("paused", False)),
    }
    facts["search"] = search_text(facts["id"], facts["job_id"], facts["name"])
    return facts


def record_job_out(obj: Obj, facts: Mapping[str, Any], template_name: Callable[[int], str | None], *,
                   secrets_shown: bool) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    source = spec.get("source") or {}
    stream_url = source.get("streamUrl")
    output = dict(spec.get("output") or {})
    output.setdefault("type", "s3")
    output.setdefault("format", "hls")
    output.setdefault("path", "")
    template_id = spec.get("jobTemplateId")
    time_range = spec.get("timeRange")
    return {
        "id": facts["id"],
        "jobId": facts["job_id"],
        "name": facts["name"],
        "status": facts["status"],
        "createTime": iso(meta.get("creationTimestamp")),
        "modifiedTime": _ms_to_iso(facts["modified_at"]),
        "streamInput": {"type": stream_url.split(":", 1)[0] if stream_url else "livejob",
                        "url": url_for(stream_url, secrets_shown),
                        "liveJobName": source.get("liveJobRef")},
        "recordOutput": output,
        "timeRange": {end: iso(moment) for end, moment in time_range.items()} if time_range else time_range,
        "templateId": template_id,
        "templateName": template_name(template_id) if template_id is not None else None,
        "notifyUrl": url_for(spec.get("notifyUrl"), secrets_shown),
        "paused": facts["paused"],
        "progress": status.get("progress"),
        "retries": int(status.get("retries") or 0),
        "playbackUrl": status.get("playbackUrl"),
        "files": list(status.get("files") or []),
        "errorMessage": status.get("errorMessage"),
    }


# --- health --------------------------------------------------------------------------------------

LIVE_HEALTH = {
    "Live": "operational", "Reconnecting": "degradated", "Pending": "partial_outage",
    "Provisioning": "partial_outage", "WaitingForInput": "partial_outage", "Stopping": "partial_outage",
    "Failed": "outage", "Offline": "disabled", "Completed": "disabled",
}
RECORD_HEALTH = {"started": "operational", "initial": "partial_outage", "paused": "disabled",
                 "completed": "disabled", "failed": "outage"}


def totals(states: list[str]) -> StateTotals:
    counts = {key: 0 for key in ("operational", "degradated", "partial_outage", "outage", "disabled")}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return StateTotals(**counts, total=len(states))
