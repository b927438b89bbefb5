"""Request handlers. Reads come from the Store (watch-fed caches); writes go to the API server and
their results are put into the caches at once (read-your-writes)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from onair.api_gateway import mapping, query, schemas
from onair.api_gateway.auth import (
    ALL_PROJECTS,
    Principal,
    Role,
    VerifiedTokens,
    bearer_token,
    find_key,
)
from onair.api_gateway.cache import JobEntry, JobIndex, Store, rv_int
from onair.api_gateway.config import GatewayConfig
from onair.api_gateway.errors import (
    ApiProblem,
    EncodedJSON,
    envelope,
    json_response,
    list_body,
    list_response,
    page_info,
    validation_errors,
)
from onair.api_gateway.routes import Route
from onair.api_gateway.schemas import GUID_PATTERN, LiveJobControl, LiveJobCreate, LoginRequest, RecordJobCreate
from onair.api_gateway.watched_secrets import WatchedSecret
from onair.kubeclient import ApiError, KubeClient, resource_path
from onair.models import API_VERSION, JobTemplateSpec, LiveJobSpec, RecordJobSpec
from onair.streamkeys import WEBHOOK_SIGNATURE_HEADER, derive_webhook_key

log = logging.getLogger("onair.gateway")
T = TypeVar("T")
GUID_RE = re.compile(GUID_PATTERN)
MAX_RANGE = timedelta(days=30)


VERSION = importlib.metadata.version("onair")


def packed_version(version: str) -> int:
    """A release's version as one integer that orders as the releases do (Flussonic's /health has an integer):
    1.2.3 is 1002003; a suffix (1.2.3rc1) is left out."""
    numbers = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    major, minor, patch = (int(number or 0) for number in (numbers.groups() if numbers else (0, 0, 0)))
    return major * 1_000_000 + minor * 1_000 + patch


# The request Content-Encodings aiohttp decodes (the others it would hand over undecoded).
BODY_ENCODINGS = ("gzip", "deflate", "br", "zstd")


async def read_body(request: web.Request) -> bytes:
    """The request body, decoded; a 415 for a Content-Encoding that is not decoded, a 413 past
    client_max_size (counted after decoding)."""
    codings = request.headers.getall("Content-Encoding", [])
    # As aiohttp reads it: one ASCII value, in any case, with spaces or tabs around it.
    coding = codings[0].strip(" \t") if len(codings) == 1 else ", ".join(codings)
    if coding.isascii():
        coding = coding.lower()
    if codings and coding not in (*BODY_ENCODINGS, "identity", ""):
        shown = coding.encode("ascii", "backslashreplace").decode()
        raise ApiProblem(415, f"Content-Encoding: {shown} is not supported; send one of {', '.join(BODY_ENCODINGS)} "
                              "or none", headers={"Accept-Encoding": ", ".join(BODY_ENCODINGS)})
    return await request.read()


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """A JSON body as `model` (strict), or a 400 naming what is wrong with it."""
    if not raw.strip():
        raise ApiProblem(400, "body: a JSON object is required")
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as error:
        invalid = error
    # Parsed a second time only to say what is wrong with it in plainer words than pydantic's.
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiProblem(400, f"body: not valid JSON ({error})") from error
    except RecursionError as error:  # pydantic stops at its own depth limit; json.loads overflows
        raise ApiProblem(400, "body: nested too deeply") from error
    if not isinstance(data, dict):
        raise ApiProblem(400, "body: must be a JSON object")
    raise ApiProblem(400, *validation_errors(invalid)) from invalid


# Reads of jobs the cache lacks go to the API server (another replica may have just made them): at most
# this many a second per project, with bursts of twice as many, so that a client asking for ids that do
# not exist cannot turn reads into API-server requests. Past the budget the answer is the cache's.
MISS_LOOKUPS_PER_SECOND = 20.0
# How far past the highest id in use a lost counter starts again, in blocks: past any block another
# replica may still hold (each holds at most two).
LOST_COUNTER_GAP_BLOCKS = 100
# A pause, resume or stop is written onto the version of the job it was judged on; another writer (the
# operator's status) may come between that often before the call gives up.
RECORD_PATCH_TRIES = 5


@dataclass
class LookupBudget:
    """A token bucket: `take()` is true while the rate allows one more lookup."""

    rate: float
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        # A wall clock stepped back refills nothing, and takes nothing back.
        self.tokens = min(2 * self.rate, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Ctx:
    principal: Principal | None
    project_id: str | None = None
    namespace: str | None = None


class Gateway:
    def __init__(self, config: GatewayConfig, store: Store, kube: KubeClient | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.kube = kube
        self.openapi_document: dict[str, Any] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.id_pools: dict[str, deque[int]] = {}  # per namespace: leased ids not handed out yet
        self.lease_locks: dict[str, asyncio.Lock] = {}
        self.refilling: set[str] = set()  # namespaces whose next block is being leased
        self.miss_budgets: dict[str, LookupBudget] = {}
        self.id_counters: dict[str, Any] | None = None  # the id ConfigMap as this gateway last wrote or read it
        self.server_id = str(uuid.uuid4())
        self.tokens = VerifiedTokens(config.jwt_secret, config.api_keys)
        # The Secrets it watches (API keys, signing key): read before the gateway is ready.
        self.watched_secrets: list[WatchedSecret] = []

    def ready(self) -> bool:
        """What /readyz answers and /health says: the caches listed and the watched Secrets read."""
        return self.store.ready() and all(secret.cache.synced.is_set() for secret in self.watched_secrets)

    # --- plumbing ---------------------------------------------------------------------------------

    def wrap(self, route: Route) -> Callable[[web.Request], Any]:
        handler = getattr(self, route.handler)
        # Whole-value matches: "$" alone lets a trailing newline through.
        path_patterns = [(p.name, re.compile(p.schema["pattern"]), p.invalid) for p in route.params
                         if p.location == "path" and "pattern" in p.schema]
        query_patterns = [(p.name, re.compile(p.schema["pattern"]), p.invalid) for p in route.params
                          if p.location == "query" and "pattern" in p.schema]
        query_names = route.query_names
        length_limits = {p.name: p.schema["maxLength"] for p in route.params
                         if p.location == "query" and "maxLength" in p.schema}
        spelled = query_spellings(query_names)
        # Filters may repeat (they combine with AND); any other parameter means one value.
        single_names = query_names - set(route.filters)

        async def wrapped(request: web.Request) -> web.StreamResponse:
            if any(name not in query_names and name.lower() in spelled for name in request.query):
                renamed = [(spelled.get(name.lower(), name), value) for name, value in request.query.items()]
                request = request.clone(rel_url=request.rel_url.with_query(renamed))
            principal = None
            if route.role is not None:
                principal = self.tokens.principal(bearer_token(request.headers.get("Authorization")))
            errors = []
            version = request.match_info.get("version")
            if version is not None and version != "1":
                raise ApiProblem(404, f"version: API version {version!r} does not exist; use 1")
            for name, pattern, invalid in path_patterns:
                if not pattern.fullmatch(request.match_info.get(name, "")):
                    errors.append(f"{name}: {invalid}")
            for name, pattern, invalid in query_patterns:
                if (value := request.query.get(name)) is not None and not pattern.fullmatch(value):
                    errors.append(f"{name}: {invalid}")
            errors.extend(f"{name}: at most {length_limits[name]} characters" for name, value in request.query.items()
                          if name in length_limits and len(value) > length_limits[name])
            if len(request.query) > len(set(request.query)):
                errors.extend(f"{name}: given more than once" for name in sorted(set(request.query) & single_names)
                              if len(request.query.getall(name)) > 1)
            if not route.filters:
                unknown = sorted(set(request.query) - query_names)
                errors.extend(f"{name}: unknown query parameter" for name in unknown)
            if errors:
                raise ApiProblem(400, *errors)
            ctx = Ctx(principal)
            if principal is not None:
                project_id = request.match_info.get("projectId")
                principal.require(route.role or Role.READ, project_id)
                if project_id is not None:
                    ctx.project_id = project_id.lower()
                    self.require_ready()
                    ctx.namespace = self.store.project_namespace.get(ctx.project_id)
                    if ctx.namespace is None and len(self.store.project_claims.get(ctx.project_id) or ()) > 1:
                        raise ApiProblem(409, f"projectId: project {ctx.project_id} is claimed by more than one "
                                              "namespace; it is served again once only one carries its id")
                    if ctx.namespace is None:
                        raise ApiProblem(404, f"projectId: project {ctx.project_id} not found")
            return await handler(request, ctx)

        return wrapped

    def visible_namespaces(self, principal: Principal | None) -> frozenset[str] | None:
        """The namespaces of the projects a token may see (its jobs, their Pods); None: all of them."""
        if principal is None or ALL_PROJECTS in principal.projects:
            return None
        return frozenset(namespace for project, namespace in self.store.project_namespace.items()
                         if principal.can_see(project))

    def require_ready(self) -> None:
        if not self.store.ready():
            raise ApiProblem(503, "the gateway is still loading its caches; retry", headers={"Retry-After": "1"})

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def kube_client(self) -> KubeClient:
        if self.kube is None:
            raise ApiProblem(503, "the gateway has no Kubernetes connection")
        return self.kube

    # --- auth & meta ------------------------------------------------------------------------------

    async def login(self, request: web.Request, ctx: Ctx) -> web.Response:
        body: LoginRequest = parse_body(await read_body(request), LoginRequest)
        key = find_key(self.tokens.api_keys, body.api_key)
        if key is None:
            raise ApiProblem(401, "apiKey: unknown API key")
        token = self.tokens.issue(key, self.config.token_ttl_seconds)
        return json_response(envelope({"token": token, "tokenType": "Bearer",
                                       "expiresIn": self.config.token_ttl_seconds,
                                       "role": key.role.value, "projects": sorted(key.projects)}))

    async def openapi(self, request: web.Request, ctx: Ctx) -> web.Response:
        return json_response(self.openapi_document)

    # --- live jobs --------------------------------------------------------------------------------

    async def live_entry(self, ctx: Ctx, ident: str) -> JobEntry:
        entry = await self.find_job(ctx, ident, live=True)
        if entry is None:
            raise ApiProblem(404, f"id: live job {ident} not found")
        return entry

    async def find_job(self, ctx: Ctx, ident: str, live: bool) -> JobEntry | None:
        """The job from the cache; on a miss, from the API server (one request in the project's
        namespace), put into the cache. Another replica may have created the job a moment ago and this
        replica's watch not have brought it yet: a client still reads its own write."""
        assert ctx.namespace
        entry = self.job_index(ctx.namespace, live).find(ident)
        if entry is not None or self.kube is None or not self.lookup_allowed(ctx.namespace):
            return entry
        plural = "livejobs" if live else "recordjobs"
        found: dict[str, Any] | None = None
        if GUID_RE.fullmatch(ident):
            found = await self.kube.get_or_none(resource_path(API_VERSION, plural, ctx.namespace, ident.lower()))
        elif ident.isdigit() and 0 < int(ident) < mapping.HASHED_ID_BASE:  # an allocated id (a label)
            page = await self.kube.get(resource_path(API_VERSION, plural, ctx.namespace),
                                       labelSelector=f"{mapping.LABEL_ID}={int(ident)}")
            found = next(iter(page.get("items") or []), None)
        if found is None:
            return None
        # Refused when the cache has it newer, or saw it deleted.
        (self.store.livejobs if live else self.store.recordjobs).upsert(found)
        return self.job_index(ctx.namespace, live).find(ident)

    def job_index(self, namespace: str, live: bool) -> JobIndex:
        return (self.store.live_index if live else self.store.record_index)(namespace)

    def stream_key(self, namespace: str, name: str) -> str | None:
        return self.store.stream_keys.get((namespace, name))

    async def list_live_jobs(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        search = request.query.get("search")
        namespace = ctx.namespace

        def row(entry: JobEntry) -> dict[str, Any]:
            return self.store.live_row(namespace, entry)[0]

        def row_json(entry: JobEntry) -> str:
            return self.store.live_row(namespace, entry)[1]

        def keyless_row(entry: JobEntry) -> dict[str, Any]:
            return mapping.live_job_summary(entry.obj, entry.facts, None)

        # A read-only token's rows, without the key, are made for its request: the kept rows and pages
        # carry the key.
        secrets_shown = shows_secrets(ctx)
        return list_response(run_list(request, self.route_of(request), self.store.live_index(namespace), [],
                                      newest_settled_ms=self.newest_settled_ms(),
                                      search=mapping.search_needle(search) if search else None, default_desc=False,
                                      render=row if secrets_shown else keyless_row,
                                      render_json=row_json if secrets_shown else None))

    def newest_settled_ms(self) -> int:
        """The creation time (ms) up to which every job is in the cache by now. Kubernetes stamps
        creation in whole seconds, a create commits a moment after its stamp, and another replica's
        (or kubectl's) job reaches this cache through its watch: a job stamped second S is settled
        once S + 1 + keyset_settle_seconds has passed here."""
        return int((self.clock() - 1 - self.config.keyset_settle_seconds) * 1000)

    def route_of(self, request: web.Request) -> Route:
        return request.match_info.route.handler.route  # type: ignore[attr-defined]

    async def create_live_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace and ctx.project_id
        raw = await read_body(request)
        body: LiveJobCreate = parse_body(raw, LiveJobCreate)
        name, idempotent = self.new_name(request, ctx)
        if idempotent and (earlier := self.store.live_index(ctx.namespace).entries.get(name)) is not None:
            return self.replay(earlier, raw, ctx, live=True)
        try:
            spec = mapping.live_job_spec_from_request(body)
            if body.end_date_time is not None and body.end_date_time <= datetime.fromtimestamp(self.clock(), UTC):
                # Such a job would never go live: the operator takes it as finished at once.
                raise ApiProblem(400, f"endDateTime: {body.end_date_time.isoformat()} has passed; a live job's "
                                      "schedule finishes in the future (leave it out for a job that runs until "
                                      "it is stopped)")
            templates = self.store.templates_for(ctx.namespace)
            if spec["jobTemplateId"] not in templates:
                raise ApiProblem(400, f"jobTemplateId: no JobTemplate with id {spec['jobTemplateId']} in this "
                                      f"project (available: {', '.join(map(str, sorted(templates))) or 'none'})")
            if (ambiguous := self.store.ambiguous_template(ctx.namespace, spec["jobTemplateId"])) is not None:
                raise ApiProblem(400, ambiguous)
        except ApiProblem as problem:
            return await self.replay_or_raise(problem, ctx, name if idempotent else None, raw, live=True)
        kube = self.kube_client()
        job_id = await self.allocate_id(ctx.namespace)
        obj = mapping.live_job_object(name, ctx.namespace, ctx.project_id, job_id, spec,
                                      request_digest(raw) if idempotent else None)
        # One write: the stream key is derived from the job's uid (the operator derives the same one
        # for the encoder's Secret), so nothing else has to be stored before the key can be returned.
        created = await kube.create(resource_path(API_VERSION, "livejobs", ctx.namespace), obj)
        if created is None:  # AlreadyExists: a retried Idempotency-Key
            current = await kube.get(resource_path(API_VERSION, "livejobs", ctx.namespace, name))
            return self.replay(not_being_deleted(self.cached_entry(ctx.namespace, current, live=True)), raw, ctx,
                               live=True)
        self.store.livejobs.upsert(created)
        entry = self.store.live_index(ctx.namespace).entries[name]
        detail = mapping.live_job_detail(entry.obj, entry.facts, self.stream_key(ctx.namespace, name), ctx.project_id,
                                         secrets_shown=shows_secrets(ctx))
        return json_response(envelope(detail, messages=["live job created"]), 201,
                             headers={"Location": f"{request.path}/{name}"})

    def cached_entry(self, namespace: str, obj: dict[str, Any], live: bool) -> JobEntry | None:
        """`obj`, as the API server answered it, put into the cache, and its entry there: None when the
        cache saw it deleted (a finalizer may hold it in the API server a while)."""
        (self.store.livejobs if live else self.store.recordjobs).upsert(obj)
        return self.job_index(namespace, live).entries.get(str(obj["metadata"]["name"]))

    def replay(self, entry: JobEntry, raw: bytes, ctx: Ctx, live: bool) -> web.Response:
        assert ctx.namespace and ctx.project_id
        if entry.obj["metadata"].get("deletionTimestamp"):
            raise key_job_being_deleted()
        require_same_body(entry.obj, raw)
        if live:
            result = mapping.live_job_detail(entry.obj, entry.facts, self.stream_key(ctx.namespace, entry.name),
                                             ctx.project_id, secrets_shown=shows_secrets(ctx))
        else:
            result = mapping.record_job_out(entry.obj, entry.facts, self.template_name(ctx.namespace),
                                            secrets_shown=shows_secrets(ctx))
        return json_response(envelope(result, messages=["replayed: this Idempotency-Key created it before"]), 201,
                             headers={"Idempotent-Replayed": "true"})

    def new_name(self, request: web.Request, ctx: Ctx) -> tuple[str, bool]:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return str(uuid.uuid4()), False
        if not key.strip() or len(key) > 255 or not key.isascii() or not key.isprintable():
            raise ApiProblem(400, "Idempotency-Key: 1 to 255 printable ASCII characters")
        # Lower case: the ids in the path (project, job, stream key) match in any case.
        seed = f"onair:{ctx.project_id}:{request.path.lower()}:{key}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, seed)), True

    async def allocate_id(self, namespace: str) -> int:
        """Unique integer ids per project: blocks leased from the project's counter in the id
        ConfigMap with optimistic concurrency (a conflicting lease retries), handed out from memory. The next
        block is leased in the background when half of the current one is used, so a create does not
        wait for a lease."""
        pool = self.id_pools.setdefault(namespace, deque())
        if not pool:
            await self._lease_ids(namespace)
        job_id = pool.popleft()
        if len(pool) < self.config.id_block_size // 2 and namespace not in self.refilling:
            self.refilling.add(namespace)
            self.spawn(self._refill_ids(namespace))
        return job_id

    async def _refill_ids(self, namespace: str) -> None:
        try:
            await self._lease_ids(namespace)
        except Exception:  # the next create leases in its own time, and reports what fails
            log.warning("leasing ids for %s in the background failed", namespace, exc_info=True)
        finally:
            self.refilling.discard(namespace)

    async def _lease_ids(self, namespace: str) -> None:
        lock = self.lease_locks.setdefault(namespace, asyncio.Lock())
        async with lock:
            pool = self.id_pools[namespace]
            if len(pool) >= self.config.id_block_size // 2:
                return  # leased meanwhile
            kube = self.kube_client()
            configmaps = resource_path("v1", "configmaps", self.config.template_namespace)
            path = resource_path("v1", "configmaps", self.config.template_namespace, self.config.id_counter_configmap)
            counters = self.id_counters or await kube.get_or_none(path)
            # Counters kept by gateways before the ConfigMap (a namespace annotation) still count.
            annotations = (self.store.namespaces.get("", namespace) or {}).get("metadata", {}).get("annotations") or {}
            for _ in range(20):
                if counters is None:  # the chart makes it; a gateway run without the chart makes its own
                    counters = await self._create_id_counters(configmaps, path)
                floors = [(counters.get("data") or {}).get(namespace, ""),
                          annotations.get(mapping.ANNOTATION_NEXT_ID, "")]
                highest = self.store.max_label_id(namespace)
                if highest and not any(text.isdigit() for text in floors):
                    # The counter was lost (its ConfigMap deleted): other replicas may still hold blocks
                    # past the highest id in use, so the ids go on well clear of them.
                    highest += LOST_COUNTER_GAP_BLOCKS * self.config.id_block_size
                start = max(*(int(text) for text in floors if text.isdigit()), highest + 1,
                            (pool[-1] + 1) if pool else 1)
                end = start + self.config.id_block_size
                if end >= mapping.HASHED_ID_BASE:
                    raise ApiProblem(507, "this project has used up its integer ids")
                patch = {"metadata": {"resourceVersion": counters["metadata"]["resourceVersion"]},
                         "data": {namespace: str(end)}}
                try:
                    self.id_counters = await kube.merge_patch(path, patch)
                except ApiError as error:
                    if error.status not in (404, 409):
                        raise
                    self.id_counters = counters = await kube.get_or_none(path)  # None: made again above
                    continue
                pool.extend(range(start, end))
                return
            raise ApiProblem(503, "could not allocate an id (too much contention); retry")

    async def _create_id_counters(self, configmaps: str, path: str) -> dict[str, Any]:
        kube = self.kube_client()
        try:
            created = await kube.create(configmaps, {"apiVersion": "v1", "kind": "ConfigMap",
                                                     "metadata": {"name": self.config.id_counter_configmap}})
        except ApiError as error:  # not the client's fault: a 503 that says what the platform lacks
            log.error("cannot make the id ConfigMap %s: %s", path, error)
            raise ApiProblem(503, f"the gateway cannot keep job ids: ConfigMap {self.config.id_counter_configmap} "
                                  f"in namespace {self.config.template_namespace}: {error}") from error
        return created or await kube.get(path)

    async def list_outputs(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        rows: list[mapping.ListRow] = []
        if (wanted := request.query.get("liveJobId")) is not None:
            # As GET …/livejobs/{id} finds it: a job another replica has just made is asked of the API server.
            if (entry := await self.find_job(ctx, wanted, live=True)) is None:
                raise ApiProblem(404, f"liveJobId: live job {wanted} not found")
            rows.extend(mapping.output_rows(entry.obj, entry.facts))
        else:
            for _, entry in self.store.live_index(ctx.namespace).ordered():
                rows.extend(mapping.output_rows(entry.obj, entry.facts))
        page, info = run_rows(request, self.route_of(request), rows)
        return json_response(envelope(page, result_info=info))

    def require_kept(self, namespace: str, entry: JobEntry, start: datetime, finish: datetime,
                     start_field: str = "startDateTime") -> None:
        """400 for a live cut of a job that will no longer keep the start of the range when the clip is
        cut: one that does not record keeps only its live window (LiveJobSpec.kept_seconds). The clip
        is cut once the stream reaches `finish`, by a Pod that has to start first: the range must lie
        a segment inside the window, for the window's slide meanwhile."""
        try:
            spec = LiveJobSpec.model_validate(entry.obj.get("spec") or {})
            found = self.store.templates_for(namespace).get(spec.job_template_id)
            if found is None:
                return  # the job waits for its template; what it will keep is not known yet
            template = JobTemplateSpec.model_validate(found[0].get("spec") or {})
        except ValidationError:
            return  # the operator reports what is wrong with the job or its template
        kept = spec.kept_seconds(template)
        if kept is None:
            return
        now = datetime.fromtimestamp(self.clock(), UTC)
        earliest = max(now, finish) - timedelta(seconds=kept - spec.segment_seconds(template))
        if start >= earliest:
            return
        ending = "now" if finish <= now else f"at {finish.isoformat().replace('+00:00', 'Z')}"
        shown = (earliest + timedelta(microseconds=999_999)).replace(microsecond=0)  # a start that is accepted
        raise ApiProblem(400, f"{start_field}: the live job does not record (recording: false) and keeps only the "
                              f"last {kept} s of its stream (its live window: dvrWindowSeconds, or the template's "
                              f"playlistWindow segments), so a cut ending {ending} can start at "
                              f"{shown.isoformat().replace('+00:00', 'Z')} at the earliest; set recording: true, "
                              "or a longer dvrWindowSeconds, to cut from further back")

    def require_cuttable(self, namespace: str, entry: JobEntry, start: datetime | None, finish: datetime | None,
                         fields: tuple[str, str]) -> None:
        """400 for a range of a live job that has nothing to cut, or whose start the job no longer keeps
        when the clip is cut (`fields`: how the request names the range's start and end)."""
        created = entry.obj["metadata"].get("creationTimestamp")
        created_at = mapping.parse_time(created)
        if finish is not None and created_at is not None and finish <= created_at:
            raise ApiProblem(400, f"{fields[1]}: the live job was created at {created}: "
                                  "it streamed nothing before, so the range has nothing to cut")
        schedule = (entry.obj.get("spec") or {}).get("schedule") or {}
        scheduled_finish = mapping.parse_time(schedule.get("finishDateTime"))
        now = datetime.fromtimestamp(self.clock(), UTC)
        if (start is not None and scheduled_finish is not None and scheduled_finish <= now
                and start >= scheduled_finish):
            raise ApiProblem(400, f"{fields[0]}: the live job's schedule finished at {schedule['finishDateTime']}: "
                                  "it streamed nothing after, so the range has nothing to cut")
        if start is not None and finish is not None:
            self.require_kept(namespace, entry, max(start, created_at or start), finish, fields[0])

    async def replay_or_raise(self, problem: ApiProblem, ctx: Ctx, keyed_name: str | None, raw: bytes,
                              live: bool) -> web.Response:
        """A keyed create's retry whose body no longer passes is answered with the job its first try made:
        the clock and the templates may have moved on since (a range that has begun, a template removed),
        and what was made stays made. Looked up in the API server too (another replica may have made it a
        moment ago), within the project's budget of lookups. Any other refusal, or no such job: `problem`."""
        assert ctx.namespace
        earlier = None
        if keyed_name is not None and problem.status == 400 and self.lookup_allowed(ctx.namespace):
            earlier = await self.earlier_job(ctx, keyed_name, live)
        if earlier is None:
            raise problem
        return self.replay(earlier, raw, ctx, live)

    def lookup_allowed(self, namespace: str) -> bool:
        """Whether the project's budget of API-server lookups for what the cache lacks has room for one
        more: asking for jobs that do not exist cannot turn requests into API-server load."""
        now = self.clock()
        budget = self.miss_budgets.setdefault(
            namespace, LookupBudget(MISS_LOOKUPS_PER_SECOND, 2 * MISS_LOOKUPS_PER_SECOND, now))
        return budget.take(now)

    async def earlier_job(self, ctx: Ctx, name: str, live: bool) -> JobEntry | None:
        """The job an Idempotency-Key made before: from the cache, or from the API server when another
        replica made it a moment ago."""
        assert ctx.namespace
        earlier = self.job_index(ctx.namespace, live).entries.get(name)
        if earlier is not None:
            return earlier
        found = await self.kube_client().get_or_none(
            resource_path(API_VERSION, "livejobs" if live else "recordjobs", ctx.namespace, name))
        # None when the cache saw it deleted: then it is made again.
        return None if found is None else self.cached_entry(ctx.namespace, found, live)

    async def control_live_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace and ctx.project_id
        raw_key = request.match_info["id"]  # the stream key
        raw = await read_body(request)
        body: LiveJobControl = parse_body(raw, LiveJobControl)
        found = self.store.by_stream_key.get(raw_key.lower()) or self.store.by_stream_key.get(raw_key)
        index = self.store.live_index(ctx.namespace)
        if found and found[0] == ctx.namespace:
            entry = index.entries.get(found[1])
        else:  # the job's name works too
            entry = await self.find_job(ctx, raw_key, live=True)
        if entry is None:
            raise ApiProblem(404, "id: no live job with this stream key (or name) in the project")
        start, finish = body.start_date_time, body.finish_date_time
        # A range is a live cut, never a schedule: the channel's own schedule is not this call's to change.
        if start and not finish:
            raise ApiProblem(400, "finishDateTime: required with startDateTime (a live cut needs both ends)")
        if finish and not start:
            raise ApiProblem(400, "startDateTime: required with finishDateTime (a live cut needs both ends)")
        # The clip is validated before anything is written, and created after the online switch: a
        # retry after a failure repeats the switch harmlessly instead of cutting a second clip.
        clip_name, clip_spec, body_digest, replayed = "", None, None, False
        # Both ends equal, as in the reference's own example body, is an empty range: it cuts nothing,
        # and the call only starts or stops the job.
        if start is not None and finish is not None and finish != start:
            if finish < start:
                raise ApiProblem(400, "finishDateTime: must be after startDateTime")
            clip_name, idempotent = self.new_name(request, ctx)
            clip_spec = mapping.clip_record_spec(entry.obj, clip_name, start, finish)
            earlier = await self.earlier_job(ctx, clip_name, live=False) if idempotent else None
            if earlier is not None:  # a replay answers what was cut, however far the window has moved since
                require_same_body(earlier.obj, raw)
                replayed = True
            else:
                self.require_cuttable(ctx.namespace, entry, start, finish, ("startDateTime", "finishDateTime"))
            body_digest = request_digest(raw) if idempotent else None
        if body.online and not replayed:  # with a new cut too: the switch is written first, and it is refused
            finish_text = ((entry.obj.get("spec") or {}).get("schedule") or {}).get("finishDateTime")
            scheduled_finish = mapping.parse_time(finish_text)
            if scheduled_finish is not None and scheduled_finish <= datetime.fromtimestamp(self.clock(), UTC):
                raise ApiProblem(409, f"online: the job's schedule finished at {finish_text}; it cannot go "
                                      "online again (move schedule.finishDateTime, or create a job)")
        kube = self.kube_client()
        updated = entry.obj
        if not replayed:  # a replay answers what the first call did: its switch is not written again
            job_path = resource_path(API_VERSION, "livejobs", ctx.namespace, entry.name)
            updated = await kube.merge_patch(job_path, {"spec": {"online": body.online}})
            self.store.livejobs.upsert(updated)
        urls = (updated.get("status") or {}).get("urls") or {}
        result = {"online": body.online, "playBackPathURL": urls.get("cdn") or urls.get("storageMasterFile")}
        if clip_spec is not None:
            created = await self.create_record(ctx, clip_name, clip_spec, None, body_digest)
            if created.get("_replayed"):  # made by another replica, or before this one's cache saw it
                require_same_body(created, raw)
                replayed = True
            result.update(playBackPathURL=mapping.clip_playback_url(entry.obj, clip_spec), recordJobName=clip_name,
                          recordJobId=mapping.object_id(created))
        return json_response(envelope(result, messages=["live cut created" if clip_spec else "live job updated"]), 201,
                             headers={"Idempotent-Replayed": "true"} if replayed else None)

    async def get_live_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace and ctx.project_id
        entry = await self.live_entry(ctx, request.match_info["id"])
        secrets_shown = shows_secrets(ctx)
        key = self.stream_key(ctx.namespace, entry.name) if secrets_shown else None
        detail = mapping.live_job_detail(entry.obj, entry.facts, key, ctx.project_id, secrets_shown=secrets_shown)
        return json_response(envelope(select(request, detail, self.route_of(request).select_fields)))

    async def delete_live_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        entry = await self.live_entry(ctx, request.match_info["id"])
        # The API server's answer is the job as it is deleted: newer than the cache's copy may be.
        deleted = await self.kube_client().delete(resource_path(API_VERSION, "livejobs", ctx.namespace, entry.name))
        self.store.livejobs.remove(deleted if deleted and deleted.get("metadata") else entry.obj)
        return json_response(envelope(None, messages=["live job deleted"]))

    async def live_job_timings(self, request: web.Request, ctx: Ctx) -> web.Response:
        entry = await self.live_entry(ctx, request.match_info["id"])
        output_id = query_int(request, "outputId", None, 1, 1000)
        if output_id is not None and output_id > len((entry.obj.get("status") or {}).get("outputs") or []):
            raise ApiProblem(404, f"outputId: live job {entry.id} has no output {output_id}")
        page, info = run_rows(request, self.route_of(request), mapping.timing_rows(entry.obj, output_id))
        return json_response(envelope(page, result_info=info))

    async def live_job_stats(self, request: web.Request, ctx: Ctx) -> web.Response:
        entry = await self.live_entry(ctx, request.match_info["id"])
        page, info = run_rows(request, self.route_of(request), mapping.stats_rows(entry.obj, entry.facts))
        return json_response(envelope(page, result_info=info))

    # --- record jobs ------------------------------------------------------------------------------

    def template_name(self, namespace: str) -> Callable[[int], str | None]:
        templates = self.store.templates_for(namespace)

        def name(template_id: int) -> str | None:
            found = templates.get(template_id)
            return (found[0].get("spec") or {}).get("name") if found else None
        return name

    async def record_entry(self, ctx: Ctx, ident: str) -> JobEntry:
        entry = await self.find_job(ctx, ident, live=False)
        if entry is None:
            raise ApiProblem(404, f"id: record job {ident} not found")
        return entry

    async def list_record_jobs(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        q = request.query
        extra: list[query.Predicate] = []
        errors: list[str] = []
        for alias, contract in (("PageNo", "pageIndex"), ("PageSize", "pageSize")):
            if alias in q and contract in q:
                errors.append(f"{alias}: give {alias} or {contract}, not both")
        # Keyword and search look in the same text; given both, a job must contain both (AND).
        needles = [mapping.search_needle(text) for text in (q.get("Keyword"), q.get("search")) if text]
        extra.extend(query.contains("search", needle) for needle in needles[1:])
        start = end = None
        try:
            if q.get("StartTime"):
                start = query.parse_utc_time(q["StartTime"], "StartTime")
            if q.get("EndTime"):
                end = query.parse_utc_time(q["EndTime"], "EndTime")
        except query.QueryError as error:
            errors.extend(error.errors)
        if start and end:
            if end < start:
                errors.append("EndTime: must not be before StartTime")
            elif end - start > MAX_RANGE:
                errors.append("EndTime: at most 30 days after StartTime")
        if errors:
            raise ApiProblem(400, *errors)
        if start:
            start_ms = query.to_millis(start)
            extra.append(lambda f: f["created_at"] >= start_ms)
        if end:
            end_ms = query.to_millis(end)
            extra.append(lambda f: f["created_at"] <= end_ms)
        status = q.get("Status")
        if status:
            if status.lower() not in mapping.RECORD_STATUSES:
                raise ApiProblem(400, f"Status: must be one of {', '.join(mapping.RECORD_STATUSES)}")
            wanted = status.lower()
            extra.append(lambda f: f["status"] == wanted)
        sort_by = q.get("SortBy")
        if sort_by is not None and sort_by not in ("asc", "desc"):
            raise ApiProblem(400, "SortBy: must be asc or desc")
        if sort_by is not None and q.get("sort_dir", sort_by) != sort_by:
            raise ApiProblem(400, "SortBy: asks the other order than sort_dir; give one of the two")
        namespace = ctx.namespace
        names = self.template_name(namespace)
        secrets_shown = shows_secrets(ctx)
        return list_response(run_list(
            request, self.route_of(request), self.store.record_index(namespace), extra,
            search=needles[0] if needles else None, default_desc=(sort_by or "desc") == "desc",
            render=lambda e: mapping.record_job_out(e.obj, e.facts, names, secrets_shown=secrets_shown),
            page_index_name="PageNo" if "PageNo" in q else "pageIndex",
            page_size_name="PageSize" if "PageSize" in q else "pageSize", newest_settled_ms=self.newest_settled_ms()))

    async def create_record_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace and ctx.project_id
        raw = await read_body(request)
        body: RecordJobCreate = parse_body(raw, RecordJobCreate)
        name, idempotent = self.new_name(request, ctx)
        if idempotent and (earlier := self.store.record_index(ctx.namespace).entries.get(name)) is not None:
            return self.replay(earlier, raw, ctx, live=False)
        try:
            spec = await self.record_job_spec(ctx, body)
        except ApiProblem as problem:
            return await self.replay_or_raise(problem, ctx, name if idempotent else None, raw, live=False)
        created = await self.create_record(ctx, name, spec, body.name, request_digest(raw) if idempotent else None)
        entry = not_being_deleted(self.store.record_index(ctx.namespace).entries.get(str(created["metadata"]["name"])))
        if created.get("_replayed"):
            return self.replay(entry, raw, ctx, live=False)
        result = mapping.record_job_out(entry.obj, entry.facts, self.template_name(ctx.namespace),
                                        secrets_shown=shows_secrets(ctx))
        return json_response(envelope(result, messages=["record job created"]), 201,
                             headers={"Location": f"{request.path}/{name}"})

    async def record_job_spec(self, ctx: Ctx, body: RecordJobCreate) -> dict[str, Any]:
        """The RecordJob spec a create asks for; a 400 naming the field when it could never record."""
        assert ctx.namespace
        spec = body.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"name"})
        try:
            spec = RecordJobSpec.model_validate(spec).to_k8s()
        except ValidationError as error:
            raise ApiProblem(400, *validation_errors(error)) from error
        time_range = spec.get("timeRange") or {}
        start, end = mapping.parse_time(time_range.get("start")), mapping.parse_time(time_range.get("end"))
        ended = end is not None and end <= datetime.fromtimestamp(self.clock(), UTC)
        source_job = spec["source"].get("liveJobRef")
        if source_job:
            source = await self.find_job(ctx, source_job, live=True)
            if source is None:
                raise ApiProblem(400, f"source.liveJobRef: no live job {source_job} in this project")
            spec["source"]["liveJobRef"] = source.name
            self.require_cuttable(ctx.namespace, source, start, end, ("timeRange.start", "timeRange.end"))
            if spec.get("paused") and ended:
                raise ApiProblem(400, "paused: a past range is cut at once; a clip pauses only while it follows its "
                                      "live job")
        elif ended:
            raise ApiProblem(400, "timeRange.end: has passed; a stream is recorded live, and a past range can only "
                                  "be cut from a live job's stored segments (source.liveJobRef)")
        template_id = spec.get("jobTemplateId")
        if template_id is not None and template_id not in self.store.templates_for(ctx.namespace):
            raise ApiProblem(400, f"jobTemplateId: no JobTemplate with id {template_id} in this project")
        if template_id is not None and (ambiguous := self.store.ambiguous_template(ctx.namespace, template_id)):
            raise ApiProblem(400, ambiguous)
        return spec

    async def create_record(self, ctx: Ctx, name: str, spec: dict[str, Any], display_name: str | None,
                            body_digest: str | None) -> dict[str, Any]:
        assert ctx.namespace and ctx.project_id
        kube = self.kube_client()
        job_id = await self.allocate_id(ctx.namespace)
        annotations = {mapping.ANNOTATION_BODY_HASH: body_digest} if body_digest else {}
        if display_name:
            annotations[mapping.ANNOTATION_DISPLAY_NAME] = display_name
        obj = {"apiVersion": API_VERSION, "kind": "RecordJob",
               "metadata": {"name": name, "namespace": ctx.namespace, "annotations": annotations,
                            "labels": {mapping.LABEL_PROJECT: ctx.project_id, mapping.LABEL_ID: str(job_id)}},
               "spec": spec}
        created = await kube.create(resource_path(API_VERSION, "recordjobs", ctx.namespace), obj)
        if created is None:
            created = await kube.get(resource_path(API_VERSION, "recordjobs", ctx.namespace, name))
            self.store.recordjobs.upsert(created)
            return {**created, "_replayed": True}
        self.store.recordjobs.upsert(created)
        return created

    async def get_record_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        entry = await self.record_entry(ctx, request.match_info["id"])
        result = mapping.record_job_out(entry.obj, entry.facts, self.template_name(ctx.namespace),
                                        secrets_shown=shows_secrets(ctx))
        return json_response(envelope(select(request, result, self.route_of(request).select_fields)))

    async def delete_record_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        entry = await self.record_entry(ctx, request.match_info["id"])
        # The API server's answer is the job as it is deleted: newer than the cache's copy may be.
        deleted = await self.kube_client().delete(resource_path(API_VERSION, "recordjobs", ctx.namespace, entry.name))
        self.store.recordjobs.remove(deleted if deleted and deleted.get("metadata") else entry.obj)
        return json_response(envelope(None, messages=["record job deleted"]))

    async def patch_record(self, ctx: Ctx, entry: JobEntry, change: Callable[[JobEntry], dict[str, Any]],
                           message: str) -> web.Response:
        """`change`: the spec patch for a version of the job, or an ApiProblem when that version cannot
        take it. It is written onto that version only, and judged again on a newer one: a job that
        failed meanwhile would record again on a change of its spec (that is how a failed job is
        retried), and a pause must not do that."""
        assert ctx.namespace
        kube = self.kube_client()
        path = resource_path(API_VERSION, "recordjobs", ctx.namespace, entry.name)
        uid = entry.obj["metadata"].get("uid")
        for _ in range(RECORD_PATCH_TRIES):
            if entry.facts["status"] in ("completed", "failed"):
                raise ApiProblem(409, f"record job {entry.id} is {entry.facts['status']}; it cannot change any more")
            patch = {"metadata": {"resourceVersion": entry.obj["metadata"]["resourceVersion"]}, "spec": change(entry)}
            try:
                updated = await kube.merge_patch(path, patch)
                break
            except ApiError as error:
                if error.status != 409:
                    raise
            current = await kube.get_or_none(path)
            if current is not None:
                self.store.recordjobs.upsert(current)
            newer = self.store.record_index(ctx.namespace).entries.get(entry.name)
            if current is None or newer is None or newer.obj["metadata"].get("uid") != uid:
                # Deleted, maybe made again under the same name: that is another job.
                raise ApiProblem(404, f"id: record job {entry.id} not found")
            entry = newer
        else:
            raise ApiProblem(409, f"record job {entry.id} kept changing; retry")
        self.store.recordjobs.upsert(updated)
        entry = self.store.record_index(ctx.namespace).entries[entry.name]
        return json_response(envelope(mapping.record_job_out(entry.obj, entry.facts, self.template_name(ctx.namespace),
                                                             secrets_shown=shows_secrets(ctx)), messages=[message]))

    async def pause_record_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        def pause(entry: JobEntry) -> dict[str, Any]:
            spec = entry.obj.get("spec") or {}
            end = mapping.parse_time((spec.get("timeRange") or {}).get("end"))
            if (spec.get("source") or {}).get("liveJobRef") and end is not None and \
                    end <= datetime.fromtimestamp(self.clock(), UTC):
                raise ApiProblem(409, "a clip of a past range is cut at once; it cannot pause (delete it instead)")
            return {"paused": True}

        return await self.patch_record(ctx, await self.record_entry(ctx, request.match_info["id"]), pause,
                                       "record job paused")

    async def resume_record_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        return await self.patch_record(ctx, await self.record_entry(ctx, request.match_info["id"]),
                                       lambda entry: {"paused": False}, "record job resumed")

    async def stop_record_job(self, request: web.Request, ctx: Ctx) -> web.Response:
        def stop(entry: JobEntry) -> dict[str, Any]:
            time_range = (entry.obj.get("spec") or {}).get("timeRange") or {}
            now = datetime.now(UTC).replace(microsecond=0)
            start = mapping.parse_time(time_range.get("start"))
            end = mapping.parse_time(time_range.get("end"))
            if start is not None and start >= now:
                raise ApiProblem(409, "the recording has not started yet; delete it instead")
            new_end = end if end is not None and end <= now else now
            return {"paused": False, "timeRange": {"end": new_end.isoformat().replace("+00:00", "Z")}}

        return await self.patch_record(ctx, await self.record_entry(ctx, request.match_info["id"]), stop,
                                       "record job stopping")

    # --- templates --------------------------------------------------------------------------------

    async def list_templates(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        rows = mapping.template_rows(self.store.templates_for(ctx.namespace))
        page, info = run_rows(request, self.route_of(request), rows)
        return json_response(envelope(page, result_info=info))

    async def get_template(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        template_id = int(request.match_info["templateId"])
        found = self.store.templates_for(ctx.namespace).get(template_id)
        if found is None:
            raise ApiProblem(404, f"templateId: no JobTemplate with id {template_id}")
        return json_response(envelope({**(found[0].get("spec") or {}), "shared": found[1]}))

    # --- webhooks ---------------------------------------------------------------------------------

    async def webhook_signing_key(self, request: web.Request, ctx: Ctx) -> web.Response:
        assert ctx.namespace
        if not self.config.webhook_secret:
            raise ApiProblem(404, "webhooks: this installation signs no webhooks (the gateway has no "
                                  "ONAIR_GATEWAY_WEBHOOK_SECRET)")
        return json_response(envelope({
            "signingKey": derive_webhook_key(self.config.webhook_secret, ctx.namespace),
            "header": WEBHOOK_SIGNATURE_HEADER,
            "scheme": 't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"> under signingKey; refuse a t '
                      "more than 5 minutes old",
        }))

    # --- operations -------------------------------------------------------------------------------

    async def streamers(self, request: web.Request, ctx: Ctx) -> web.Response:
        """Encoder and recorder Pods (the job Pods the operator made; not the gateway's or operator's own),
        then nodes. Filters, sort, paging and select= apply to the rows in "streamers"; estimated_count
        counts the rows that match."""
        node_usage = await self.node_metrics()
        visible = self.visible_namespaces(ctx.principal)
        jobs_by_node: dict[str, int] = {}
        rows: list[mapping.ListRow] = []
        for pod in self.store.pods.values():
            meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
            labels = meta.get("labels") or {}
            role = labels.get("onair.dev/role")
            if role not in ("encoder", "recorder") or (visible is not None and meta.get("namespace") not in visible):
                continue
            node = spec.get("nodeName") or ""
            if node:
                jobs_by_node[node] = jobs_by_node.get(node, 0) + 1
            namespace = str(meta.get("namespace") or "")
            job_name = labels.get("onair.dev/job", "")
            job = (self.store.livejobs.get(namespace, job_name) if role == "encoder"
                   else self.store.recordjobs.get(namespace, job_name)) or {}
            job_status = job.get("status") or {}
            stats = job_status.get("statistics") or {}
            project_id = labels.get(mapping.LABEL_PROJECT)
            keys = {"created_at": mapping.millis(meta.get("creationTimestamp")),
                    "modified_at": mapping.modified_millis(pod)}
            encoder_stats = schemas.EncoderStats(
                namespace=namespace, project_id=project_id, job=job_name, job_phase=job_status.get("phase"),
                pod_phase=status.get("phase"), node=node or None, pod_ip=status.get("podIP"),
                started_at=mapping.millis(status.get("startTime")) // 1000 or None,
                restarts=sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or []),
                input_kbit=(stats.get("videoDataRate") or 0) + (stats.get("audioDataRate") or 0),
                outputs=len(job_status.get("outputs") or []))
            rows.append(mapping.ListRow(
                schemas.Streamer(role=role, hostname=meta["name"], labels=labels,
                                 stats=encoder_stats).model_dump(mode="json"),
                {"role": role, "hostname": meta["name"], "node": node or None, "status": status.get("phase"),
                 "job": job_name, "namespace": namespace, "project_id": project_id, **keys},
                keys, 0, f"{role}/{namespace}/{meta['name']}"))
        for node_obj in self.store.nodes.values():
            meta, status = node_obj["metadata"], node_obj.get("status") or {}
            ready = next((c.get("status") == "True" for c in status.get("conditions") or []
                          if c.get("type") == "Ready"), False)
            usage = node_usage.get(meta["name"], {})
            keys = {"created_at": mapping.millis(meta.get("creationTimestamp")),
                    "modified_at": mapping.modified_millis(node_obj)}
            allocatable = status.get("allocatable") or status.get("capacity") or {}
            node_stats = schemas.NodeStats(
                ready=ready, capacity=status.get("capacity") or {}, allocatable=status.get("allocatable") or {},
                encoders=jobs_by_node.get(meta["name"], 0),
                cpu_usage=mapping.percent_of(usage.get("cpu"), allocatable.get("cpu")),
                memory_usage=mapping.percent_of(usage.get("memory"), allocatable.get("memory")),
                usage={name: str(value) for name, value in usage.items() if name in ("cpu", "memory")},
                kubelet_version=(status.get("nodeInfo") or {}).get("kubeletVersion"))
            rows.append(mapping.ListRow(
                schemas.Streamer(role="node", hostname=meta["name"], labels=meta.get("labels") or {},
                                 stats=node_stats).model_dump(mode="json"),
                {"role": "node", "hostname": meta["name"], "node": meta["name"],
                 "status": "Ready" if ready else "NotReady", "job": None, "namespace": None, "project_id": None,
                 **keys},
                keys, 1, f"node//{meta['name']}"))
        page, info, previous = run_rows_both_ways(request, self.route_of(request), rows)
        return json_response(envelope({"estimated_count": info["totalCount"], "next": info["nextToken"],
                                       "prev": previous, "streamers": page}, result_info=info))

    async def node_metrics(self) -> dict[str, dict[str, str]]:
        if self.kube is None:
            return {}
        try:
            page = await self.kube.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes", timeout=2)
        except Exception:
            return {}
        return {item["metadata"]["name"]: item.get("usage") or {} for item in page.get("items", [])}

    def health_data(self, principal: Principal | None) -> schemas.Health:
        """Job counts of the projects the token may see; nodes and the gateway's own state of all."""
        visible = self.visible_namespaces(principal)

        def seen(jobs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            return (job for job in jobs if visible is None or job["metadata"].get("namespace") in visible)

        live = [mapping.LIVE_HEALTH.get(mapping.live_phase(o), "partial_outage")
                for o in seen(self.store.livejobs.values())]
        records = [mapping.RECORD_HEALTH.get(mapping.record_status(o), "partial_outage")
                   for o in seen(self.store.recordjobs.values())]
        nodes = []
        for node in self.store.nodes.values():
            ready = next((c.get("status") == "True" for c in (node.get("status") or {}).get("conditions") or []
                          if c.get("type") == "Ready"), False)
            nodes.append("operational" if ready else "outage")
        return schemas.Health(version=packed_version(VERSION), version_name=VERSION, server_id=self.server_id,
                              collected_at=int(self.clock() * 1000),
                              ready=self.ready(), caches={c.name: c.synced.is_set() for c in self.store.caches},
                              stream_metrics_total=mapping.totals(live), record_metrics_total=mapping.totals(records),
                              streamer_metrics_total=mapping.totals(nodes))

    async def health(self, request: web.Request, ctx: Ctx) -> web.Response:
        data = self.health_data(ctx.principal)
        if request.query.get("format") == "openmetrics":
            lines = []
            for metric, totals in (("onair_streams", data.stream_metrics_total),
                                   ("onair_record_jobs", data.record_metrics_total),
                                   ("onair_streamers", data.streamer_metrics_total)):
                lines.append(f"# TYPE {metric} gauge")
                for state, count in totals.model_dump(exclude={"total"}).items():
                    lines.append(f'{metric}{{state="{state}"}} {count}')
            lines.append("# TYPE onair_gateway_ready gauge")
            lines.append(f"onair_gateway_ready {1 if data.ready else 0}")
            lines.append("# EOF")
            return web.Response(text="\n".join(lines) + "\n",
                                headers={"Content-Type": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
        if request.query.get("format") not in (None, "json"):
            raise ApiProblem(400, "format: must be json or openmetrics")
        return json_response(envelope(data.model_dump(mode="json")))


# --- list helpers --------------------------------------------------------------------------------

def shows_secrets(ctx: Ctx) -> bool:
    """A stream key lets its holder publish into the channel, and a job's URLs may carry credentials
    (an origin's user:password, a webhook receiver's token): only a token that may write the project's
    jobs (write, admin) is given them. A read-only token (a dashboard) gets a null key and the URLs
    without user:password and query (mapping.url_for)."""
    return ctx.principal is None or ctx.principal.role.allows(Role.WRITE)


def key_job_being_deleted() -> ApiProblem:
    return ApiProblem(409, "Idempotency-Key: the job made with this key is being deleted; once it is gone the key "
                           "makes a new one (or use another key)")


def not_being_deleted(entry: JobEntry | None) -> JobEntry:
    """The cache's entry of a job a key made, which the cache lacks when it saw it deleted."""
    if entry is None:
        raise key_job_being_deleted()
    return entry


def request_digest(raw: bytes) -> str:
    """What a POST's body is for its Idempotency-Key: the SHA-256 of its JSON with the keys sorted and
    no spaces, so that a retry that serialised the same object again (another key order, indented) is
    the same request. Called only on a body the request's model has parsed."""
    canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def require_same_body(obj: dict[str, Any], raw: bytes) -> None:
    """A retried Idempotency-Key must carry the body that made `obj`; another body is a 422. A job
    made before the digest was canonical recorded its body's bytes' SHA-256: those bytes still match."""
    recorded = (obj["metadata"].get("annotations") or {}).get(mapping.ANNOTATION_BODY_HASH)
    if recorded is not None and recorded not in (request_digest(raw), hashlib.sha256(raw).hexdigest()):
        raise ApiProblem(422, "Idempotency-Key: already used with a different request body")


def query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return query.parse_int(raw, name, 0, low, high)
    except query.QueryError as error:
        raise ApiProblem(400, *error.errors) from error


def query_spellings(declared: Iterable[str]) -> dict[str, str]:
    """The declared query name each spelling in lower case stands for. The reference spells its
    parameters both ways (pageIndex in the URL, PageIndex in its table), and the .NET servers it
    describes match them in any case: so does the gateway. Where two declared names differ only in
    case (the record jobs' PageSize and pageSize, Status and status), another spelling is the one
    that begins in lower case, whatever order the names come in (the same in every replica)."""
    return {name.lower(): name for name in sorted(declared, key=lambda name: (name[:1].islower(), name))}


def select(request: web.Request, item: dict[str, Any], allowed: query.SelectTree) -> dict[str, Any]:
    raw = request.query.get("select")
    if raw is None:
        return item
    try:
        return query.project(item, query.parse_select(raw, allowed))
    except query.QueryError as error:
        raise ApiProblem(400, *error.errors) from error


def run_list(request: web.Request, route: Route, index: JobIndex, extra: list[query.Predicate], default_desc: bool,
             render: Callable[[JobEntry], dict[str, Any]], search: str | None = None,
             render_json: Callable[[JobEntry], str] | None = None, page_index_name: str = "pageIndex",
             page_size_name: str = "pageSize", newest_settled_ms: int | None = None) -> bytes:
    """The encoded envelope of one page: a text search (lower case), filters (the declared params plus
    the Brightcove filter fields), sort, offset or keyset paging, and the select= projection, over one
    namespace's index. Without select=, `render_json` (a row already encoded) is used when given.
    Ascending keyset pages by creation end before jobs created after `newest_settled_ms`."""
    def compute() -> bytes:
        return list_body(*_run_list(request, route, index, extra, default_desc, render, search, render_json,
                                    page_index_name, page_size_name, newest_settled_ms))
    if render_json is None or "select" in request.query:
        return compute()
    # The answer depends only on the query, the index version (stream keys touch the index too) and,
    # while some jobs are still settling, which ones have.
    settling = newest_settled_ms is not None and index.newest_stamp_ms > newest_settled_ms
    settled = newest_settled_ms // 1000 if settling and newest_settled_ms is not None else None
    return index.remembered(("page", route.path, tuple(sorted(request.query.items())), settled), compute)


# Flussonic's names for keyset paging (start_token, page_size), on the lists that declare them.
FLUSSONIC_KEYSET = ("cursor", "limit")


@dataclass
class ListQuery:
    """The parsed list parameters of one request: filters, sort, paging and select=."""

    predicates: list[query.Predicate]
    sort: str
    descending: bool
    keyset: bool
    size: int
    page_index: int
    after: query.SortKey | None
    walk: query.DescendingWalk | None  # a keyset walk newest first: where it stands, from its token
    query_parts: list[tuple[str, str]]  # what a token's fingerprint is of
    paths: list[tuple[str, ...]] | None
    selecting: tuple[tuple[str, str], ...]  # the parameters that decide which rows match
    backward: bool = False  # a Flussonic prev cursor: the page that ends before `after`

    @cached_property  # needed only for a token: most pages of a search have none
    def fingerprint(self) -> str:
        return query.fingerprint(self.query_parts)


def parse_list_query(request: web.Request, route: Route, extra: list[query.Predicate], default_desc: bool,
                     page_index_name: str = "pageIndex", page_size_name: str = "pageSize") -> ListQuery:
    """The query language every list shares; a bad parameter is a 400 naming it."""
    q = request.query
    declared = route.query_names - set(route.filters)
    filter_pairs = [(k, v) for k, v in q.items() if k not in declared]
    paging = ("start_token", "page_size", *FLUSSONIC_KEYSET, "select", page_index_name, page_size_name)
    try:
        token_name, size_name = "start_token", "page_size"
        if FLUSSONIC_KEYSET[0] in declared:
            # Flussonic's names for the same keyset paging; its answers' next and prev come back in `cursor`.
            for flussonic, brightcove in zip(FLUSSONIC_KEYSET, (token_name, size_name), strict=True):
                if flussonic in q and brightcove in q:
                    raise query.QueryError(f"{flussonic}: give {flussonic} or {brightcove}, not both")
            token_name = FLUSSONIC_KEYSET[0] if FLUSSONIC_KEYSET[0] in q else token_name
            size_name = FLUSSONIC_KEYSET[1] if FLUSSONIC_KEYSET[1] in q else size_name
        predicates = query.compile_filters(filter_pairs, route.filters) + extra
        sort = q.get("sort", route.sorts[0])
        if sort not in route.sorts:
            choices = route.sorts[0] if len(route.sorts) == 1 else (
                ", ".join(route.sorts[:-1]) + " or " + route.sorts[-1])
            raise query.QueryError(f"sort: must be {choices}")
        sort_dir = q.get("sort_dir")
        if sort_dir is not None and sort_dir not in ("asc", "desc"):
            raise query.QueryError("sort_dir: must be asc or desc")
        descending = default_desc if sort_dir is None else sort_dir == "desc"
        keyset = token_name in q or size_name in q
        if keyset and (page_index_name in q or page_size_name in q):
            raise query.QueryError(f"{token_name}: keyset paging ({token_name}, {size_name}) does not mix with "
                                   f"{page_index_name}/{page_size_name}")
        paths = query.parse_select(q["select"], route.select_fields) if "select" in q else None
        # A token belongs to its list (the path: the route, the project, the job) and its filters. Paging
        # is not part of it (an offset page's next_token continues in keyset paging), nor how the sort is
        # spelled: the token carries the sort itself.
        query_parts = [("~path", request.path.lower()),
                       *((k, v) for k, v in q.items() if k not in paging and k not in ("sort", "sort_dir"))]
        if keyset:
            size = query.parse_int(q.get(size_name), size_name, route.default_page_size, 1, query.MAX_PAGE_SIZE)
            page_index = 0
        else:
            page_index = query.parse_int(q.get(page_index_name), page_index_name, 1, 1, 1_000_000)
            size = query.parse_int(q.get(page_size_name), page_size_name, route.default_page_size, 1,
                                   query.MAX_PAGE_SIZE)
        selecting = tuple(sorted((k, v) for k, v in q.items() if k not in paging))
        lq = ListQuery(predicates, sort, descending, keyset, size, page_index, None, None, query_parts, paths,
                       selecting)
        if keyset and (token := q.get(token_name)):
            # The fingerprint made here is the one this page's own token carries on.
            lq.after, lq.walk, lq.backward = query.decode_walk_token(token, sort, descending, lq.fingerprint,
                                                                     token_name)
            if lq.backward and FLUSSONIC_KEYSET[0] not in declared:
                raise query.QueryError(f"{token_name}: not a token this API gave out")
    except query.QueryError as error:
        raise ApiProblem(400, *error.errors) from error
    return lq


def page_of(lq: ListQuery, matched: Sequence[tuple[query.SortKey, T]], newest_settled_ms: int | None = None
            ) -> tuple[list[T], dict[str, Any]]:
    """One page of `matched` (sorted ascending by its unique keys): keyset or offset paging.

    `newest_settled_ms`: every job created up to then is in the cache; one created later may reach it
    after another stamped later still (a slower create, another replica's). Ascending by creation, a
    keyset page ends before the jobs still settling and its token waits there, so a late job is not
    passed. Newest first, where a late job sorts among those already given, the token carries the walk
    (query.DescendingWalk) and a later page gives the late job first."""
    total = len(matched)
    settled = None  # how many of the first jobs have settled, when it matters
    if newest_settled_ms is not None and not lq.descending and lq.sort == "created_at":
        # Not by modified_at: running jobs change all the time, and a walk held for them would not end.
        settled = query.settled_count(matched, newest_settled_ms)
    if lq.keyset:
        items, keys = [item for _, item in matched], [key for key, _ in matched]
        walk = None
        has_previous = lq.after is not None
        if lq.backward:
            assert lq.after is not None  # only a token leads backward
            page, last, has_previous = query.backward_page(items, keys, lq.after, lq.descending, lq.size)
            if not page:  # what was before is gone (deleted meanwhile): the first page, not a dead end
                page, last = query.keyset_page(items, keys, None, lq.descending, lq.size)
        elif newest_settled_ms is not None and lq.descending:
            page, last, walk = query.descending_walk_page(items, keys, lq.after, lq.walk, lq.size, newest_settled_ms,
                                                          changes=lq.sort == "modified_at")
        else:
            page, last = query.keyset_page(items, keys, lq.after, lq.descending, lq.size, settled)
        token = query.encode_token(lq.sort, lq.descending, last, lq.fingerprint, walk) if last else None
        return page, page_info(total, 0, lq.size, token, keyset=True, has_previous=has_previous)
    skip = (lq.page_index - 1) * lq.size
    if lq.descending:  # page n of the reversed order, without reversing all of it
        chosen = matched[max(total - skip - lq.size, 0):max(total - skip, 0)][::-1]
    else:
        chosen = matched[skip:skip + lq.size]
    # Brightcove: every answer with more results after it carries a next_token.
    more = chosen and skip + lq.size < total
    token = None
    if more:
        after = chosen[-1][0]
        walk = None
        if settled is not None and settled <= skip + len(chosen) - 1:
            # It continues in keyset paging: from the jobs still settling, as a keyset page's would,
            # so a late job is not passed (those on this page may come again).
            after = matched[settled - 1][0] if settled else query.BEFORE_ALL
        elif newest_settled_ms is not None and lq.descending and skip == 0:  # the walk's first page
            walk = query.walk_state(None, [key for key, _ in chosen], newest_settled_ms)
        token = query.encode_token(lq.sort, lq.descending, after, lq.fingerprint, walk)
    return [item for _, item in chosen], page_info(total, lq.page_index, lq.size, token)


def _run_list(request: web.Request, route: Route, index: JobIndex, extra: list[query.Predicate], default_desc: bool,
              render: Callable[[JobEntry], dict[str, Any]], search: str | None,
              render_json: Callable[[JobEntry], str] | None, page_index_name: str,
              page_size_name: str, newest_settled_ms: int | None
              ) -> tuple[list[dict[str, Any]] | EncodedJSON, dict[str, Any]]:
    lq = parse_list_query(request, route, extra, default_desc, page_index_name, page_size_name)
    if lq.predicates or search:
        matched = index.matching((route.path, lq.selecting), lq.predicates, search)
    else:
        matched = list(index.ordered())
    if lq.sort == "modified_at":
        # Kubernetes times have one-second resolution; the resourceVersion orders changes within a second.
        matched = sorted(((int(e.facts["modified_at"]), rv_int(e.obj), e.name), e) for _, e in matched)
    page, info = page_of(lq, matched, newest_settled_ms)
    if lq.paths is None and render_json is not None:
        return EncodedJSON("[" + ",".join(render_json(entry) for entry in page) + "]"), info
    rows = [render(entry) for entry in page]
    if lq.paths is not None:
        rows = [query.project(row, lq.paths) for row in rows]
    return rows, info


def run_rows(request: web.Request, route: Route, rows: Sequence[mapping.ListRow], default_desc: bool = False
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The same query language as run_list over rows built for this request (see mapping.ListRow)."""
    page, info, _ = _rows_page(request, route, rows, default_desc, with_previous=False)
    return page, info


def run_rows_both_ways(request: web.Request, route: Route, rows: Sequence[mapping.ListRow],
                       default_desc: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """run_rows, and a token to the page before this one (Flussonic's prev; None on the first page)."""
    return _rows_page(request, route, rows, default_desc, with_previous=True)


def _rows_page(request: web.Request, route: Route, rows: Sequence[mapping.ListRow], default_desc: bool,
               with_previous: bool) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    lq = parse_list_query(request, route, [], default_desc)
    matched = sorted((((int(r.keys[lq.sort]), r.order, r.ident), r.row)
                      for r in rows if all(p(r.facts) for p in lq.predicates)), key=lambda pair: pair[0])
    page, info = page_of(lq, matched)
    previous = None
    if page and with_previous:
        at = next(index for index, (_, row) in enumerate(matched) if row is page[0])
        if (at < len(matched) - 1) if lq.descending else at > 0:
            previous = query.encode_token(lq.sort, lq.descending, matched[at][0], lq.fingerprint, backward=True)
    elif with_previous and matched and (lq.after is not None and not lq.backward if lq.keyset else lq.page_index > 1):
        # Past the end (a page number beyond the last, or a cursor whose rows after it were deleted
        # meanwhile): prev is the last page (the last `size` rows), rather than none at all.
        beyond = query.BEFORE_ALL if lq.descending else query.AFTER_ALL
        previous = query.encode_token(lq.sort, lq.descending, beyond, lq.fingerprint, backward=True)
    if lq.paths is not None:
        page = [query.project(row, lq.paths) for row in page]
    return page, info, previous


__all__ = ["Gateway"]
