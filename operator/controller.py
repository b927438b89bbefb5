"""The API layer: caches fed by kopf's watch events, a work queue, and the application of each
reconcile decision (create, delete, status patch, Events, webhooks). Handlers in main.py only feed
events in; every write to the API server happens here."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from pydantic import ValidationError

from onair.jsonlog import job_context
from onair.kubeclient import ApiError, KubeClient, resource_path
from onair.models import (
    API_VERSION,
    MAX_DESCRIPTION_LENGTH,
    MAX_MESSAGE_LENGTH,
    MAX_PENDING_WEBHOOKS,
    MAX_TIMINGS,
    Condition,
    JobTemplateSpec,
    LiveJob,
    LiveJobTiming,
    RecordJob,
    RecordJobStatus,
    RecordJobTiming,
    describe_errors,
)
from onair.namespaces import listed_namespaces
from onair.operator import builders, metrics, naming
from onair.operator.config import OperatorConfig
from onair.operator.encoder_reports import EncoderReports
from onair.operator.leadership import Leadership
from onair.operator.pods import pod_state
from onair.operator.reconcile import (
    Decision,
    TemplateLookup,
    clip_request,
    decide_live_job,
    decide_record_job,
    forget_refused_child,
    mark_pod_refused,
    progress_only,
    record_attempt,
)
from onair.operator.services import ServiceEndpoint, service_endpoint
from onair.operator.webhooks import (
    WebhookSender,
    build_payload,
    deletion_webhook_id,
    events_announced,
    pending_webhook,
)
from onair.operator.workqueue import WorkQueue
from onair.phases import ConditionReason, ConditionStatus, ConditionType, LiveJobPhase, RecordJobPhase
from onair.streamkeys import derive_control_key

log = logging.getLogger("onair.operator")
Key = tuple[str, str, str]  # (kind, namespace, name)
PLURALS = {"LiveJob": "livejobs", "RecordJob": "recordjobs"}
# Phase changes worth a Kubernetes Event; the rest are in status.timings.
EVENT_PHASES = {"Live", "Reconnecting", "Offline", "Completed", "Failed", "Paused", "Started"}
ALL_PHASES = {str(phase) for phase in (*LiveJobPhase, *RecordJobPhase)}
ERROR_BACKOFF_MAX = 60.0
# A child the API server refuses (a quota, an admission policy): the job says why, and it is tried again.
CREATE_REFUSALS = frozenset({400, 403, 422})
REFUSED_RETRY_SECONDS = 10.0
COMMAND_RETRY_SECONDS = 3.0  # an encoder command (pause, resume, finish, finish-at) not taken is sent again


def _rv(body: dict[str, Any]) -> int:
    value = body.get("metadata", {}).get("resourceVersion", "")
    return int(value) if value.isdigit() else -1


class PackedJson:
    """JSON kept deflated against a preset dictionary: the first object packed. Objects of one kind
    share most of their text (keys, labels, conditions, URLs), so a job of 2.7 kB packs into about
    a hundred bytes, in about 5 µs (and unpacks in 1 µs). With 10,000 jobs that is 30 MB less."""

    WINDOW_BITS = 13  # an 8 kB window (and dictionary): a whole typical job
    MEMORY_LEVEL = 4  # small compressor state: it is made for every object

    def __init__(self) -> None:
        self._dictionary: bytes | None = None

    def pack(self, obj: Any) -> bytes:
        text = json.dumps(obj, separators=(",", ":")).encode()
        if self._dictionary is None:
            self._dictionary = text
        packer = zlib.compressobj(1, zlib.DEFLATED, -self.WINDOW_BITS, self.MEMORY_LEVEL, zdict=self._dictionary)
        return packer.compress(text) + packer.flush()

    def unpack(self, packed: bytes) -> Any:
        assert self._dictionary is not None
        unpacker = zlib.decompressobj(-self.WINDOW_BITS, zdict=self._dictionary)
        return json.loads(unpacker.decompress(packed) + unpacker.flush())


_JOBS = PackedJson()
_PODS = PackedJson()


@dataclass(slots=True)
class CachedJob:
    """A job as the cache keeps it: its body packed (each reconcile unpacks it, in about 10 µs),
    beside the few facts read without unpacking."""

    uid: str
    resource_version: int
    phase: str
    deleting: bool
    live_job_ref: str | None  # a RecordJob's source LiveJob
    packed: bytes

    @classmethod
    def of(cls, body: dict[str, Any]) -> CachedJob:
        # managedFields: never read, and as big as the rest of the object.
        metadata = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        source = (body.get("spec") or {}).get("source") or {}
        return cls(uid=str(metadata.get("uid", "")), resource_version=_rv(body),
                   phase=(body.get("status") or {}).get("phase") or "Unknown",
                   deleting=bool(metadata.get("deletionTimestamp")),
                   live_job_ref=source.get("liveJobRef") if isinstance(source, dict) else None,
                   packed=_JOBS.pack({**body, "metadata": metadata}))

    def body(self) -> dict[str, Any]:
        return cast(dict[str, Any], _JOBS.unpack(self.packed))


@dataclass(slots=True)
class CachedPod:
    """A Pod reduced to what reconciling reads (slim_pod), packed."""

    resource_version: int
    packed: bytes

    @classmethod
    def of(cls, body: dict[str, Any]) -> CachedPod:
        return cls(_rv(body), _PODS.pack(slim_pod(body)))

    def body(self) -> dict[str, Any]:
        return cast(dict[str, Any], _PODS.unpack(self.packed))


POD_METADATA = ("name", "namespace", "uid", "labels", "resourceVersion", "deletionTimestamp", "creationTimestamp")
POD_CONDITION = ("type", "status", "reason", "message")


def slim_pod(body: dict[str, Any]) -> dict[str, Any]:
    """What reconciling needs of a Pod (pod_state reads these): a tenth of the whole object."""
    metadata = body["metadata"]
    status = body.get("status") or {}
    return {
        "metadata": {k: metadata[k] for k in POD_METADATA if k in metadata},
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": {
            "phase": status.get("phase"),
            "podIP": status.get("podIP"),
            "conditions": [{k: c[k] for k in POD_CONDITION if k in c} for c in status.get("conditions") or []
                           if c.get("type") in ("PodScheduled", "Ready")],
            "containerStatuses": [{"name": c.get("name"), "state": c.get("state") or {}}
                                  for c in status.get("containerStatuses") or []],
        },
    }


async def _nothing() -> None:
    return None


def _events_to_post(decision: Decision) -> list[tuple[str, str, str]]:
    return [event for event in decision.events if event[1] in EVENT_PHASES or event[1] not in ALL_PHASES]


# Tries to remove a delivered webhook from the status (about three minutes with the back-off).
FORGET_WEBHOOK_ATTEMPTS = 10
FORGET_WEBHOOK_FIRST_DELAY_SECONDS = 1.0


def webhook_url(body: dict[str, Any]) -> str | None:
    """Where the job's webhooks go (a LiveJob's callbackUrl, a RecordJob's notifyUrl, the Alibaba name),
    read from the stored object: also one the model refuses."""
    spec = body.get("spec")
    url = (spec.get("callbackUrl") or spec.get("notifyUrl")) if isinstance(spec, dict) else None
    return url if isinstance(url, str) and url else None


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` (lists are replaced whole)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Controller:
    def __init__(self, kube: KubeClient, config: OperatorConfig, clock: Callable[[], dt.datetime] = utcnow,
                 leadership: Leadership | None = None) -> None:
        self.kube = kube
        self.config = config
        self.clock = clock
        self.leadership = leadership  # None: always acts (a single replica)
        self.jobs: dict[Key, CachedJob] = {}
        # namespace -> name -> spec, parsed once when the template arrives (None: a spec the model refuses)
        self.templates: dict[str, dict[str, JobTemplateSpec | None]] = defaultdict(dict)
        self.pods: dict[Key, dict[str, CachedPod]] = defaultdict(dict)  # job -> pod name -> pod
        self.recordings_of: dict[tuple[str, str], set[Key]] = defaultdict(set)  # (namespace, LiveJob) -> RecordJobs
        self.queue: WorkQueue[Key] = WorkQueue()
        # The operator needs an encoder's moving counters no more often than it writes them.
        self.reports = EncoderReports(config.poll_interval_seconds,
                                      wait=max(config.status_progress_interval_seconds, config.poll_interval_seconds))
        self.webhooks = WebhookSender(config.webhook_secret, config.webhook_attempts, config.webhook_timeout_seconds,
                                      allow_private=config.webhook_allow_private_addresses)
        self._children_ensured: set[str] = set()  # job uids
        self._services_ensured: set[str] = set()
        # Job uids whose Secret or ingest Service the API server refused: made again at each reconcile,
        # whatever the decision, until it takes them.
        self._secrets_refused: set[str] = set()
        self._services_refused: set[str] = set()
        self._told_to_finish: set[str] = set()  # LiveJobs (uids) being deleted whose encoders were told to finish
        # job uid -> how its ingest Service is reached from outside (NodePort and LoadBalancer only)
        self._ingest_endpoints: dict[str, ServiceEndpoint] = {}
        # job -> until when its new Pod's Provisioning status may wait (see _holds_status)
        self._status_held_until: dict[Key, float] = {}
        self._status_written_at: dict[Key, float] = {}  # monotonic time of each job's last status write
        self._failures: Counter[Key] = Counter()
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        # job -> ids of its pendingWebhooks this process has queued for delivery (kept until the cached
        # status no longer lists them, so that a reconcile in between does not send them again)
        self._webhooks_queued: dict[Key, set[str]] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    async def sync_caches(self) -> None:
        """List the Pods and JobTemplates once before any reconcile: a job must never be judged on a
        cache that has not yet seen its Pod (it would look lost and be replaced) or its template."""
        scopes = listed_namespaces(self.config.watch_namespaces)
        for namespace in scopes:
            async for page in self.kube.pages(resource_path("v1", "pods", namespace),
                                              labelSelector=builders.MANAGED_BY_SELECTOR):
                for pod in page["items"]:
                    self.on_pod_event(None, pod)
        # The operator's own namespace holds the fallback templates, watched or not.
        for namespace in scopes if scopes == [None] else dict.fromkeys([*scopes, self.config.namespace]):
            templates = await self.kube.list(resource_path(API_VERSION, "jobtemplates", namespace))
            for template in templates["items"]:
                self.on_template_event(None, template)
        if self.config.service_type != "ClusterIP":
            # The ingest URL names what the Services say (node ports, a load balancer's address).
            for namespace in scopes:
                async for page in self.kube.pages(resource_path("v1", "services", namespace),
                                                  labelSelector=builders.MANAGED_BY_SELECTOR):
                    for service in page["items"]:
                        self.on_service_event(None, service)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.queue.run_workers(self.config.workers, self.reconcile), name="reconcilers"),
            asyncio.create_task(self.reports.run(), name="encoder-reports"),
        ]
        if self.leadership is not None:
            self._tasks.append(asyncio.create_task(self.leadership.run(self.resync, self._stand_by), name="leadership"))
        self._tasks.append(asyncio.create_task(self._drop_vanished_periodically(), name="drop-vanished"))

    async def _drop_vanished_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            await self._drop_vanished_now()

    async def drop_vanished(self) -> None:
        """A watch that reconnects lists again but reports no deletion that happened while it was away:
        a cached Pod or job the API server no longer has is dropped, and its job looks again (a lost
        Pod is replaced instead of being waited on for ever). Only what the list could have seen:
        something cached at a newer resourceVersion was created after the list was made."""
        for namespace in listed_namespaces(self.config.watch_namespaces):
            listed, present = await self._listed_names(resource_path("v1", "pods", namespace),
                                                       labelSelector=builders.MANAGED_BY_SELECTOR)
            for key, cached_pods in list(self.pods.items()):
                if namespace is not None and key[1] != namespace:
                    continue  # another list's (and resourceVersion's) to judge
                for name, cached in list(cached_pods.items()):
                    if (key[1], name) not in present and cached.resource_version <= listed:
                        log.info("%s %s/%s: Pod %s is gone (deleted while the watch was away)", *key, name)
                        self.on_pod_event("DELETED", cached.body())
            for kind, plural in PLURALS.items():
                listed, present = await self._listed_names(resource_path(API_VERSION, plural, namespace))
                for key, cached_job in list(self.jobs.items()):
                    if namespace is not None and key[1] != namespace:
                        continue
                    if key[0] == kind and key[1:] not in present and cached_job.resource_version <= listed:
                        log.info("%s %s/%s is gone (deleted while the watch was away)", *key)
                        self.on_job_event(kind, "DELETED", cached_job.body())

    async def _listed_names(self, path: str, **params: str) -> tuple[int, set[tuple[str, str]]]:
        """The namespace and name of every object of a list, and the list's resourceVersion. Read as
        metadata only, a page at a time: a kwok Pod parsed whole is 24 kB, 10,000 of them at once
        250 MB, every resync (the operator was seen at 425 and 500 MB in a burst of 10,000 jobs)."""
        listed, present = -1, set[tuple[str, str]]()
        async for page in self.kube.pages(path, metadata_only=True, **params):
            listed = _rv(page)
            present.update((item["metadata"]["namespace"], item["metadata"]["name"]) for item in page["items"] or ())
        return listed, present

    def resync(self) -> None:
        """Everything is looked at again: a replica taking over may have missed what changed meanwhile,
        deletions included (a Pod deleted while it stood by would otherwise stay in its cache until the
        next periodic re-list, and its job would wait that long for a replacement)."""
        for key in list(self.jobs):
            self.queue.add(key)
        self._spawn(self._drop_vanished_now())

    async def _drop_vanished_now(self) -> None:
        try:
            await self.drop_vanished()
        except Exception:  # the next round tries again; the caches are only as stale as before
            log.warning("listing to drop vanished Pods and jobs failed", exc_info=True)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.queue.close()
        await self.reports.close()
        await self.webhooks.close()

    @property
    def acting(self) -> bool:
        """Whether this replica does the work (a standby's caches and queue are not kept current)."""
        return self.leadership is None or self.leadership.active.is_set()

    def queue_depth(self) -> int:
        return len(self.queue) if self.acting else 0

    def phase_counts(self) -> Iterable[tuple[str, str, int]]:
        if not self.acting:
            return []  # the acting replica counts; a standby's figures would be stale, not zero
        counts = Counter((key[0], cached.phase) for key, cached in list(self.jobs.items()))
        return [(kind, phase, n) for (kind, phase), n in counts.items()]

    # -- events in ---------------------------------------------------------------------------------

    def on_job_event(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        key = (kind, body["metadata"]["namespace"], body["metadata"]["name"])
        if event_type == "DELETED":
            cached = self.jobs.pop(key, None)
            if cached is not None and cached.uid == body["metadata"].get("uid"):
                self._announce_deletion(body)  # once: a 404 on a status write and the watch both say so
                if kind == "LiveJob":
                    self._finish_encoders(key, str(cached.uid))
            self._told_to_finish.discard(body["metadata"].get("uid", ""))
            self._children_ensured.discard(body["metadata"].get("uid", ""))
            self._services_ensured.discard(body["metadata"].get("uid", ""))
            self._services_refused.discard(body["metadata"].get("uid", ""))
            self._secrets_refused.discard(body["metadata"].get("uid", ""))
            self._ingest_endpoints.pop(body["metadata"].get("uid", ""), None)
            self._status_held_until.pop(key, None)
            self._status_written_at.pop(key, None)
            self._webhooks_queued.pop(key, None)
            if kind == "RecordJob":
                for source, recordings in list(self.recordings_of.items()):
                    recordings.discard(key)
                    if not recordings:
                        del self.recordings_of[source]
            return
        uid = body["metadata"].get("uid", "")
        if kind == "LiveJob" and body["metadata"].get("deletionTimestamp"):
            # Deleted in the foreground (kubectl delete --cascade=foreground): the garbage collector stops
            # the Pods before the job is gone.
            self._finish_encoders(key, uid)
        cached = self.jobs.get(key)
        if cached is not None and cached.uid == uid and cached.resource_version > _rv(body):
            return  # our own newer write is already cached
        self.jobs[key] = cached = CachedJob.of(body)
        self.queue.add(key)
        if kind == "RecordJob":
            if cached.live_job_ref:
                self.recordings_of[(key[1], cached.live_job_ref)].add(key)
        else:
            # RecordJobs reading from this LiveJob may be waiting for it.
            for recording in self.recordings_of.get((key[1], key[2]), ()):
                self.queue.add(recording)

    def on_template_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        if event_type == "DELETED":
            self.templates[namespace].pop(name, None)
        else:
            try:
                self.templates[namespace][name] = JobTemplateSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                self.templates[namespace][name] = None
        for key in list(self.jobs):
            if key[1] == namespace or namespace == self.config.namespace:
                self.queue.add(key)

    def on_pod_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        labels = metadata.get("labels") or {}
        kind, job_name = labels.get(builders.LABEL_KIND), labels.get(builders.LABEL_JOB)
        if kind not in PLURALS or not job_name:
            return
        key = (kind, metadata["namespace"], job_name)
        if event_type == "DELETED":
            pods = self.pods.get(key)
            if pods is not None:
                pods.pop(metadata["name"], None)
                if not pods:  # an operator that runs for months sees many jobs come and go
                    del self.pods[key]
            self.reports.forget(metadata["uid"])
        else:
            cached = self.pods[key].get(metadata["name"])
            if cached is not None and cached.resource_version > _rv(body):
                return
            self.pods[key][metadata["name"]] = CachedPod.of(body)
            state = pod_state(body)
            if state.ip and state.running and not state.terminating:
                self.reports.track(metadata["uid"], f"http://{state.ip}:{self.config.status_port}/status",
                                   lambda: self.queue.add(key, urgent=True), ready=state.ready)
            else:
                self.reports.stop(metadata["uid"])
        self.queue.add_after(key, self.config.pod_event_batch_seconds, urgent=True)

    def on_service_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A job's ingest Service (watched unless the Services are ClusterIP): its node ports once it is
        made, its load balancer's address once the cloud gave it one."""
        metadata = body["metadata"]
        owner = next((o for o in metadata.get("ownerReferences") or () if o.get("kind") == "LiveJob"), None)
        if owner is None:
            return
        endpoint = None if event_type == "DELETED" else service_endpoint(body)
        if self._ingest_endpoints.get(owner["uid"]) == endpoint:
            return
        if endpoint is None:
            del self._ingest_endpoints[owner["uid"]]
        else:
            self._ingest_endpoints[owner["uid"]] = endpoint
        self.queue.add(("LiveJob", metadata["namespace"], owner["name"]), urgent=True)

    # -- reconcile ---------------------------------------------------------------------------------

    async def reconcile(self, key: Key) -> None:
        if self.leadership is not None:
            # A replica standing by acts on nothing: not its timers' keys, nor its encoders' reports.
            await self.leadership.active.wait()
        started = time.monotonic()
        result = "ok"
        try:
            await self._reconcile(key)
            self._failures.pop(key, None)
        except Exception as error:
            result = "error"
            self._failures[key] += 1
            delay = min(2.0 ** self._failures[key] / 4, ERROR_BACKOFF_MAX)
            context = job_context(*key)
            if isinstance(error, ApiError) and error.status == 409:
                log.info("%s %s/%s: conflict, retrying: %s", *key, error, extra=context)
            else:
                log.exception("%s %s/%s: reconcile failed; retrying in %.1fs", *key, delay, extra=context)
            self.queue.add_after(key, delay)
        finally:
            metrics.RECONCILES.labels(key[0], result).inc()
            metrics.RECONCILE_SECONDS.labels(key[0]).observe(time.monotonic() - started)

    async def _reconcile(self, key: Key) -> None:
        cached = self.jobs.get(key)
        if cached is None or cached.deleting:
            return  # owned children go with the job (garbage collection)
        body = cached.body()
        self._deliver_pending_webhooks(key, body)  # those an operator before this one did not finish
        kind, namespace, _ = key
        expected = (body.get("status") or {}).get("resourceName")
        if expected and expected not in self.pods.get(key, {}):
            # The cache may not have seen the Pod yet (a standby replica that has just taken over, a
            # watch that restarted): read it before the job's encoder is judged lost and replaced.
            found = await self.kube.get_or_none(resource_path("v1", "pods", namespace, expected))
            if found is not None:
                self.on_pod_event(None, found)
        pods = [pod.body() for pod in self.pods.get(key, {}).values()]
        now = self.clock()
        try:
            model = LiveJob if kind == "LiveJob" else RecordJob
            job: LiveJob | RecordJob = model.model_validate(body)
        except ValidationError as error:
            await self._fail_invalid(key, body, describe_errors(error))
            return
        if isinstance(job, LiveJob):
            template = self.find_template(namespace, job.spec.job_template_id)
            current = naming.pod_name(key[2], builders.ENCODER_ROLE, str(job.metadata.uid),
                                      max((job.status.attempt if job.status else 0), 1))
            report = self._report_of(pods, current)
            decision = decide_live_job(job, template, pods, report, self.config, now,
                                       self._ingest_endpoints.get(str(job.metadata.uid)))
        else:
            source = self._live_job(namespace, job.spec.source.live_job_ref)
            current = naming.pod_name(key[2], builders.RECORDER_ROLE, str(job.metadata.uid),
                                      record_attempt(job.status))
            report = self._report_of(pods, current)
            template = self.find_template(namespace, job.spec.job_template_id) \
                if job.spec.job_template_id is not None else TemplateLookup(None)
            # Only a streamUrl recording is transcoded; one that follows its LiveJob keeps its renditions.
            transcoded = job.spec.job_template_id is not None and job.spec.source.stream_url is not None
            decision = decide_record_job(job, source, pods, report, self.config, now,
                                         template if transcoded else None)
        await self._apply(key, job, body, decision, template.template, pods)

    @staticmethod
    def _refused(decision: Decision, child: str, error: ApiError) -> str:
        """A child the API server refused: a FailedCreate Event on the job, and another try soon."""
        why = str(error.body.get("message") or error)
        decision.events.append(("Warning", "FailedCreate", f"{child}: {why}"))
        decision.requeue_after = REFUSED_RETRY_SECONDS if decision.requeue_after is None else min(
            decision.requeue_after, REFUSED_RETRY_SECONDS)
        return why

    def _report_of(self, pods: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
        pod = next((p for p in pods if p["metadata"]["name"] == name), None)
        return None if pod is None else self.reports.report(pod["metadata"]["uid"])

    def _live_job(self, namespace: str, name: str | None) -> LiveJob | None:
        cached = self.jobs.get(("LiveJob", namespace, name)) if name else None
        if cached is None:
            return None
        try:
            return LiveJob.model_validate(cached.body())
        except ValidationError:
            return None

    def find_template(self, namespace: str, template_id: int | None) -> TemplateLookup:
        for scope in (namespace, self.config.namespace):
            matches = [spec for spec in self.templates.get(scope, {}).values()
                       if spec is not None and spec.id == template_id]
            if len(matches) > 1:
                return TemplateLookup(None, ConditionReason.TEMPLATE_AMBIGUOUS,
                                      f"{len(matches)} JobTemplates in {scope} have id {template_id}")
            if matches:
                return TemplateLookup(matches[0])
        return TemplateLookup(None, ConditionReason.TEMPLATE_NOT_FOUND,
                              f"no JobTemplate with id {template_id} in {namespace} or {self.config.namespace}")

    async def _apply(self, key: Key, job: LiveJob | RecordJob, body: dict[str, Any], decision: Decision,
                     template: JobTemplateSpec | None, pods: list[dict[str, Any]]) -> None:
        kind, namespace, name = key
        uid = str(job.metadata.uid)
        wants_service = decision.ensure_service or uid in self._services_refused
        if wants_service and isinstance(job, LiveJob) and uid not in self._services_ensured:
            service = builders.build_ingest_service(job, self.config)
            try:
                created = await self._create("services", namespace, service)
            except ApiError as error:
                if error.status not in CREATE_REFUSALS:
                    raise
                self._refused(decision, f"Service {service['metadata']['name']}", error)
                self._services_refused.add(uid)
                forget_refused_child(decision, "serviceName")
            else:
                self._services_ensured.add(uid)
                self._services_refused.discard(uid)
                if created is not None and self.config.service_type != "ClusterIP":
                    # The node ports the API server allocated, without waiting for the watch to bring them.
                    self.on_service_event(None, created)
        if decision.finish_before_delete:
            for pod in pods:
                if pod["metadata"]["name"] in decision.delete_pods:
                    await self.reports.send(pod["metadata"]["uid"], "finish", self._control_key(key, uid))
        for pod_name in dict.fromkeys(decision.delete_pods):
            metrics.API_WRITES.labels("delete", "pods").inc()
            await self.kube.delete(resource_path("v1", "pods", namespace, pod_name))
        making_secret = (decision.ensure_children or uid in self._secrets_refused) and uid not in self._children_ensured
        pod_body: dict[str, Any] | None = None
        if decision.create_pod_attempt is not None:
            clip = clip_request(job, self._live_job(namespace, job.spec.source.live_job_ref)) \
                if isinstance(job, RecordJob) else None
            # With the status decided: the paused ranges the dead recorder reported last.
            decided = job.model_copy(update={"status": RecordJobStatus.model_validate(decision.status)}) \
                if isinstance(job, RecordJob) else job
            pod_body = builders.build_encoder_pod(decided, template, self.config, decision.create_pod_attempt, clip,
                                                  decision.finish_only)
        # Coroutines made only to be awaited next (one made and dropped is a warning in the log).
        secret: Awaitable[dict[str, Any] | None] = self._create(
            "secrets", namespace, builders.build_job_secret(job, self.config.stream_key_seed)) \
            if making_secret else _nothing()
        new_pod: Awaitable[dict[str, Any] | None] = \
            self._create("pods", namespace, pod_body) if pod_body is not None else _nothing()
        # The Secret and the Pod that reads it are created at once (one round trip, not two): the
        # Pod is bound, then started by its node's kubelet, several API round trips after its
        # creation, by which time the Secret exists (and a kubelet that came first retries).
        outcomes: list[dict[str, Any] | BaseException | None] = list(
            await asyncio.gather(secret, new_pod, return_exceptions=True))
        secret_made, pod_made = outcomes
        if isinstance(secret_made, ApiError) and secret_made.status in CREATE_REFUSALS:
            # Made again at the next reconcile (not marked ensured below); the Pod waits for it meanwhile.
            self._refused(decision, f"Secret {naming.stream_key_secret_name(name, uid)}", secret_made)
            self._secrets_refused.add(uid)
            if isinstance(job, LiveJob):
                forget_refused_child(decision, "streamKeySecret")
            making_secret = False
            outcomes[0] = None
        if isinstance(pod_made, ApiError) and pod_made.status in CREATE_REFUSALS and pod_body is not None:
            # Not a failure of the operator's: the job says why, and the creation is tried again.
            why = self._refused(decision, f"Pod {pod_body['metadata']['name']}", pod_made)
            mark_pod_refused(job, decision, pod_body["metadata"]["name"], why, self.clock())
            outcomes[1] = None
        elif isinstance(pod_made, dict):
            self.pods[key].setdefault(pod_made["metadata"]["name"], CachedPod.of(pod_made))
            if self.config.provisioning_status_delay_seconds > 0:
                self._status_held_until[key] = time.monotonic() + self.config.provisioning_status_delay_seconds
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if making_secret:
            self._children_ensured.add(uid)
            self._secrets_refused.discard(uid)
        if decision.encoder_command is not None:
            current = next((p for p in pods if p["metadata"]["name"] == decision.status.get("resourceName")), None)
            sent = current is not None and await self.reports.send(
                current["metadata"]["uid"], decision.encoder_command, self._control_key(key, uid))
            if not sent:
                # Not taken (the encoder busy, just restarted, or out of reach): asked again soon. Nothing
                # else would: a paused recorder's reports do not change, and a lost resume would keep it paused.
                decision.requeue_after = COMMAND_RETRY_SECONDS if decision.requeue_after is None else min(
                    decision.requeue_after, COMMAND_RETRY_SECONDS)
        owed = self._webhooks_owed(body, decision)
        if owed:
            # Written with the phase that owes them: a webhook is never lost between the two.
            earlier = decision.status.get("pendingWebhooks") or []
            decision.status["pendingWebhooks"] = [*earlier, *owed][-MAX_PENDING_WEBHOOKS:]
        status_changed = decision.status != (body.get("status") or {})
        if status_changed and self._holds_status(key, body, decision):
            return
        self._status_held_until.pop(key, None)
        if status_changed and self._progress_waits(key, body, decision):
            return
        if status_changed:
            metrics.API_WRITES.labels("patch", f"{PLURALS[kind]}/status").inc()
            path = resource_path(API_VERSION, PLURALS[kind], namespace, name, "status")
            patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                     "status": merge_patch(body.get("status") or {}, decision.status)}
            try:
                updated = await self.kube.merge_patch(path, patch)
            except ApiError as error:
                if error.status != 404:
                    raise
                self.on_job_event(kind, "DELETED", body)  # gone, and the watch did not say so
                return
            self._status_written_at[key] = time.monotonic()
            cached = self.jobs.get(key)
            if cached is not None and cached.uid == updated["metadata"]["uid"]:
                self.jobs[key] = CachedJob.of(updated)
            for event_type, reason, message in _events_to_post(decision):
                self._spawn(self.post_event(body, event_type, reason, message))
            self._deliver_pending_webhooks(key, updated, owed)
        if decision.requeue_after is not None:
            self.queue.add_after(key, decision.requeue_after + 0.05)

    def _holds_status(self, key: Key, body: dict[str, Any], decision: Decision) -> bool:
        """Whether the status write waits: a new Pod that is only Provisioning is usually ready
        within seconds, and then one write says WaitingForInput (the timings still list
        Provisioning) where two would have been made. Held at most provisioning_status_delay_seconds
        after the Pod's creation, and never for anything else (a failure, a Pod that cannot start, a
        new attempt: the attempt a Pod is named after is written before the next reconcile)."""
        until = self._status_held_until.get(key)
        if until is None or decision.status.get("phase") != LiveJobPhase.PROVISIONING or _events_to_post(decision):
            return False
        if decision.status.get("attempt", 0) != max((body.get("status") or {}).get("attempt", 0), 1):
            return False
        remaining = until - time.monotonic()
        if remaining <= 0:
            return False
        self.queue.add_after(key, remaining + 0.05)
        return True

    def _progress_waits(self, key: Key, body: dict[str, Any], decision: Decision) -> bool:
        """Whether the status write waits: when only the job's progress moved (its encoder's reports
        while it runs), it is written at most every
        status_progress_interval_seconds; the reconcile comes back when that is up."""
        interval = self.config.status_progress_interval_seconds
        if interval <= 0 or not progress_only(key[0], body.get("status") or {}, decision.status):
            return False
        remaining = self._status_written_at.get(key, -math.inf) + interval - time.monotonic()
        if remaining <= 0:
            return False
        self.queue.add_after(key, remaining + 0.05)
        if decision.requeue_after is not None:
            self.queue.add_after(key, decision.requeue_after + 0.05)
        return True

    def _control_key(self, key: Key, uid: str) -> str:
        return derive_control_key(self.config.stream_key_seed, key[1], key[2], uid)

    async def _create(self, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        metrics.API_WRITES.labels("create", plural).inc()
        return await self.kube.create(resource_path("v1", plural, namespace), obj)

    async def _fail_invalid(self, key: Key, body: dict[str, Any], errors: list[str]) -> None:
        """An object the API server accepted but our model refuses (a CRD older than the operator): Failed,
        as any failure reads (its timing, finishedAt, Ready False, the `failed` webhook), written from the
        stored status as it is, since the model that would read it refuses the object."""
        kind, namespace, name = key
        failed = LiveJobPhase.FAILED if kind == "LiveJob" else RecordJobPhase.FAILED
        message = ("invalid spec: " + "; ".join(errors))[:MAX_MESSAGE_LENGTH]
        field = "message" if kind == "LiveJob" else "errorMessage"  # the Alibaba name, on a RecordJob
        old = body.get("status") or {}
        generation = (body.get("metadata") or {}).get("generation")
        # A job that finished under the spec it has (a RecordJob, whatever it has: it never records again)
        # stays Completed: Failed would misreport a recording or a stream that is in the bucket.
        completed = LiveJobPhase.COMPLETED if kind == "LiveJob" else RecordJobPhase.COMPLETED
        if old.get("phase") == completed and (kind == "RecordJob" or old.get("observedGeneration") == generation):
            log.warning("%s %s/%s: completed, and its stored spec is refused by this operator: %s", *key, message)
            return
        # Failed means stopped: an encoder of an earlier, valid spec does not run on unreported.
        for pod_name, cached in list(self.pods.get(key, {}).items()):
            if not cached.body()["metadata"].get("deletionTimestamp"):
                metrics.API_WRITES.labels("delete", "pods").inc()
                await self.kube.delete(resource_path("v1", "pods", namespace, pod_name))
        if old.get(field) == message and old.get("phase") == failed:
            return
        now = self.clock()
        when = now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        reason = ConditionReason.SPEC_INVALID
        ready = Condition(type=ConditionType.READY, status=ConditionStatus.FALSE, reason=reason,
                          message=message, last_transition_time=now, observed_generation=generation).to_k8s()
        timing = (LiveJobTiming if kind == "LiveJob" else RecordJobTiming)(
            time=now, phase=failed, reason=reason, comment=message[:MAX_DESCRIPTION_LENGTH]).to_k8s()
        # The stored lists as they are (the model refuses the object they are in), the new entries added.
        status = {**old, "phase": str(failed), field: message, "observedGeneration": generation, "finishedAt": when,
                  "timings": [*(old.get("timings") or []), timing][-MAX_TIMINGS:],
                  "conditions": sorted([*(c for c in old.get("conditions") or [] if c.get("type") != "Ready"), ready],
                                       key=lambda c: str(c.get("type")))}
        decision = Decision(status=status, phase_changes=[failed] if old.get("phase") != failed else [])
        owed = self._webhooks_owed(body, decision)
        if owed:
            status["pendingWebhooks"] = [*(old.get("pendingWebhooks") or []), *owed][-MAX_PENDING_WEBHOOKS:]
        path = resource_path(API_VERSION, PLURALS[kind], namespace, name, "status")
        metrics.API_WRITES.labels("patch", f"{PLURALS[kind]}/status").inc()
        # Onto the version read (a conflict is retried from a fresh one), and cached at once: the next
        # reconcile, which the encoder's deletion brings soon, must not fail it a second time.
        judged = {"resourceVersion": body["metadata"]["resourceVersion"]}
        updated = await self.kube.merge_patch(path, {"metadata": judged, "status": merge_patch(old, status)})
        seen = self.jobs.get(key)
        if seen is not None and seen.uid == updated["metadata"].get("uid"):
            self.jobs[key] = CachedJob.of(updated)
        self._deliver_pending_webhooks(key, updated, owed)

    # -- events out --------------------------------------------------------------------------------

    def _webhooks_owed(self, body: dict[str, Any], decision: Decision) -> list[dict[str, Any]]:
        """The pendingWebhooks entries of the phases the decision passes through (none without a URL)."""
        if not webhook_url(body):
            return []
        previous_phase = (body.get("status") or {}).get("phase")
        previous = None
        if previous_phase:
            previous = LiveJobPhase(previous_phase) if body["kind"] == "LiveJob" else RecordJobPhase(previous_phase)
        # A RecordJob says why in errorMessage (the Alibaba field), a LiveJob in message.
        reason = decision.status.get("message") or decision.status.get("errorMessage") or ""
        recorded_before = bool((body.get("status") or {}).get("startedAt"))
        return [pending_webhook(event, str(phase), reason, self.clock())
                for event, phase in events_announced(previous, decision.phase_changes, recorded_before)]

    def _deliver_pending_webhooks(self, key: Key, body: dict[str, Any], owed: Sequence[dict[str, Any]] = ()) -> None:
        """Queues the job's pendingWebhooks not queued yet, in order behind its earlier ones; each
        leaves the status once delivered or given up. A job that no longer has a URL drops them.
        `owed`: those just written, sent even if the status did not keep them (a CRD older than the
        operator prunes the field: then they are delivered at most once, as before it)."""
        pending = (body.get("status") or {}).get("pendingWebhooks") or []
        kept = {entry["id"] for entry in pending}
        pending = [*pending, *(entry for entry in owed if entry["id"] not in kept)]
        queued = self._webhooks_queued.setdefault(key, set())
        queued.intersection_update(entry["id"] for entry in pending)
        url = webhook_url(body)
        uid = body["metadata"]["uid"]
        for entry in pending:
            if entry["id"] in queued:
                continue
            queued.add(entry["id"])
            if not url:
                self._spawn(self._forget_webhook(key, uid, entry["id"]))
                continue
            delivery = self.webhooks.send(url, build_payload(body, entry),
                                          lambda t, r, m: self.post_event(body, t, r, m))
            delivery.add_done_callback(partial(self._webhook_done, key, uid, entry["id"]))
        if not queued:
            self._webhooks_queued.pop(key, None)

    def _announce_deletion(self, body: dict[str, Any]) -> None:
        """A `deleted` webhook, once (the job and its pendingWebhooks are gone: no later operator could
        send it again), after the job's earlier ones: a receiver that saw `live` sees it go."""
        spec = body.get("spec") or {}
        url = spec.get("callbackUrl") or spec.get("notifyUrl")
        if not url or not self.acting:
            return
        phase = (body.get("status") or {}).get("phase") or ""
        entry = pending_webhook("deleted", phase or "Deleted", "the job was deleted", self.clock(),
                                deletion_webhook_id(str(body["metadata"].get("uid") or body["metadata"]["name"])))
        self.webhooks.send(url, build_payload(body, entry), lambda t, r, m: self.post_event(body, t, r, m))

    def _finish_encoders(self, key: Key, uid: str) -> None:
        """A LiveJob deleted while its encoder runs: the encoder is told to finish, as when the job is
        switched off, so that its playlists end (EXT-X-ENDLIST) and players stop waiting for more. The
        garbage collector only stops the Pod, which the encoder takes for an eviction that a new Pod
        carries on from. Sent once, whichever comes first (the deletion mark of a foreground deletion, or
        the job's DELETED event), as the Pod's grace period has it still running."""
        if not self.acting or uid in self._told_to_finish:
            return
        self._told_to_finish.add(uid)
        control_key = self._control_key(key, uid)
        for pod in list(self.pods.get(key, {}).values()):
            self._spawn(self.reports.send(pod.body()["metadata"]["uid"], "finish", control_key, stopping_too=True))

    def _stand_by(self) -> None:
        """Another replica acts now and sends the jobs' pending webhooks: ours would go twice, out of order."""
        self._webhooks_queued.clear()
        self._spawn(self.webhooks.cancel_queued())

    def _webhook_done(self, key: Key, uid: str, webhook_id: str, delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled():  # cancelled: this operator is stopping, and the next one delivers it
            self._spawn(self._forget_webhook(key, uid, webhook_id))

    async def _forget_webhook(self, key: Key, uid: str, webhook_id: str) -> None:
        """Removes a delivered (or given up) webhook from the job's pendingWebhooks. A JSON patch that
        tests the list as read: an entry a reconcile adds meanwhile is never lost with it. An API
        server that does not answer is asked again with a back-off; one that never does leaves the
        entry to a later reconcile, which sends it again (at least once) and removes it then."""
        kind, namespace, name = key
        delay = FORGET_WEBHOOK_FIRST_DELAY_SECONDS
        for _ in range(FORGET_WEBHOOK_ATTEMPTS):
            try:
                current = await self.kube.get_or_none(resource_path(API_VERSION, PLURALS[kind], namespace, name))
                if current is None or current["metadata"]["uid"] != uid:
                    return
                pending = (current.get("status") or {}).get("pendingWebhooks") or []
                if not any(entry["id"] == webhook_id for entry in pending):
                    return
                left = [entry for entry in pending if entry["id"] != webhook_id]
                operations: list[dict[str, Any]] = [{"op": "test", "path": "/status/pendingWebhooks", "value": pending}]
                operations.append({"op": "replace", "path": "/status/pendingWebhooks", "value": left} if left
                                  else {"op": "remove", "path": "/status/pendingWebhooks"})
                metrics.API_WRITES.labels("patch", f"{PLURALS[kind]}/status").inc()
                await self.kube.json_patch(resource_path(API_VERSION, PLURALS[kind], namespace, name, "status"),
                                           operations)
                return
            except ApiError as error:
                if error.status == 404:
                    return
                if error.status in (409, 422):
                    continue  # the status changed since it was read: read it again
                problem: Exception = error
            except (OSError, TimeoutError) as error:
                problem = error
            log.warning("could not remove delivered webhook %s from %s/%s (again in %.0fs): %s", webhook_id,
                        namespace, name, delay, problem, extra=job_context(*key))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        log.warning("gave up removing delivered webhook %s from %s/%s: a later reconcile sends it again",
                    webhook_id, namespace, name, extra=job_context(*key))
        self._webhooks_queued.get(key, set()).discard(webhook_id)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def post_event(self, body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        if reason.startswith("Webhook"):
            metrics.WEBHOOKS.labels(reason.removeprefix("Webhook").lower()).inc()
        metadata = body["metadata"]
        stamp = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {"apiVersion": API_VERSION, "kind": body["kind"], "name": metadata["name"],
                               "namespace": metadata["namespace"], "uid": metadata["uid"],
                               "resourceVersion": metadata.get("resourceVersion")},
            "reason": reason, "message": message[:1024], "type": event_type,
            "source": {"component": "onair-operator"}, "reportingComponent": "onair.dev/operator",
            "reportingInstance": "onair-operator",
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            metrics.API_WRITES.labels("create", "events").inc()
            await self.kube.create(resource_path("v1", "events", metadata["namespace"]), event)
        except (ApiError, OSError) as error:
            log.warning("could not post Event %s for %s/%s: %s", reason, metadata["namespace"], metadata["name"], error)
