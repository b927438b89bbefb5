"""The route table: the single source of truth for the aiohttp router and the OpenAPI document.

Each Route names its handler (a method of onair.api_gateway.handlers.Gateway), the role it needs, its
path and query parameters (validated from these declarations), its body model and its result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from onair.api_gateway import mapping, schemas
from onair.api_gateway.auth import Role
from onair.api_gateway.query import MAX_PAGE_SIZE, FieldSpec, SelectTree

Location = Literal["path", "query", "header"]


@dataclass(frozen=True)
class Param:
    name: str
    location: Location
    schema: dict[str, Any]
    description: str = ""
    required: bool = False
    invalid: str = "invalid"  # what a value not matching the schema's pattern is told


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str
    summary: str
    tag: str
    role: Role | None  # None: no token needed
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    result: type[BaseModel] | None = None
    result_is_list: bool = False
    status: int = 200
    filters: dict[str, FieldSpec] = field(default_factory=dict)
    errors: tuple[int, ...] = (400, 401, 403, 404)
    raw_response: str | None = None  # a non-envelope content type (openapi, metrics)
    idempotent_post: bool = False
    # Lists: the accepted sort values (the first is the default) and the model of one row (select=
    # names its fields) when the result is not itself the list of rows.
    sorts: tuple[str, ...] = ("created_at", "modified_at")
    row_model: type[BaseModel] | None = None
    default_page_size: int = 10  # rows per page when pageSize / page_size are not given

    @property
    def select_fields(self) -> SelectTree:
        """What select= may name: the fields of a list's rows, or of the one object answered."""
        model = self.row_model or self.result
        return select_tree(model) if model else {}

    @cached_property  # asked on every list request; routes do not change
    def query_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params if p.location == "query")


@cache  # models do not change: one tree each, not one per request (callers must not change it)
def select_tree(model: type[BaseModel], seen: frozenset[type[BaseModel]] = frozenset()) -> dict[str, Any]:
    """The fields of `model` by their JSON names, each with the fields below it (select=)."""
    seen = seen | {model}
    return {f.alias or name: _fields_below(f.annotation, seen) for name, f in model.model_fields.items()}


def _fields_below(annotation: Any, seen: frozenset[type[BaseModel]]) -> dict[str, Any] | None:
    """{} for a plain value; None for a free-form object (a dict, Any) or a model met again."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return None if annotation in seen else select_tree(annotation, seen)
    if annotation is Any or get_origin(annotation) in (dict, Mapping) or annotation is dict:
        return None
    merged: dict[str, Any] = {}
    for argument in get_args(annotation):  # Optional[...], list[...], Annotated[...], unions
        below = _fields_below(argument, seen)
        if below is None:
            return None
        merged.update(below)
    return merged


GUID = {"type": "string", "format": "uuid", "pattern": schemas.GUID_PATTERN}
NOT_A_GUID = "must be a GUID like 3fa85f64-5717-4562-b3fc-2c963f66afa6"
NOT_A_JOB_ID = "must be an integer id or a job name (GUID)"
VERSION = Param("version", "path", {"type": "string", "enum": ["1"]}, "API version.", True)
PROJECT = Param("projectId", "path", GUID, "Project id (GUID).", True, NOT_A_GUID)
# The integer id, or the Kubernetes name (a GUID for jobs made through the API; any DNS-1123 name for
# jobs made with kubectl). GUIDs are matched case-insensitively.
JOB_ID_PATTERN = r"^([0-9]{1,10}|[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?)$"
JOB_ID = Param("id", "path", {"type": "string", "pattern": JOB_ID_PATTERN},
               "Integer id, or the job's name (its GUID).", True, NOT_A_JOB_ID)
# The reference's {streamKey}. Named id as in …/livejobs/{id}: to OpenAPI, two paths that differ only in
# a parameter's name are one path, and a document with both is invalid.
STREAM_KEY = Param("id", "path", GUID, "The live job's stream key (the reference's {streamKey}); its GUID name "
                   "works too.", True, NOT_A_GUID + " (the job's stream key)")
IDEMPOTENCY = Param("Idempotency-Key", "header", {"type": "string", "minLength": 1, "maxLength": 255},
                    "A retried POST with the same key returns the job (or the live cut's clip) its first try "
                    "made, with the header Idempotent-Replayed: true, instead of creating another, also once "
                    "the clock or the templates have moved on; the body is compared as JSON, and another body "
                    "is a 422.")
PAGE_INDEX = Param("pageIndex", "query", {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                   "Page number, from 1.")
PAGE_SIZE = Param("pageSize", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                  "Items per page (1 to 1000, default 10).")
SEARCH = Param("search", "query", {"type": "string", "maxLength": 256},
               "Substring of the id, name, status, description or file path.")
SELECT = Param("select", "query", {"type": "string", "maxLength": 1024},
               "Comma-separated fields (nested with dots) to return, e.g. select=id,name,status.")
SORT = Param("sort", "query", {"type": "string", "enum": ["created_at", "modified_at"]}, "Sort field.")
SORT_DIR = Param("sort_dir", "query", {"type": "string", "enum": ["asc", "desc"]}, "Sort direction.")
START_TOKEN = Param("start_token", "query", {"type": "string", "maxLength": 2048},
                    "Keyset paging: the next_token (resultInfo.nextToken) of the previous page.")
KEYSET_SIZE = Param("page_size", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                    "Keyset paging: items per page (1 to 1000).")
BRIGHTCOVE = (SORT, SORT_DIR, START_TOKEN, KEYSET_SIZE, SELECT)
# Flussonic's names for keyset paging, where an answer is Flussonic's (it carries next and prev).
CURSOR = Param("cursor", "query", {"type": "string", "maxLength": 2048},
               "Keyset paging, Flussonic's way: the next or prev of an earlier answer (instead of start_token).")
LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
              "Keyset paging, Flussonic's way: items per page, 1 to 1000 (instead of page_size; default 1000).")
FILTER_DOC = ("Filter: a value, op:value (gt, ge, lt, le), 'quoted string', or [a,b] (OR); "
              "filters combine with AND.")


def filter_params(fields: dict[str, FieldSpec]) -> tuple[Param, ...]:
    return tuple(Param(name, "query", {"type": "string", "maxLength": 1024},
                       f"{spec.description or spec.kind} {FILTER_DOC}".strip()) for name, spec in fields.items())


def list_params(fields: dict[str, FieldSpec], sorts: tuple[str, ...], order: str,
                default_size: int = 10) -> tuple[Param, ...]:
    """What every list accepts: offset paging (pageIndex, pageSize), keyset paging (start_token,
    page_size), sort and sort_dir, select= over the row fields, and its filter fields."""
    sort = Param("sort", "query", {"type": "string", "enum": list(sorts)},
                 f"Sort field (default {sorts[0]}). {order}")
    page_size, keyset_size = PAGE_SIZE, KEYSET_SIZE
    if default_size != 10:
        page_size = Param("pageSize", "query", PAGE_SIZE.schema, f"Items per page (1 to 1000, default {default_size}).")
        keyset_size = Param("page_size", "query", KEYSET_SIZE.schema,
                            f"Keyset paging: items per page (1 to 1000, default {default_size}).")
    return (PAGE_INDEX, page_size, sort, SORT_DIR, START_TOKEN, keyset_size, SELECT, *filter_params(fields))


OUTPUT_SORTS = ("created_at", "modified_at")
OUTPUT_ORDER = ("created_at/modified_at are the live job's; a job's outputs follow each other by outputId "
                "(ties: the job's id).")
TIMING_SORTS = ("created_at",)
TIMING_ORDER = "created_at is the row's startDateTime; rows of the same time keep their order in the history."
STATS_SORTS = ("created_at", "modified_at")
STATS_ORDER = "One row (the job's input statistics): created_at/modified_at are the job's."
TEMPLATE_SORTS = ("default", "id", "created_at", "modified_at")
TEMPLATE_ORDER = "default: the default template first, then by id; id: by id; created_at/modified_at: ties by id."
STREAMER_SORTS = ("created_at", "modified_at")
STREAMER_ORDER = "The Pod's or node's; ties by role, namespace and name."


LIVE = "/api/v{version}/projects/{projectId}/livejobs"
RECORD = "/api/v{version}/projects/{projectId}/recordjobs"
TEMPLATES = "/api/v{version}/projects/{projectId}/jobtemplates"
ALIBABA = (
    Param("Keyword", "query", {"type": "string", "maxLength": 256}, "Matches the job id (integer or GUID) or name."),
    Param("StartTime", "query", {"type": "string", "maxLength": 40},
          "Created at or after, UTC yyyy-MM-ddTHH:mm:ssZ; at most 30 days before EndTime."),
    Param("EndTime", "query", {"type": "string", "maxLength": 40}, "Created at or before, UTC yyyy-MM-ddTHH:mm:ssZ."),
    Param("Status", "query", {"type": "string", "enum": list(mapping.RECORD_STATUSES)}, "initial, started, paused..."),
    Param("PageNo", "query", {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "Page number, from 1."),
    Param("PageSize", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}, "Items per page."),
    Param("SortBy", "query", {"type": "string", "enum": ["asc", "desc"]}, "Creation time order (default desc)."),
)

OUTPUT_ID = Param("outputId", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
                  "Only this output (its outputId in …/livejobs/outputs): the job's phases, then the output's own "
                  "state (status, its rendition as childStatus, its last segment's time).")

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/login", "login", "Exchange an API key for a short-lived JWT", "auth", None,
          body=schemas.LoginRequest, result=schemas.LoginResult, errors=(400, 401)),
    Route("GET", "/api/openapi.json", "openapi", "This OpenAPI document", "meta", None, errors=(),
          raw_response="application/json"),
    Route("GET", LIVE, "list_live_jobs", "List live jobs", "livejobs", Role.READ,
          (VERSION, PROJECT, SEARCH, PAGE_INDEX, PAGE_SIZE, *BRIGHTCOVE,
           *filter_params(mapping.LIVE_JOB_FIELDS)),
          result=schemas.LiveJobSummary, result_is_list=True, filters=mapping.LIVE_JOB_FIELDS),
    Route("POST", LIVE, "create_live_job", "Create a live job", "livejobs", Role.WRITE, (VERSION, PROJECT, IDEMPOTENCY),
          body=schemas.LiveJobCreate, result=schemas.LiveJobDetail, status=201, errors=(400, 401, 403, 404, 422),
          idempotent_post=True),
    Route("GET", LIVE + "/outputs", "list_outputs", "List the outputs (renditions) of the project's live jobs",
          "livejobs", Role.READ,
          (VERSION, PROJECT, Param("liveJobId", "query", JOB_ID.schema,
                                   "Only this live job's outputs: its integer id, or its name (its GUID); 404 when "
                                   "there is no such job.", invalid=NOT_A_JOB_ID),
           *list_params(mapping.OUTPUT_FIELDS, OUTPUT_SORTS, OUTPUT_ORDER, MAX_PAGE_SIZE)),
          result=schemas.LiveJobOutput, result_is_list=True, filters=mapping.OUTPUT_FIELDS, sorts=OUTPUT_SORTS,
          default_page_size=MAX_PAGE_SIZE),
    Route("POST", LIVE + "/{id}", "control_live_job",
          "Start or stop encoding; a start/finish range cuts a clip (a RecordJob)", "livejobs", Role.WRITE,
          (VERSION, PROJECT, STREAM_KEY, IDEMPOTENCY), body=schemas.LiveJobControl,
          result=schemas.LiveJobControlResult, status=201, errors=(400, 401, 403, 404, 409, 422),
          idempotent_post=True),
    Route("GET", LIVE + "/{id}", "get_live_job", "Get a live job", "livejobs", Role.READ,
          (VERSION, PROJECT, JOB_ID, SELECT), result=schemas.LiveJobDetail),
    Route("DELETE", LIVE + "/{id}", "delete_live_job", "Delete a live job", "livejobs", Role.WRITE,
          (VERSION, PROJECT, JOB_ID), result=None),
    Route("GET", LIVE + "/{id}/timings", "live_job_timings", "Phase history of a live job", "livejobs", Role.READ,
          (VERSION, PROJECT, JOB_ID, OUTPUT_ID, *list_params(mapping.TIMING_FIELDS, TIMING_SORTS, TIMING_ORDER)),
          result=schemas.LiveJobTimingOut, result_is_list=True, filters=mapping.TIMING_FIELDS, sorts=TIMING_SORTS),
    Route("GET", LIVE + "/{id}/stats", "live_job_stats",
          "Input statistics of a live job: one row with every field, null until the encoder reports it",
          "livejobs", Role.READ,
          (VERSION, PROJECT, JOB_ID, *list_params(mapping.STATS_FIELDS, STATS_SORTS, STATS_ORDER, MAX_PAGE_SIZE)),
          result=schemas.Statistics, result_is_list=True, filters=mapping.STATS_FIELDS, sorts=STATS_SORTS,
          default_page_size=MAX_PAGE_SIZE),
    Route("GET", RECORD, "list_record_jobs", "List record jobs (Alibaba ListLiveRecordJobs semantics)", "recordjobs",
          Role.READ, (VERSION, PROJECT, *ALIBABA, SEARCH, PAGE_INDEX, PAGE_SIZE, *BRIGHTCOVE,
                      *filter_params(mapping.RECORD_JOB_FIELDS)),
          result=schemas.RecordJobOut, result_is_list=True, filters=mapping.RECORD_JOB_FIELDS),
    Route("POST", RECORD, "create_record_job", "Create a record job", "recordjobs", Role.WRITE,
          (VERSION, PROJECT, IDEMPOTENCY), body=schemas.RecordJobCreate, result=schemas.RecordJobOut, status=201,
          errors=(400, 401, 403, 404, 422), idempotent_post=True),
    Route("GET", RECORD + "/{id}", "get_record_job", "Get a record job", "recordjobs", Role.READ,
          (VERSION, PROJECT, JOB_ID, SELECT), result=schemas.RecordJobOut),
    Route("DELETE", RECORD + "/{id}", "delete_record_job", "Delete a record job", "recordjobs", Role.WRITE,
          (VERSION, PROJECT, JOB_ID), result=None),
    Route("POST", RECORD + "/{id}/pause", "pause_record_job", "Pause a record job", "recordjobs", Role.WRITE,
          (VERSION, PROJECT, JOB_ID), result=schemas.RecordJobOut, errors=(400, 401, 403, 404, 409)),
    Route("POST", RECORD + "/{id}/resume", "resume_record_job", "Resume a record job", "recordjobs", Role.WRITE,
          (VERSION, PROJECT, JOB_ID), result=schemas.RecordJobOut, errors=(400, 401, 403, 404, 409)),
    Route("POST", RECORD + "/{id}/stop", "stop_record_job", "Stop a record job (its time range ends now)",
          "recordjobs", Role.WRITE, (VERSION, PROJECT, JOB_ID), result=schemas.RecordJobOut,
          errors=(400, 401, 403, 404, 409)),
    Route("GET", TEMPLATES, "list_templates", "List the job templates a project can use", "jobtemplates", Role.READ,
          (VERSION, PROJECT, *list_params(mapping.TEMPLATE_FIELDS, TEMPLATE_SORTS, TEMPLATE_ORDER, MAX_PAGE_SIZE)),
          result=schemas.JobTemplateOut, result_is_list=True, filters=mapping.TEMPLATE_FIELDS, sorts=TEMPLATE_SORTS,
          default_page_size=MAX_PAGE_SIZE),
    Route("GET", TEMPLATES + "/{templateId}", "get_template", "Get a job template by its id", "jobtemplates",
          Role.READ, (VERSION, PROJECT, Param("templateId", "path",
                                              {"type": "string", "pattern": r"^[0-9]{1,10}$"}, "spec.id", True,
                                              "must be an integer")),
          result=schemas.JobTemplateOut),
    Route("GET", "/api/v{version}/projects/{projectId}/webhooks/signingkey", "webhook_signing_key",
          "The key this project's webhooks (callbackUrl, notifyUrl) are signed with", "webhooks", Role.WRITE,
          (VERSION, PROJECT), result=schemas.WebhookSigningKey),
    Route("GET", "/api/v1/streamers", "streamers", "Encoder Pods and nodes with their current metrics", "operations",
          Role.ADMIN, (*list_params(mapping.STREAMER_FIELDS, STREAMER_SORTS, STREAMER_ORDER, MAX_PAGE_SIZE),
                       CURSOR, LIMIT),
          result=schemas.StreamersResult, errors=(400, 401, 403), filters=mapping.STREAMER_FIELDS,
          sorts=STREAMER_SORTS, row_model=schemas.Streamer, default_page_size=MAX_PAGE_SIZE),
    Route("GET", "/api/v1/health", "health", "Health of the platform's jobs and of the gateway", "operations",
          Role.ADMIN, (Param("format", "query", {"type": "string", "enum": ["json", "openmetrics"]},
                             "openmetrics: the OpenMetrics text format instead of JSON."),),
          result=schemas.Health, errors=(400, 401, 403)),
)
