"""The gateway app over a cache fed directly and an in-memory stand-in for the API server."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from onair.api_gateway import handlers, schemas
from onair.api_gateway.app import GATEWAY_KEY, STORE_KEY, init_app
from onair.api_gateway.auth import parse_api_keys
from onair.api_gateway.cache import Store
from onair.api_gateway.config import GatewayConfig
from onair.api_gateway.mapping import OUTPUT_STATUSES
from onair.kubeclient import ApiError
from onair.streamkeys import derive_stream_key, derive_webhook_key

PROJECT = "2e21fae6-af4c-4a4a-e0fc-08d903f55711"
OTHER_PROJECT = "f5faa2e3-316b-4dd0-8f4d-ab41f6f71bd6"
NS = "proj-a"
SECRET = "unit-test-signing-key-of-32-bytes!"
SEED = "unit-test-stream-key-seed-0123456789abcdef"
FIRST = "00000000-0000-4000-8000-000000000001"
FIRST_KEY = derive_stream_key(SEED, NS, FIRST, f"uid-{FIRST}")  # what the operator puts in its Secret
Client = TestClient[web.Request, web.Application]


class FakeKube:
    """Enough of KubeClient for the handlers: objects in a dict, resourceVersions, 409s."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.rv = itertools.count(100)
        self.calls: list[tuple[str, str]] = []

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self.rv))
        return copy.deepcopy(obj)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("create", path))
        key = f"{path}/{body['metadata']['name']}"
        if key in self.objects:
            return None
        obj = copy.deepcopy(body)
        obj["metadata"].update(uid=str(uuid.uuid4()),
                               creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if "stringData" in obj:
            obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in obj.pop("stringData").items()}
        self.objects[key] = obj
        return self._stamp(obj)

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.calls.append(("get", path))
        if "labelSelector" in params:  # a list of the collection, one label=value
            label, value = str(params["labelSelector"]).split("=")
            return {"items": [copy.deepcopy(obj) for key, obj in self.objects.items()
                              if key.rsplit("/", 1)[0] == path and obj["metadata"]["labels"].get(label) == value]}
        if path not in self.objects:
            raise ApiError(404, {"reason": "NotFound"})
        return copy.deepcopy(self.objects[path])

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.calls.append(("get", path))
        return copy.deepcopy(self.objects.get(path))

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", path))
        if path not in self.objects:
            raise ApiError(404, {"reason": "NotFound"})
        obj = self.objects[path]
        wanted_rv = patch.get("metadata", {}).get("resourceVersion")
        if wanted_rv and wanted_rv != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, {"reason": "Conflict"})

        def merge(target: dict[str, Any], source: dict[str, Any]) -> None:
            for k, v in source.items():
                if isinstance(v, dict) and isinstance(target.get(k), dict):
                    merge(target[k], v)
                elif v is None:
                    target.pop(k, None)
                else:
                    target[k] = copy.deepcopy(v)
        merge(obj, {k: v for k, v in patch.items()})
        return self._stamp(obj)

    async def delete(self, path: str) -> dict[str, Any] | None:
        return self.objects.pop(path, None)

    node_metrics: dict[str, Any] | None = None  # metrics.k8s.io's NodeMetricsList, when the platform has it

    async def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if path == "/apis/metrics.k8s.io/v1beta1/nodes" and self.node_metrics is not None:
            return copy.deepcopy(self.node_metrics)
        raise ApiError(404, {})


def live_job(name: str, job_id: int, created: str, phase: str = "Live", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "5",
                     "creationTimestamp": created,
                     "labels": {"onair.dev/project-id": PROJECT, "onair.dev/id": str(job_id)}},
        "spec": {"jobTemplateId": 7, "input": {"serverType": "RTMP", "inputClass": "Standard"},
                 "destination": {"bucket": "media", "path": f"live/{job_id}"}, **spec},
        "status": {"phase": phase, "statistics": {"width": 1280, "height": 720, "framerate": 29.97},
                   **({"startedAt": created} if phase == "Live" else {}),
                   "timings": [{"time": created, "phase": "Pending", "reason": "Created"},
                               {"time": created, "phase": phase, "reason": "PublisherConnected", "comment": "hi"}],
                   "outputs": [{"name": "720p", "status": "Running", "segmentsWritten": 12, "progress": 0.5}],
                   "urls": {"rtmpServer": "rtmp://10.0.0.1:1935/live/",
                            "storageMasterFile": f"http://s3/media/live/{job_id}/master.m3u8"},
                   "attempt": 1},
    }


def make_store() -> Store:
    store = Store("onair-system", SEED)
    store.namespaces.replace([
        {"metadata": {"name": NS, "resourceVersion": "1", "labels": {"onair.dev/project-id": PROJECT}}},
        {"metadata": {"name": "proj-b", "resourceVersion": "1", "labels": {"onair.dev/project-id": OTHER_PROJECT}}},
    ], "1")
    # Every other one switched off, and Offline.
    jobs = [live_job(f"00000000-0000-4000-8000-{i:012d}", i, f"2024-01-01T00:00:{i:02d}Z",
                     phase="Live" if i % 2 else "Offline", description=f"channel {i}", online=bool(i % 2))
            for i in range(1, 26)]
    store.livejobs.replace(jobs, "5")
    store.recordjobs.replace([], "5")
    store.templates.replace([
        {"metadata": {"name": "ladder", "namespace": "onair-system", "resourceVersion": "1"},
         "spec": {"id": 7, "name": "shared ladder", "default": True,
                  "renditions": [{"name": "720p", "width": 1280, "height": 720, "fps": 30, "videoBitrate": 3000000}]}},
    ], "1")
    store.nodes.replace([{"metadata": {"name": "node-1", "labels": {}},
                          "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"cpu": "2"}}}],
                        "1")
    store.pods.replace([], "1")
    store.namespaces.objects[("", NS)]["metadata"]["annotations"] = {}
    return store

WEBHOOK_SECRET = "unit-test-webhook-secret"


class Clock:
    """The gateway's clock: real time plus what a test skips ahead, or a time the test stopped it at."""

    def __init__(self) -> None:
        self.skipped = 0.0
        self.stopped_at: float | None = None

    def __call__(self) -> float:
        return self.stopped_at if self.stopped_at is not None else time.time() + self.skipped


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.objects[f"/api/v1/namespaces/{NS}"] = {"metadata": {"name": NS, "resourceVersion": "1",
                                                             "labels": {"onair.dev/project-id": PROJECT}}}
    return fake


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]], kube: FakeKube, clock: Clock) -> Client:
    config = GatewayConfig(jwt_secret=SECRET, stream_key_seed=SEED, watch=False, cors_origins=("https://console.example.com",),
                           max_body_bytes=4096, webhook_secret=WEBHOOK_SECRET, api_keys=parse_api_keys([
                               {"name": "w", "key": "write-key-0123456789", "projects": [PROJECT], "role": "write"},
                               {"name": "r", "key": "read-key-0123456789", "projects": [PROJECT], "role": "read"},
                               {"name": "a", "key": "admin-key-0123456789", "projects": ["*"], "role": "admin"},
                               {"name": "o", "key": "other-admin-key-0123456789", "projects": [OTHER_PROJECT],
                                "role": "admin"},
                           ]))
    app = init_app(config, kube=kube, store=make_store(), clock=clock)  # type: ignore[arg-type]
    return await aiohttp_client(app)


async def token(client: Client, key: str = "write-key-0123456789") -> dict[str, str]:
    response = await client.post("/api/v1/login", json={"apiKey": key})
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['result']['token']}"}


def url(suffix: str = "", project: str = PROJECT) -> str:
    return f"/api/v1/projects/{project}/livejobs{suffix}"


async def test_list_contract_fields_and_paging(client: Client) -> None:
    headers = await token(client, "read-key-0123456789")
    response = await client.get(url(), params={"pageIndex": "2", "pageSize": "10"}, headers=headers)
    body = await response.json()
    assert response.status == 200 and body["success"] is True
    assert [row["id"] for row in body["result"]] == list(range(11, 21))
    next_token = body["resultInfo"].pop("nextToken")
    assert body["resultInfo"] == {"totalCount": 25, "pageIndex": 2, "pageSize": 10, "totalPages": 3,
                                  "hasNextPage": True, "hasPreviousPage": True}
    # Brightcove: an answer with more after it has a next_token, in offset paging too; it continues there.
    rest = await (await client.get(url(), params={"start_token": next_token, "page_size": "10"},
                                   headers=headers)).json()
    assert [row["id"] for row in rest["result"]] == list(range(21, 26)) and rest["resultInfo"]["nextToken"] is None
    row = body["result"][0]
    assert set(row) >= {"id", "name", "key", "status", "description", "filePath", "insertDate", "startDateTime",
                        "endDateTime"}
    # No schedule: when the job went Live (null for one that never did), and when it went Offline.
    assert (row["id"], row["startDateTime"], row["endDateTime"]) == (11, "2024-01-01T00:00:11Z", None)
    assert (body["result"][1]["startDateTime"], body["result"][1]["endDateTime"]) == (None, "2024-01-01T00:00:12Z")
    schemas.LiveJobSummary.model_validate(row)
    for page, expected in ((1, range(25, 15, -1)), (3, range(5, 0, -1)), (4, [])):
        body = await (await client.get(url(), params={"pageIndex": str(page), "pageSize": "10", "sort_dir": "desc"},
                                       headers=headers)).json()
        assert [row["id"] for row in body["result"]] == list(expected), page
        assert (body["resultInfo"]["nextToken"] is not None) == (page < 3), page
    first = await (await client.get(url(), params={"pageSize": "10", "sort_dir": "desc"}, headers=headers)).json()
    rest = await (await client.get(url(), params={"sort_dir": "desc", "page_size": "7",
                                                  "start_token": first["resultInfo"]["nextToken"]},
                                   headers=headers)).json()
    assert [row["id"] for row in rest["result"]] == list(range(15, 8, -1))


async def test_query_parameters_match_in_any_case_as_the_reference_spells_them(client: Client) -> None:
    """The reference's table writes PageIndex, PageSize and Search; its URL pageIndex and search."""
    headers = await token(client, "read-key-0123456789")
    camel = await (await client.get(url(), params={"search": "channel 1", "pageIndex": "2", "pageSize": "5"},
                                    headers=headers)).json()
    pascal = await (await client.get(url(), params={"Search": "channel 1", "PageIndex": "2", "PageSize": "5"},
                                     headers=headers)).json()
    assert pascal == camel and [row["id"] for row in pascal["result"]] == [14, 15, 16, 17, 18]
    unknown = await client.get(url(), params={"PageNumber": "2"}, headers=headers)
    assert unknown.status == 400


async def test_search_filters_and_select(client: Client) -> None:
    headers = await token(client, "read-key-0123456789")
    body = await (await client.get(url(), params={"search": "channel 1", "pageSize": "100"}, headers=headers)).json()
    assert [r["id"] for r in body["result"]] == [1, *range(10, 20)]
    body = await (await client.get(url(), params={"state": "[live]", "id": "le:5", "select": "id,status"},
                                   headers=headers)).json()
    assert body["result"] == [{"id": 1, "status": "Live"}, {"id": 3, "status": "Live"}, {"id": 5, "status": "Live"}]
    body = await (await client.get(url(), params={"created_at": "ge:2024-01-01T00:00:24Z", "sort_dir": "desc"},
                                   headers=headers)).json()
    assert [r["id"] for r in body["result"]] == [25, 24]


async def test_keyset_paging_while_creating(client: Client, clock: Clock) -> None:
    headers = await token(client)
    seen: list[int] = []
    params = {"page_size": "7"}
    created = 0
    while True:
        response = await client.get(url(), params=params, headers=headers)
        body = await response.json()
        assert response.status == 200, body
        seen.extend(r["id"] for r in body["result"])
        if not body["result"]:  # only jobs too new to settle are left: a client polls until they have
            assert body["resultInfo"]["hasNextPage"] is True
            clock.skipped += GatewayConfig.keyset_settle_seconds + 1
        if created < 3:
            new = await client.post(url(), json={"jobTemplateId": 7, "bucket": "media", "serverType": 0},
                                    headers=headers)
            assert new.status == 201, await new.text()
            created += 1
        token_ = body["resultInfo"]["nextToken"]
        if not token_:
            break
        params = {"page_size": "7", "start_token": token_}
    assert len(seen) == len(set(seen)) == 28
    assert seen[:25] == list(range(1, 26))


async def test_keyset_paging_does_not_pass_a_job_that_reaches_the_cache_late(client: Client, clock: Clock) -> None:
    """Two jobs stamped in the same second: id 27 is in the cache first, id 26 a moment later (a slower
    create, or another replica's, coming through the watch). A client paging up the list meanwhile
    still gets both, in order."""
    store = client.app[STORE_KEY]
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    store.livejobs.upsert(live_job("00000000-0000-4000-8000-000000000027", 27, stamp))
    headers = await token(client)
    seen: list[int] = []
    params = {"page_size": "5"}
    for _ in range(20):
        body = await (await client.get(url(), params=params, headers=headers)).json()
        seen.extend(row["id"] for row in body["result"])
        if seen[-1:] == [25] and not body["result"]:
            store.livejobs.upsert(live_job("00000000-0000-4000-8000-000000000026", 26, stamp))
            clock.skipped += GatewayConfig.keyset_settle_seconds + 1
        if not body["resultInfo"]["nextToken"]:
            break
        params = {"page_size": "5", "start_token": body["resultInfo"]["nextToken"]}
    assert seen == list(range(1, 28))


async def test_reads_of_unknown_jobs_reach_the_api_server_at_a_bounded_rate(client: Client, kube: FakeKube,
                                                                           clock: Clock) -> None:
    headers = await token(client)

    def lookups() -> int:
        return sum(1 for verb, path in kube.calls if verb == "get" and path.endswith("/livejobs"))

    clock.stopped_at = time.time()
    for number in range(200):
        response = await client.get(url(f"/{100_000 + number}"), headers=headers)
        assert response.status == 404
    assert lookups() == 2 * handlers.MISS_LOOKUPS_PER_SECOND  # the burst, then the cache's answer
    clock.stopped_at += 1
    for number in range(200):
        await client.get(url(f"/{200_000 + number}"), headers=headers)
    assert lookups() == 3 * handlers.MISS_LOOKUPS_PER_SECOND  # a second later, a second's worth more

async def test_an_offset_pages_token_does_not_pass_a_job_that_reaches_the_cache_late(client: Client,
                                                                                   clock: Clock) -> None:
    store = client.app[STORE_KEY]
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for number in (27, 28):
        store.livejobs.upsert(live_job(f"00000000-0000-4000-8000-0000000000{number}", number, stamp))
    headers = await token(client)
    body = await (await client.get(url(), params={"pageIndex": "2", "pageSize": "13"}, headers=headers)).json()
    assert [row["id"] for row in body["result"]] == [*range(14, 26), 27]  # offset pages show new jobs at once
    store.livejobs.upsert(live_job("00000000-0000-4000-8000-000000000026", 26, stamp))
    clock.skipped += GatewayConfig.keyset_settle_seconds + 1
    rest = await (await client.get(url(), params={"page_size": "10", "start_token": body["resultInfo"]["nextToken"]},
                                   headers=headers)).json()
    assert [row["id"] for row in rest["result"]] == [26, 27, 28]

@pytest.mark.parametrize("params", [{"sort_dir": "desc"}, {"sort": "modified_at", "sort_dir": "desc"},
                                    {"sort": "modified_at"}], ids=["newest-first", "changed-newest-first",
                                                                   "changed-oldest-first"])
async def test_paging_newest_first_gives_a_job_that_reaches_the_cache_late_once(client: Client, clock: Clock,
                                                                                  params: dict[str, str]) -> None:
    """Jobs 27 and 28 stamped in one second are in the cache; 26, stamped earlier, turns up after the
    client's first page. Newest first it sorts among the jobs already given: a later page gives it, and
    the walk ends once nothing it gave can be joined by a late job any more."""
    store = client.app[STORE_KEY]
    now = clock()
    for number, seconds_ago in ((27, 1), (28, 0)):
        stamp = datetime.fromtimestamp(now - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        store.livejobs.upsert(live_job(f"00000000-0000-4000-8000-0000000000{number}", number, stamp))
    headers = await token(client)
    seen: list[int] = []
    query_params = {**params, "page_size": "3"}
    for _ in range(30):
        body = await (await client.get(url(), params=query_params, headers=headers)).json()
        seen.extend(row["id"] for row in body["result"])
        if len(seen) == 6 and 26 not in seen:
            late_stamp = datetime.fromtimestamp(now - 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            store.livejobs.upsert(live_job("00000000-0000-4000-8000-000000000026", 26, late_stamp))
        if not body["result"]:
            clock.skipped += GatewayConfig.keyset_settle_seconds + 1  # a client polls until the jobs settle
        if not body["resultInfo"]["nextToken"]:
            break
        query_params = {**params, "page_size": "3", "start_token": body["resultInfo"]["nextToken"]}
    assert sorted(seen) == list(range(1, 29)) and len(seen) == 28, seen
    assert body["resultInfo"]["nextToken"] is None


async def test_newest_first_paging_never_gives_a_job_twice(client: Client, clock: Clock) -> None:
    """More jobs settling than a token tracks (a burst of creates), the token of a later offset page,
    and a job changed in the second of the newest change: each job comes once."""
    store = client.app[STORE_KEY]
    started = clock.stopped_at = clock()
    now = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for number in range(100, 150):
        store.livejobs.upsert(live_job(f"00000000-0000-4000-8000-{number:012d}", number, now))
    headers = await token(client, "read-key-0123456789")

    async def walk(params: dict[str, str], on_page: Callable[[int], None] = lambda page: None) -> list[int]:
        given: list[int] = []
        query_params = dict(params)
        for page in range(60):
            body = await (await client.get(url(), params=query_params, headers=headers)).json()
            given += [row["id"] for row in body["result"]]
            on_page(page)
            if not body["result"]:
                assert clock.stopped_at is not None
                clock.stopped_at += GatewayConfig.keyset_settle_seconds + 1
            if not body["resultInfo"]["nextToken"]:
                return given
            query_params = {**params, "start_token": body["resultInfo"]["nextToken"]}
        raise AssertionError("the walk did not end")

    burst = await walk({"sort_dir": "desc", "page_size": "40"})
    assert sorted(burst) == [*range(1, 26), *range(100, 150)] and len(burst) == 75
    clock.stopped_at = started  # the burst still settling, for the next walks
    second = await (await client.get(url(), params={"pageIndex": "2", "pageSize": "3", "sort_dir": "desc"},
                                      headers=headers)).json()
    rest = await walk({"sort_dir": "desc", "page_size": "10", "start_token": second["resultInfo"]["nextToken"]})
    assert rest == [*range(143, 99, -1), *range(25, 0, -1)]

    def change_job_25(page: int) -> None:
        if page == 0:  # its status written in the second of the newest change
            changed = copy.deepcopy(store.livejobs.objects[(NS, "00000000-0000-4000-8000-000000000025")])
            changed["metadata"]["resourceVersion"] = "60"
            changed["status"]["timings"].append({"time": now, "phase": "Live", "reason": "PublisherConnected"})
            assert store.livejobs.upsert(changed)

    changed = await walk({"sort": "modified_at", "sort_dir": "desc", "page_size": "30"}, change_job_25)
    assert len(changed) == len(set(changed)), changed


def test_a_lookup_budget_survives_the_wall_clock_stepping_back() -> None:
    budget = handlers.LookupBudget(rate=20, tokens=0, at=1000.0)
    assert not budget.take(400.0)  # the clock stepped back ten minutes: nothing refilled, nothing owed
    assert budget.take(401.0)  # a second on: a second's worth

async def test_create_then_get_reads_its_own_write(client: Client, kube: FakeKube) -> None:
    headers = await token(client)
    response = await client.post(url(), headers=headers, json={
        "jobTemplateId": 7, "destination": "live/news", "bucket": "media", "description": "news",
        "cdnDistribution": False, "input": {"filePath": "live/news", "serverType": 1, "inputClass": 0,
                                            "callbackUrl": "https://hooks.example.com/x"}})
    body = await response.json()
    assert response.status == 201, body
    job = body["result"]
    schemas.LiveJobDetail.model_validate(job)
    assert uuid.UUID(job["name"]) and uuid.UUID(job["key"])
    assert job["input"]["serverType"] == 1 and job["input"]["inputClass"] == 0 and job["bucket"] == "media"
    assert job["id"] >= 26
    assert job["status"] == "Pending"  # before the operator writes the job's first status
    for ident in (job["name"], str(job["id"])):
        got = await client.get(url(f"/{ident}"), headers=headers)
        assert (await got.json())["result"]["key"] == job["key"]
    pending = await client.get(url(), params={"state": "Pending", "select": "name,status"}, headers=headers)
    assert (await pending.json())["result"] == [{"name": job["name"], "status": "Pending"}]
    cr = kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{job['name']}"]
    assert cr["spec"]["input"] == {"serverType": "SRT", "inputClass": "Single"}
    assert cr["metadata"]["labels"] == {"onair.dev/project-id": PROJECT, "onair.dev/id": str(job["id"])}
    assert kube.objects["/api/v1/namespaces/onair-system/configmaps/onair-gateway-ids"]["data"][NS] == str(
        job["id"] + 50)


async def test_documented_create_body_puts_destination_inside_the_bucket(client: Client, kube: FakeKube) -> None:
    """The contract's body: bucket names the bucket, destination the place in it for the chunk files."""
    headers = await token(client)
    response = await client.post(url(), headers=headers, json={
        "jobTemplateId": 7, "destination": "events/final", "description": "cup final", "bucket": "media",
        "cdnDistribution": True, "input": {"serverType": 0, "inputClass": 1, "callbackUrl": "https://hooks.example.com/x"}})
    body = await response.json()
    assert response.status == 201, body
    assert body["result"]["destination"] == "events/final" and body["result"]["bucket"] == "media"
    name = body["result"]["name"]
    cr = kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{name}"]
    assert cr["spec"]["destination"] == {"bucket": "media", "path": "events/final", "cdnDistribution": True}
    got = (await (await client.get(url(f"/{name}"), headers=headers)).json())["result"]
    assert (got["destination"], got["bucket"], got["input"]["filePath"]) == ("events/final", "media", "events/final")
    row = (await (await client.get(url(), params={"search": name}, headers=headers)).json())["result"]
    assert [r["filePath"] for r in row] == ["events/final"]


@pytest.mark.parametrize(("payload", "expected"), [
    ({"destination": "live/news"}, "bucket: required"),
    ({"destination": "live/news", "bucket": "media", "filePath": "live/other"}, "destination: the key prefix"),
    ({"destination": "/live//news", "bucket": "media"}, "destination: String should match"),
])
async def test_create_body_destination_and_bucket_errors(client: Client, payload: dict[str, Any],
                                                         expected: str) -> None:
    response = await client.post(url(), headers=await token(client),
                                 json={"jobTemplateId": 7, "serverType": 0, **payload})
    body = await response.json()
    assert response.status == 400, body
    assert body["success"] is False and any(e.startswith(expected) for e in body["errors"]), body["errors"]


async def test_ids_stay_unique_and_increasing_across_leased_blocks(client: Client, kube: FakeKube) -> None:
    headers = await token(client)
    ids = []
    for number in range(130):  # more than two blocks of 50, so background leases happen on the way
        payload = {"jobTemplateId": 7, "bucket": "media", "serverType": 0, "description": f"job {number}"}
        response = await client.post(url(), headers=headers, json=payload)
        assert response.status == 201, await response.text()
        ids.append((await response.json())["result"]["id"])
    assert ids == sorted(set(ids))
    counter = int(kube.objects["/api/v1/namespaces/onair-system/configmaps/onair-gateway-ids"]["data"][NS])
    assert counter > ids[-1]  # every id handed out was leased first
    assert ("patch", f"/api/v1/namespaces/{NS}") not in kube.calls  # a project's namespace is only read


async def test_ids_stay_unique_when_the_id_configmap_is_deleted(client: Client, kube: FakeKube) -> None:
    headers = await token(client)
    payload = {"jobTemplateId": 7, "bucket": "media", "serverType": 0}
    counters = "/api/v1/namespaces/onair-system/configmaps/onair-gateway-ids"
    ids = [(await (await client.post(url(), headers=headers, json=payload)).json())["result"]["id"]]
    del kube.objects[counters]
    for _ in range(80):  # past the leased blocks: the next lease finds the ConfigMap gone
        response = await client.post(url(), headers=headers, json=payload)
        assert response.status == 201, await response.text()
        ids.append((await response.json())["result"]["id"])
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    # Blocks another replica leased from the lost counter may lie past the highest id in use: skipped.
    assert ids[-1] > 100 * 50
    assert int(kube.objects[counters]["data"][NS]) > ids[-1]

async def test_ids_continue_past_a_counter_kept_in_the_namespace_by_an_older_gateway(client: Client,
                                                                                    kube: FakeKube) -> None:
    client.app[STORE_KEY].namespaces.objects[("", NS)]["metadata"]["annotations"] = {"onair.dev/next-id": "500"}
    payload = {"jobTemplateId": 7, "bucket": "media", "serverType": 0}
    response = await client.post(url(), headers=await token(client), json=payload)
    assert (await response.json())["result"]["id"] == 500

async def test_idempotency_key_returns_the_same_job(client: Client) -> None:
    headers = {**await token(client), "Idempotency-Key": "abc-1"}
    payload = {"jobTemplateId": 7, "bucket": "media", "serverType": "RTMP"}
    first = await (await client.post(url(), json=payload, headers=headers)).json()
    again = await client.post(url(), json=payload, headers=headers)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["result"]["name"] == first["result"]["name"]
    other = await client.post(url(), json={**payload, "description": "x"}, headers=headers)
    assert other.status == 422


async def test_a_retried_create_whose_job_is_being_deleted_is_a_409_not_a_500(client: Client, kube: FakeKube) -> None:
    headers = {**await token(client), "Idempotency-Key": "abc-2"}
    record = {"source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"}}
    for path, payload in ((url(), {"jobTemplateId": 7, "bucket": "media", "serverType": "RTMP"}),
                          (f"/api/v1/projects/{PROJECT}/recordjobs", record)):
        made = (await (await client.post(path, json=payload, headers=headers)).json())["result"]
        key = next(key for key in kube.objects if key.endswith("/" + (made.get("jobId") or made["name"])))
        held = copy.deepcopy(kube.objects[key])
        assert (await client.delete(f"{path}/{made['id']}", headers=headers)).status == 200
        # A finalizer (another controller's) holds it in the API server, marked for deletion.
        kube.objects[key] = {**held, "metadata": {**held["metadata"], "deletionTimestamp": "2024-01-01T00:00:00Z"}}
        kube._stamp(kube.objects[key])
        again = await client.post(path, json=payload, headers=headers)
        assert again.status == 409, await again.text()
        assert (await again.json())["errors"][0].startswith("Idempotency-Key: the job made with this key is being")
    # Deleted elsewhere (kubectl, another replica): this replica's watch brings it marked for deletion.
    made = (await (await client.post(url(), json={"jobTemplateId": 7, "bucket": "media", "serverType": "SRT"},
                                     headers={**headers, "Idempotency-Key": "abc-3"})).json())["result"]
    key = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{made['name']}"
    kube.objects[key]["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    client.app[STORE_KEY].livejobs.upsert(kube._stamp(kube.objects[key]))
    again = await client.post(url(), json={"jobTemplateId": 7, "bucket": "media", "serverType": "SRT"},
                              headers={**headers, "Idempotency-Key": "abc-3"})
    assert again.status == 409, await again.text()


async def test_server_type_and_input_class_are_ids_or_names_in_any_case(client: Client, kube: FakeKube) -> None:
    headers = await token(client)
    made_jobs = []
    for given in ({"serverType": "srt", "input": {"inputClass": "SINGLE"}},
                  {"serverType": 2, "input": {"serverType": "hls", "url": "https://example.com/a.m3u8"}},
                  {"input": {"serverType": "Rtmp", "inputClass": 1}}):
        response = await client.post(url(), json={"jobTemplateId": 7, "bucket": "media", **given}, headers=headers)
        assert response.status == 201, await response.text()
        made_jobs.append((await response.json())["result"])
    made = [job["input"] for job in made_jobs]
    assert [(i["serverType"], i["inputClass"]) for i in made] == [(1, 0), (2, 1), (0, 1)]
    created = [kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{job['name']}"]["spec"]["input"]
               for job in made_jobs]
    assert [(i["serverType"], i["inputClass"]) for i in created] == [("SRT", "Single"), ("HLS", "Standard"),
                                                                     ("RTMP", "Standard")]
    refused = [({"serverType": 5}, "serverType: must be 0 (RTMP), 1 (SRT), 2 (HLS), or the name"),
               ({"serverType": True}, "serverType: must be 0 (RTMP), 1 (SRT), 2 (HLS), or the name"),
               ({"serverType": 0, "input": {"inputClass": "double"}},
                "input.inputClass: must be 0 (Single), 1 (Standard), or the name"),
               ({"serverType": "SRT", "input": {"serverType": 0}},
                "serverType: given twice (top level and in input) with different values")]
    for given, error in refused:
        response = await client.post(url(), json={"jobTemplateId": 7, "bucket": "media", **given}, headers=headers)
        assert response.status == 400 and (await response.json())["errors"] == [error], await response.text()


async def test_a_live_job_whose_schedule_has_finished_is_refused(client: Client, kube: FakeKube,
                                                                   clock: Clock) -> None:
    clock.stopped_at = datetime(2030, 5, 1, 12, tzinfo=UTC).timestamp()
    headers = {**await token(client), "Idempotency-Key": "schedule-1"}
    scheduled = {"jobTemplateId": 7, "bucket": "media", "serverType": 0,
                 "startDateTime": "2030-05-01T12:00:00Z", "endDateTime": "2030-05-01T13:00:00Z"}
    for end in ("2030-05-01T11:59:59Z", "2030-05-01T12:00:00Z", "2030-05-01T13:00:00+02:00"):
        past = await client.post(url(), json={**scheduled, "startDateTime": "2030-05-01T10:00:00Z", "endDateTime": end},
                                 headers={**headers, "Idempotency-Key": f"past-{end}"})
        assert past.status == 400, await past.text()
        assert (await past.json())["errors"][0].startswith("endDateTime: 2030-05-01T1"), await past.text()
        assert "has passed" in (await past.json())["errors"][0]
    assert not [call for call in kube.calls if call[0] == "create" and "/livejobs" in call[1]]
    made = await client.post(url(), json=scheduled, headers=headers)
    assert made.status == 201, await made.text()
    # Its retry, once the schedule has finished, still answers the job it made.
    clock.stopped_at += 2 * 3600
    again = await client.post(url(), json=scheduled, headers=headers)
    assert again.status == 201 and again.headers.get("Idempotent-Replayed") == "true", await again.text()
    assert (await again.json())["result"]["id"] == (await made.json())["result"]["id"]


async def test_idempotency_key_matches_the_project_id_in_any_case(client: Client) -> None:
    headers = {**await token(client), "Idempotency-Key": "case-1"}
    payload = {"jobTemplateId": 7, "bucket": "media", "serverType": "RTMP"}
    first = await client.post(url(), json=payload, headers=headers)
    again = await client.post(url(project=PROJECT.upper()), json=payload, headers=headers)
    assert first.status == 201 and again.status == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (await again.json())["result"]["id"] == (await first.json())["result"]["id"]

async def test_a_retry_is_the_same_request_in_any_key_order_or_spacing(client: Client, kube: FakeKube) -> None:
    headers = {**await token(client), "Idempotency-Key": "spacing-1", "Content-Type": "application/json"}
    payload = {"jobTemplateId": 7, "bucket": "media", "serverType": "RTMP", "description": "x"}
    first = await client.post(url(), data=json.dumps(payload), headers=headers)
    assert first.status == 201
    # A key costs the first try no lookup of the job (the id counter is read for the first id, as ever).
    assert [call for call in kube.calls if call[0] == "get" and "/livejobs/" in call[1]] == []
    reordered = dict(reversed(list(payload.items())))
    again = await client.post(url(), data=json.dumps(reordered, indent=2), headers=headers)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true", await again.text()
    assert (await again.json())["result"]["id"] == (await first.json())["result"]["id"]
    other = await client.post(url(), data=json.dumps({**payload, "description": "y"}), headers=headers)
    assert other.status == 422


async def test_a_job_made_before_the_digest_was_canonical_replays_for_its_own_bytes(client: Client,
                                                                                   kube: FakeKube) -> None:
    headers = {**await token(client), "Idempotency-Key": "legacy-1", "Content-Type": "application/json"}
    raw = b'{"jobTemplateId": 7, "bucket": "media", "serverType": "RTMP"}'
    first = await client.post(url(), data=raw, headers=headers)
    name = (await first.json())["result"]["name"]
    store = client.app[STORE_KEY]
    legacy = copy.deepcopy(store.livejobs.get(NS, name))
    legacy["metadata"]["annotations"]["onair.dev/request-sha256"] = hashlib.sha256(raw).hexdigest()
    legacy["metadata"]["resourceVersion"] = "100000"
    store.livejobs.upsert(legacy)
    again = await client.post(url(), data=raw, headers=headers)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    other = await client.post(url(), data=raw.replace(b"media", b"other"), headers=headers)
    assert other.status == 422


async def test_a_retry_gets_its_job_after_the_template_is_gone_and_the_range_has_begun(
        client: Client, kube: FakeKube, clock: Clock) -> None:
    """What a first try made stays made: a retry after a lost answer is not judged again against a
    clock and templates that moved on since (nor on a replica whose cache has not seen the job)."""
    headers = {**await token(client), "Idempotency-Key": "late-1"}
    live = {"jobTemplateId": 7, "bucket": "media", "serverType": "RTMP"}
    made = await (await client.post(url(), json=live, headers=headers)).json()
    start = datetime.fromtimestamp(clock(), UTC)
    record = {"source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"},
              "timeRange": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "end": (start + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    base = f"/api/v1/projects/{PROJECT}/recordjobs"
    recorded = await (await client.post(base, json=record, headers=headers)).json()
    store = client.app[STORE_KEY]
    store.templates.remove(store.templates.get("onair-system", "ladder") or {})
    clock.skipped += 120  # the recording's range has ended
    for path, body, first in ((url(), live, made), (base, record, recorded)):
        for forgotten in (False, True):
            if forgotten:  # another replica, whose watch has not brought the job yet
                cache = store.livejobs if path == url() else store.recordjobs
                cache.remove(cache.get(NS, first["result"]["name"]) or {})
                cache.tombstones.clear()
            again = await client.post(path, json=body, headers=headers)
            assert again.status == 201, (path, forgotten, await again.text())
            assert again.headers["Idempotent-Replayed"] == "true"
            assert (await again.json())["result"]["id"] == first["result"]["id"]
    fresh = await client.post(url(), json=live, headers={**headers, "Idempotency-Key": "late-2"})
    assert fresh.status == 400 and "jobTemplateId: no JobTemplate" in (await fresh.json())["errors"][0]


@pytest.mark.parametrize(("payload", "expected"), [
    ({"jobTemplateId": "7", "bucket": "media", "serverType": 0}, "jobTemplateId: "),
    ({"jobTemplateId": 7, "bucket": "media", "serverType": 0, "colour": "red"}, "colour: Extra inputs"),
    ({"jobTemplateId": 7, "bucket": "Bad_Bucket", "serverType": 0}, "bucket: String should match"),
    ({"jobTemplateId": 7, "bucket": "media", "serverType": 2}, "url: url is required when serverType is HLS"),
    ({"jobTemplateId": 7, "bucket": "media"}, "serverType: required"),
    ({"jobTemplateId": 8, "bucket": "media", "serverType": 0}, "jobTemplateId: no JobTemplate with id 8"),
    ({"jobTemplateId": 7, "bucket": "media", "serverType": 0, "startDateTime": "2024-01-02T00:00:00Z",
      "endDateTime": "2024-01-01T00:00:00Z"}, "endDateTime: finishDateTime must be after startDateTime"),
    ({"jobTemplateId": 7, "bucket": "media", "serverType": 0, "endDateTime": "9999-12-31T23:59:59-01:00"},
     "endDateTime: must be a time within the years 1 to 9999 in UTC"),
    ([1, 2], "body: must be a JSON object"),
])
async def test_bad_input_gets_400_with_field_names(client: Client, payload: Any, expected: str) -> None:
    response = await client.post(url(), json=payload, headers=await token(client))
    body = await response.json()
    assert response.status == 400, body
    assert body["success"] is False and body["result"] is None
    assert any(error.startswith(expected) for error in body["errors"]), body["errors"]


async def test_a_time_utc_cannot_hold_is_a_400_and_one_made_with_kubectl_breaks_no_list(client: Client) -> None:
    headers = await token(client)
    base = f"/api/v1/projects/{PROJECT}/recordjobs"
    refused = await client.post(base, headers=headers, json={
        "source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"},
        "timeRange": {"start": "0001-01-01T00:30:00+01:00"}})
    assert refused.status == 400
    assert (await refused.json())["errors"] == ["timeRange.start: must be a time within the years 1 to 9999 in UTC"]
    # The CRD's date-time lets it through kubectl (the operator then fails the job): lists still answer.
    store = client.app[STORE_KEY]
    store.livejobs.upsert(live_job("00000000-0000-4000-8000-000000000099", 99, "2024-01-01T00:01:39Z",
                                   schedule={"finishDateTime": "9999-12-31T23:59:59-01:00"}))
    listed = await client.get(url(), headers=headers, params={"pageSize": "100"})
    assert listed.status == 200
    row = next(row for row in (await listed.json())["result"] if row["id"] == 99)
    assert row["endDateTime"] == "9999-12-31T23:59:59-01:00"
    one = await client.get(url("/99"), headers=headers)
    assert one.status == 200, await one.text()


async def test_malformed_requests(client: Client) -> None:
    headers = await token(client)
    cases = [
        (client.post(url(), data=b"{not json", headers=headers), 400, "body: not valid JSON"),
        (client.post(url(), data=b"x" * 10000, headers=headers), 413, "request body too large"),
        (client.get(url(project="not-a-guid"), headers=headers), 400, "projectId: must be a GUID"),
        (client.get(url("/-abc"), headers=headers), 400, "id: must be an integer id or a job name"),
        (client.post(url("/7"), json={"online": True}, headers=headers), 400,
         "id: must be a GUID like 3fa85f64-5717-4562-b3fc-2c963f66afa6 (the job's stream key)"),
        (client.post(url(f"/{uuid.uuid4()}"), json={"online": True}, headers=headers), 404,
         "id: no live job with this stream key (or name) in the project"),
        (client.get(url("/outputs"), params={"liveJobId": "-x"}, headers=headers), 400,
         "liveJobId: must be an integer id or a job name"),
        (client.get(f"/api/v1/projects/{PROJECT}/jobtemplates/x", headers=headers), 400,
         "templateId: must be an integer"),
        (client.get(url(), params={"pageSize": "0"}, headers=headers), 400, "pageSize: must be an integer"),
        (client.get(url(), params={"page_size": "1001"}, headers=headers), 400, "page_size: must be"),
        (client.get(url(), params={"start_token": "garbage"}, headers=headers), 400, "start_token: "),
        (client.get(url(), params={"page_size": "5", "start_token": "e" * 2049}, headers=headers), 400,
         "start_token: at most 2048 characters"),
        (client.post(url(), data=b"[" * 1500 + b"]" * 1500, headers=headers), 400, "body: "),
        (client.post("/api/v1/login", data=b'{"apiKey":' + b"[" * 1500 + b"]" * 1500 + b"}"), 400, "body: "),
        (client.get(url(), params={"search": "x" * 257}, headers=headers), 400, "search: at most 256 characters"),
        (client.get(url(), params={"colour": "red"}, headers=headers), 400, "colour: unknown"),
        # One value each, but for filters (ANDed): a second one would be read, or cached, as if not there.
        (client.get(url("?pageSize=6&pageSize=abc&sort_dir=asc&sort_dir=desc&PAGESIZE=2&id=1&id=2"), headers=headers),
         400, "pageSize: given more than once"),
        (client.get(url("?sort_dir=asc&sort_dir=desc"), headers=headers), 400, "sort_dir: given more than once"),
        (client.get(url(), params={"select": "id,bogus"}, headers=headers), 400, "select: unknown field"),
        (client.get(url("/999"), headers=headers), 404, "id: live job 999 not found"),
        (client.get("/api/v2/projects/" + PROJECT + "/livejobs", headers=headers), 404, "version: "),
        (client.get("/api/v1/nowhere", headers=headers), 404, "no such endpoint"),
        (client.put(url(), headers=headers), 405, "method not allowed"),
    ]
    for request, status, prefix in cases:
        response = await request
        body = await response.json()
        assert response.status == status, (prefix, body)
        assert body["success"] is False and body["errors"][0].startswith(prefix), body


async def test_a_parameter_given_twice_is_refused_whichever_was_asked_first(client: Client) -> None:
    """Pages are kept by their query: a value given twice, read as its first, would make one request
    answer as another asked before it did (a 200 for a bad value, another order)."""
    headers = await token(client)
    for query in ("?pageSize=6&pageSize=abc", "?pageSize=abc&pageSize=6", "?sort_dir=desc&sort_dir=asc&pageSize=4",
                  "?sort_dir=asc&sort_dir=desc&pageSize=4&search=x"):
        response = await client.get(url(query), headers=headers)
        assert response.status == 400, (query, await response.text())
        errors = (await response.json())["errors"]
        assert errors in (["pageSize: given more than once"], ["sort_dir: given more than once"]), errors
    both = await client.get(url("?pageSize=6&sort_dir=desc&pageSize=abc&sort_dir=asc"), headers=headers)
    assert (await both.json())["errors"] == ["pageSize: given more than once", "sort_dir: given more than once"]
    # A filter may be given twice: the two combine with AND.
    anded = await client.get(url("?id=1&id=ge:1&pageSize=5"), headers=headers)
    assert anded.status == 200, await anded.text()


async def raw_request(client: Client, method: str, path: str, headers: bytes, body: bytes = b"") -> tuple[int, Any]:
    """A request sent as bytes: headers that are not UTF-8, or a body its Content-Encoding does not
    decode, as a client library would never send them."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
                 .encode() + headers + b"\r\n" + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


async def test_undecodable_bytes_get_an_answer_in_the_envelope(client: Client, kube: FakeKube) -> None:
    kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{FIRST}"] = live_job(FIRST, 1,
                                                                                           "2024-01-01T00:00:01Z")
    bearer = b"Authorization: " + (await token(client))["Authorization"].encode() + b"\r\n"
    create = b'{"jobTemplateId":7,"bucket":"media","serverType":0}'
    cut = b'{"online":true,"startDateTime":"2024-01-01T00:00:00Z","finishDateTime":"2024-01-01T00:01:00Z"}'
    cases = [
        ("POST", url(), bearer + b"Idempotency-Key: k\xff\r\n", create, 400, "Idempotency-Key: "),
        ("POST", url(f"/{FIRST_KEY}"), bearer + b"Idempotency-Key: k\xff\r\n", cut, 400, "Idempotency-Key: "),
        ("GET", url(), b"Authorization: Bearer abc\xff\r\n", b"", 401, "invalid token"),
        ("POST", url(), bearer + b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
         b"not gzip at all", 400, "body: could not be read"),
        ("OPTIONS", url(), b"Origin: https://e\xff.com\r\nAccess-Control-Request-Method: GET\r\n", b"", 403,
         "Origin: https://e\\udcff.com is not allowed"),
    ]
    for method, path, headers, body, status, prefix in cases:
        answer = await raw_request(client, method, path, headers, body)
        assert answer[0] == status and answer[1]["success"] is False, (prefix, answer)
        assert answer[1]["errors"][0].startswith(prefix), answer
    # Nothing was written on the way to those refusals: no job made, the cut's job not switched.
    assert not [call for call in kube.calls if call[0] in ("create", "patch")], kube.calls


async def test_bodies_in_every_content_encoding_are_read_or_refused_in_the_envelope(
        client: Client, kube: FakeKube, caplog: pytest.LogCaptureFixture) -> None:
    import gzip
    import zlib

    import brotli
    from backports import zstd
    bearer = b"Authorization: " + (await token(client))["Authorization"].encode() + b"\r\n"
    typed = bearer + b"Content-Type: application/json\r\n"
    create = b'{"jobTemplateId":7,"bucket":"media","serverType":0}'
    for coding, packed in [(b"gzip", gzip.compress(create)), (b"deflate", zlib.compress(create)),
                           (b"br", brotli.compress(create)), (b"zstd", zstd.compress(create)), (b"Identity", create)]:
        status, body = await raw_request(client, "POST", url(), typed + b"Content-Encoding: " + coding + b"\r\n",
                                         packed)
        assert status == 201 and body["result"]["jobTemplateId"] == 7, (coding, body)
    made = len([call for call in kube.calls if call[0] == "create"])
    refused = [(b"br", b"not brotli", 400, "body: could not be read: Can not decode content-encoding: br"),
               (b"zstd", b"not zstd", 400, "body: could not be read: Can not decode content-encoding: zstd"),
               (b"gzip", b"not gzip", 400, "body: could not be read: Can not decode content-encoding: gzip"),
               # A small body that unpacks past the limit (4096 bytes here): refused as a large one.
               (b"br", brotli.compress(b" " * 1_000_000 + create), 413, "request body too large (limit 4096"),
               (b"compress", create, 415, "Content-Encoding: compress is not supported; send one of gzip, "
                                          "deflate, br, zstd or none"),
               (b"gzip, br", brotli.compress(gzip.compress(create)), 415, "Content-Encoding: gzip, br is not"),
               (b"x\xff", create, 415, "Content-Encoding: x\\udcff is not supported")]
    caplog.clear()
    for coding, packed, expected, prefix in refused:
        status, body = await raw_request(client, "POST", url(), typed + b"Content-Encoding: " + coding + b"\r\n",
                                         packed)
        assert status == expected and body["success"] is False, (coding, body)
        assert body["errors"][0].startswith(prefix), body
    # Nothing made by a refused body, and nothing logged as unhandled (aiohttp reading the body again).
    assert len([call for call in kube.calls if call[0] == "create"]) == made
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]
    response = await client.post(url(), data=create, headers={**await token(client), "Content-Encoding": "compress"})
    assert response.status == 415 and response.headers["Accept-Encoding"] == "gzip, deflate, br, zstd"
    # As aiohttp reads the header: spaces and tabs around it are nothing, a no-break space is not.
    for coding, expected in ((b" \tGZIP \t", 201), (b"gzip\xc2\xa0", 415)):
        status, body = await raw_request(client, "POST", url(), typed + b"Content-Encoding: " + coding + b"\r\n",
                                         gzip.compress(create))
        assert status == expected, (coding, body)


async def test_a_connection_closes_after_a_body_its_coding_does_not_decode(
        client: Client, kube: FakeKube, caplog: pytest.LogCaptureFixture) -> None:
    """The parser stops inside such a body: what follows it on the connection is not read as a
    request (no request smuggled in the body), and the connection closes after the answer, whether
    the handler read the body (a 400) or was refused before (a 401)."""
    bearer = b"Authorization: " + (await token(client))["Authorization"].encode() + b"\r\n"
    smuggled = b"DELETE " + url(f"/{FIRST}").encode() + b" HTTP/1.1\r\nHost: x\r\n" + bearer + b"\r\n"
    caplog.clear()
    for headers, status in ((bearer, 400), (b"", 401)):
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        body = b"not gzip at all" + smuggled
        writer.write(b"POST " + url().encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(body) + headers + b"\r\n" + body +
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # to the end: the server closes the connection
        writer.close()
        assert answer.startswith(b"HTTP/1.1 %d " % status) and answer.count(b"HTTP/1.1 ") == 1, answer
        assert b"\r\nConnection: close\r\n" in answer
    assert not [call for call in kube.calls if call[0] in ("create", "delete")], kube.calls
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]


async def test_head_answers_every_get_route_without_a_body(client: Client, kube: FakeKube) -> None:
    headers = await token(client)
    put_job(client, kube, live_job(FIRST, 1, "2024-01-01T00:00:01Z"))
    for path in (url(), url(f"/{FIRST}"), url("/1/timings"), "/api/openapi.json"):
        got, head = await client.get(path, headers=headers), await client.head(path, headers=headers)
        assert head.status == got.status == 200, path
        assert head.headers["Content-Length"] == got.headers["Content-Length"] and await head.read() == b""
    assert (await client.head(url())).status == 401  # no token: as GET
    assert (await client.head(url("/404"), headers=headers)).status == 404


async def test_a_request_aiohttp_cannot_parse_is_one_short_warning_line(
        kube: FakeKube, caplog: pytest.LogCaptureFixture) -> None:
    """With the gateway's own limits (main.py): a request line or header longer than those, or a byte a
    URL may not hold, is aiohttp's 400, logged in one short WARNING line; a header within them is read."""
    from aiohttp.test_utils import TestServer

    from onair.api_gateway.main import MAX_FIELD, MAX_LINE
    config = GatewayConfig(jwt_secret=SECRET, stream_key_seed=SEED, watch=False)
    server = TestServer(init_app(config, kube=kube, store=make_store()))  # type: ignore[arg-type]
    await server.start_server(max_line_size=MAX_LINE, max_field_size=MAX_FIELD)
    try:
        await _refused_by_aiohttp_and_told_in_one_line(server.host, server.port, caplog, MAX_LINE, MAX_FIELD)
    finally:
        await server.close()


async def _refused_by_aiohttp_and_told_in_one_line(host: str, port: int, caplog: pytest.LogCaptureFixture,
                                                   max_line: int, max_field: int) -> None:
    caplog.clear()
    path = b"/api/v1/health"
    refused = (b"GET " + path + b"?x=\xff" + b"\x7f" * 60_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
               b"GET " + path + b"?" + b"x" * max_line + b" HTTP/1.1\r\nHost: x\r\n\r\n",
               b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-Long: " + b"y" * (max_field + 1) + b"\r\n\r\n")
    within = (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: " + b"y" * (max_field - 100)
              + b"\r\n\r\n")
    for request, status in ((*refused[:1], b"400"), (refused[1], b"400"), (refused[2], b"400"), (within, b"401")):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.split(b" ", 2)[1] == status, answer[:200]
    told = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(told) == 3 and all(r.levelname == "WARNING" and r.exc_info is None for r in told), told
    assert all(r.getMessage().startswith("Error handling request from 127.0.0.1: ") for r in told), told
    assert all(len(r.getMessage()) < 300 and "\n" not in r.getMessage() for r in told), told
    assert "Invalid char in url query" in told[0].getMessage()


async def test_auth_matrix(client: Client) -> None:
    expired_config = GatewayConfig(jwt_secret=SECRET)
    from onair.api_gateway.auth import issue_token
    any_key = parse_api_keys([{"key": "x-0123456789abcdef", "projects": ["*"]}])[0]
    expired = issue_token(expired_config.jwt_secret, any_key, 10, now=1)
    cases = [
        ({}, "GET", url(), 401),
        ({"Authorization": "Bearer nonsense"}, "GET", url(), 401),
        ({"Authorization": f"Bearer {expired}"}, "GET", url(), 401),
        (await token(client, "write-key-0123456789"), "GET", url(project=OTHER_PROJECT), 403),
        (await token(client, "read-key-0123456789"), "POST", url(), 403),
        (await token(client, "write-key-0123456789"), "GET", "/api/v1/streamers", 403),
        (await token(client, "admin-key-0123456789"), "GET", "/api/v1/streamers", 200),
        (await token(client, "admin-key-0123456789"), "GET", url(project="11111111-1111-4111-8111-111111111111"), 404),
    ]
    for headers, method, path, status in cases:
        response = await client.request(method, path, headers=headers,
                                        json={"jobTemplateId": 7, "bucket": "media", "serverType": 0})
        assert response.status == status, (path, headers, await response.text())
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    bad_login = await client.post("/api/v1/login", json={"apiKey": "nope"})
    assert bad_login.status == 401


async def test_control_start_stop_and_live_cut(client: Client, kube: FakeKube) -> None:
    headers = await token(client)
    first = "00000000-0000-4000-8000-000000000001"
    put_job(client, kube, live_job(first, 1, "2024-01-01T00:00:01Z", recording=True))
    key = FIRST_KEY
    response = await client.post(url(f"/{key}"), json={"online": False}, headers=headers)
    body = await response.json()
    assert response.status == 201, body
    assert body["result"] == {"online": False, "playBackPathURL": "http://s3/media/live/1/master.m3u8"}
    body = await cut_the_last_minutes(client, headers, key)
    clip = body["result"]["recordJobName"]
    assert body["result"]["playBackPathURL"] == f"http://s3/media/live/1/clips/{clip}/master.m3u8"
    record = await (await client.get(f"/api/v1/projects/{PROJECT}/recordjobs/{clip}", headers=headers)).json()
    assert record["result"]["streamInput"]["liveJobName"] == first
    assert record["result"]["status"] == "initial"
    schemas.RecordJobOut.model_validate(record["result"])
    missing = await client.post(url("/99999999-bbbb-4ccc-8ddd-eeeeeeeeeeee"), json={"online": True}, headers=headers)
    assert missing.status == 404



async def test_live_cut_idempotency_key_replays_the_same_range_and_refuses_another(client: Client,
                                                                                   kube: FakeKube) -> None:
    headers = {**await token(client), "Idempotency-Key": "cut-1"}
    put_job(client, kube, live_job(FIRST, 1, "2024-01-01T00:00:01Z", recording=True))
    now = datetime.now(UTC).replace(microsecond=0)
    cut = {"online": True, "startDateTime": (now - timedelta(minutes=5)).isoformat(),
           "finishDateTime": (now - timedelta(minutes=4)).isoformat()}
    first = await (await client.post(url(f"/{FIRST_KEY}"), headers=headers, json=cut)).json()
    again = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json=cut)
    assert again.status == 201 and (await again.json())["result"]["recordJobName"] == first["result"]["recordJobName"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = {**cut, "startDateTime": (now - timedelta(minutes=3)).isoformat(),
             "finishDateTime": (now - timedelta(minutes=2)).isoformat()}
    refused = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json=other)
    body = await refused.json()
    assert refused.status == 422 and body["errors"][0].startswith("Idempotency-Key: already used"), body
    listed = await (await client.get(f"/api/v1/projects/{PROJECT}/recordjobs", headers=await token(client))).json()
    assert [job["timeRange"]["start"] for job in listed["result"]] == [cut["startDateTime"].replace("+00:00", "Z")]
    # Asked of a replica whose cache has not seen the clip yet: refused before the job is switched.
    store = client.app[STORE_KEY]
    store.recordjobs.remove(store.recordjobs.get(NS, first["result"]["recordJobName"]) or {})
    store.recordjobs.tombstones.clear()  # that replica never saw the clip at all
    refused = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={**other, "online": False})
    assert refused.status == 422, await refused.text()
    assert kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{FIRST}"]["spec"]["online"] is True


async def test_live_cut_ending_in_the_future_is_a_clip_and_leaves_the_schedule_alone(client: Client,
                                                                                      kube: FakeKube) -> None:
    headers = await token(client)
    path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{FIRST}"
    schedule = {"startDateTime": "2024-01-01T00:00:00Z", "finishDateTime": "2099-01-01T00:00:00Z"}
    put_job(client, kube, live_job(FIRST, 1, "2024-01-01T00:00:01Z", schedule=schedule, recording=True))
    now = datetime.now(UTC).replace(microsecond=0)
    start, finish = now - timedelta(minutes=5), now + timedelta(minutes=10)
    response = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={
        "online": True, "startDateTime": start.isoformat(), "finishDateTime": finish.isoformat()})
    body = await response.json()
    assert response.status == 201, body
    assert body["messages"] == ["live cut created"]
    clip = body["result"]["recordJobName"]
    record = await (await client.get(f"/api/v1/projects/{PROJECT}/recordjobs/{clip}", headers=headers)).json()
    assert record["result"]["streamInput"]["liveJobName"] == FIRST
    assert record["result"]["timeRange"] == {"start": start.isoformat().replace("+00:00", "Z"),
                                             "end": finish.isoformat().replace("+00:00", "Z")}
    # The channel keeps running to its own schedule: the cut did not write one.
    assert kube.objects[path]["spec"]["schedule"] == schedule
    job = await (await client.get(url(f"/{FIRST}"), headers=headers)).json()
    assert job["result"]["endDateTime"] == "2099-01-01T00:00:00Z"


def put_job(client: Client, kube: FakeKube, job: dict[str, Any]) -> None:
    """`job` as the API server has it, and as the gateway's cache saw it (newer than the cache's own)."""
    cached = client.app[STORE_KEY].livejobs.get(NS, job["metadata"]["name"])
    job["metadata"]["resourceVersion"] = str(int(cached["metadata"]["resourceVersion"]) + 1 if cached else 6)
    kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{job['metadata']['name']}"] = job
    client.app[STORE_KEY].livejobs.upsert(copy.deepcopy(job))


async def test_a_cut_the_live_window_no_longer_holds_is_refused_unless_the_job_records(
    client: Client, kube: FakeKube, clock: Clock
) -> None:
    """The shared template keeps 6 segments of 4 s: a job that does not record keeps 24 s of its stream, and
    a cut must lie a segment inside that (the window slides on while the clip's Pod starts)."""
    headers = await token(client)
    clock.stopped_at = time.time()
    now = datetime.fromtimestamp(clock.stopped_at, UTC)

    async def cut(start: timedelta, finish: timedelta) -> tuple[int, dict[str, Any]]:
        response = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={
            "online": True, "startDateTime": (now + start).isoformat(), "finishDateTime": (now + finish).isoformat()})
        return response.status, await response.json()

    put_job(client, kube, live_job(FIRST, 1, "2024-01-01T00:00:01Z"))
    status, body = await cut(-timedelta(minutes=5), -timedelta(minutes=1))
    assert status == 400, body
    earliest = (now - timedelta(seconds=20) + timedelta(microseconds=999_999)).replace(microsecond=0)
    assert body["errors"][0].startswith("startDateTime: the live job does not record (recording: false) and keeps "
                                        "only the last 24 s of its stream"), body
    shown = earliest.isoformat().replace("+00:00", "Z")
    assert f"a cut ending now can start at {shown} at the earliest" in body["errors"][0], body
    # Ending 30 s from now, the clip is cut then: the window will hold 20 s before that, not 40.
    status, body = await cut(-timedelta(seconds=10), timedelta(seconds=30))
    assert status == 400 and "a cut ending at " in body["errors"][0], body
    assert not [call for call in kube.calls if call[0] in ("create", "patch")], kube.calls
    status, body = await cut(earliest - now, -timedelta(seconds=1))  # the start it gave is accepted
    assert status == 201, body
    # A job created a moment ago has streamed only since: all of that is in its window.
    put_job(client, kube, live_job(FIRST, 1, (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")))
    status, body = await cut(-timedelta(minutes=10), timedelta(0))
    assert status == 201, body
    for spec in ({"dvrWindowSeconds": 600}, {"recording": True}):
        put_job(client, kube, live_job(FIRST, 1, "2024-01-01T00:00:01Z", **spec))
        status, body = await cut(-timedelta(minutes=5), -timedelta(minutes=1))
        assert status == 201, (spec, body)
    records = client.app[STORE_KEY].recordjobs.objects
    assert len(records) == 4, records  # the earliest start, the young job's, and with a DVR window or recording


async def cut_the_last_minutes(client: Client, headers: dict[str, str], stream_key: str) -> dict[str, Any]:
    """A live cut of the range from 5 to 1 minutes ago: its 201 answer."""
    now = datetime.now(UTC)
    response = await client.post(url(f"/{stream_key}"), headers=headers, json={
        "online": True, "startDateTime": (now - timedelta(minutes=5)).isoformat(),
        "finishDateTime": (now - timedelta(minutes=1)).isoformat()})
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    return body


async def test_a_keyed_cut_retried_after_the_schedule_finished_still_answers_its_clip(
        client: Client, kube: FakeKube, clock: Clock) -> None:
    headers = {**await token(client), "Idempotency-Key": "cut-9"}
    clock.stopped_at = time.time()
    now = datetime.fromtimestamp(clock.stopped_at, UTC).replace(microsecond=0)
    finish = now + timedelta(seconds=30)
    put_job(client, kube, live_job(FIRST, 1, "2024-01-01T00:00:01Z", recording=True,
                                   schedule={"finishDateTime": finish.isoformat().replace("+00:00", "Z")}))
    cut = {"online": True, "startDateTime": (now - timedelta(minutes=5)).isoformat(),
           "finishDateTime": (now - timedelta(minutes=4)).isoformat()}
    first = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json=cut)
    assert first.status == 201, await first.text()
    clock.stopped_at += 60  # the schedule has finished; the client retries after a lost answer
    again = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json=cut)
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true", await again.text()
    assert (await again.json())["result"]["recordJobName"] == (await first.json())["result"]["recordJobName"]
    job_path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{FIRST}"
    assert kube.objects[job_path]["spec"]["online"] is True and ("patch", job_path) in kube.calls
    patches = kube.calls.count(("patch", job_path))
    switched_off = await client.post(url(f"/{FIRST_KEY}"), headers=await token(client), json={"online": False})
    assert switched_off.status == 201, await switched_off.text()
    # The replay answers the clip; it does not switch the finished job on again, as the first call did.
    replayed = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json=cut)
    assert replayed.status == 201 and replayed.headers["Idempotent-Replayed"] == "true", await replayed.text()
    assert kube.objects[job_path]["spec"]["online"] is False
    assert kube.calls.count(("patch", job_path)) == patches + 1  # only the switch off


async def test_a_cut_before_the_job_existed_and_a_start_after_its_schedule_are_refused(
    client: Client, kube: FakeKube
) -> None:
    headers = await token(client)
    path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{FIRST}"
    kube.objects[path] = live_job(FIRST, 1, "2024-01-01T00:00:01Z", recording=True,
                                  schedule={"finishDateTime": "2024-01-02T00:00:00Z"})
    kube.objects[path]["metadata"]["resourceVersion"] = "6"  # newer than the cache's
    client.app[STORE_KEY].livejobs.upsert(copy.deepcopy(kube.objects[path]))
    before = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={
        "online": False, "startDateTime": "2023-12-31T00:00:00Z", "finishDateTime": "2024-01-01T00:00:00Z"})
    body = await before.json()
    assert before.status == 400 and body["errors"][0].startswith("finishDateTime: the live job was created"), body
    late = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={"online": True})
    body = await late.json()
    assert late.status == 409 and body["errors"][0].startswith("online: the job's schedule finished"), body
    # With a cut as well (a console sends online with every cut): refused, and nothing is cut.
    cut = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={
        "online": True, "startDateTime": "2024-01-01T12:00:00Z", "finishDateTime": "2024-01-01T13:00:00Z"})
    body = await cut.json()
    assert cut.status == 409 and body["errors"][0].startswith("online: the job's schedule finished"), body
    assert ("patch", path) not in kube.calls
    stopped = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={"online": False})
    assert stopped.status == 201  # switching it off is still fine
    listed = await (await client.get(f"/api/v1/projects/{PROJECT}/recordjobs", headers=headers)).json()
    assert listed["result"] == []


async def test_a_cut_of_a_job_played_through_its_cdn_is_played_through_the_cdn(client: Client,
                                                                                kube: FakeKube) -> None:
    headers = await token(client)
    job = live_job(FIRST, 1, "2024-01-01T00:00:01Z", recording=True)
    job["status"]["urls"]["cdn"] = "https://cdn.example.com/live/1/master.m3u8"
    put_job(client, kube, job)
    body = await cut_the_last_minutes(client, headers, FIRST_KEY)
    clip = body["result"]["recordJobName"]
    assert body["result"]["playBackPathURL"] == f"https://cdn.example.com/live/1/clips/{clip}/master.m3u8"


@pytest.mark.parametrize(("given", "error"), [
    ("startDateTime", "finishDateTime: required with startDateTime"),
    ("finishDateTime", "startDateTime: required with finishDateTime"),
])
async def test_live_cut_with_one_end_is_a_400_naming_the_missing_one(client: Client, kube: FakeKube, given: str,
                                                                    error: str) -> None:
    headers = await token(client)
    path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{FIRST}"
    kube.objects[path] = live_job(FIRST, 1, "2024-01-01T00:00:01Z")
    moment = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    response = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={"online": True, given: moment})
    body = await response.json()
    assert response.status == 400, body
    assert body["success"] is False and body["result"] is None and body["errors"][0].startswith(error)
    assert "schedule" not in kube.objects[path]["spec"] and ("patch", path) not in kube.calls
    listed = await (await client.get(f"/api/v1/projects/{PROJECT}/recordjobs", headers=headers)).json()
    assert listed["result"] == []


async def test_reference_example_body_with_equal_ends_switches_without_a_cut(client: Client, kube: FakeKube) -> None:
    """The reference's own example sends startDateTime == finishDateTime: an empty range, no clip."""
    headers = await token(client)
    path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{FIRST}"
    kube.objects[path] = live_job(FIRST, 1, "2024-01-01T00:00:01Z")
    response = await client.post(url(f"/{FIRST_KEY}"), headers=headers, json={
        "online": True, "startDateTime": "2022-01-28T23:33:39.961Z", "finishDateTime": "2022-01-28T23:33:39.961Z"})
    body = await response.json()
    assert response.status == 201, body
    assert body["messages"] == ["live job updated"]
    assert body["result"] == {"online": True, "playBackPathURL": "http://s3/media/live/1/master.m3u8"}
    assert kube.objects[path]["spec"]["online"] is True
    listed = await (await client.get(f"/api/v1/projects/{PROJECT}/recordjobs", headers=headers)).json()
    assert listed["result"] == []


async def test_single_object_answers_carry_a_result_info_as_the_reference_shows(client: Client,
                                                                               kube: FakeKube) -> None:
    headers = await token(client)
    kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{FIRST}"] = live_job(FIRST, 1,
                                                                                           "2024-01-01T00:00:01Z")
    one = {"totalCount": 1, "pageIndex": 1, "pageSize": 1, "totalPages": 1, "hasNextPage": False,
           "hasPreviousPage": False, "nextToken": None}
    got = await (await client.get(url(f"/{FIRST}"), headers=headers)).json()
    switched = await (await client.post(url(f"/{FIRST_KEY}"), json={"online": False}, headers=headers)).json()
    assert got["resultInfo"] == one and switched["resultInfo"] == one
    deleted = await (await client.delete(url(f"/{FIRST}"), headers=headers)).json()
    assert deleted["result"] is None and deleted["resultInfo"] == {**one, "totalCount": 0, "totalPages": 0}
    missing = await (await client.get(url(f"/{FIRST}"), headers=headers)).json()
    assert missing["success"] is False and missing["resultInfo"] is None


async def test_times_given_in_another_zone_come_back_in_utc_with_a_z(client: Client) -> None:
    """The contract writes every DateTime in UTC with a Z; a schedule or range given with an offset is
    answered that way too, beside the Kubernetes stamps."""
    headers = await token(client)
    made = await client.post(url(), headers=headers, json={
        "jobTemplateId": 7, "bucket": "media", "serverType": 0,
        "startDateTime": "2030-01-01T02:00:00.5+02:00", "endDateTime": "2030-01-01T06:30:00+05:30"})
    assert made.status == 201, await made.text()
    name = (await made.json())["result"]["name"]
    detail = (await (await client.get(url(f"/{name}"), headers=headers)).json())["result"]
    listed = (await (await client.get(url(), params={"search": name}, headers=headers)).json())["result"]
    for shown in (detail, listed[0]):
        assert (shown["startDateTime"], shown["endDateTime"]) == ("2030-01-01T00:00:00.500Z", "2030-01-01T01:00:00Z")
        assert shown["insertDate"].endswith("Z")
    record = await client.post(f"/api/v1/projects/{PROJECT}/recordjobs", headers=headers, json={
        "source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"},
        "timeRange": {"start": "2030-01-01T01:00:00-01:00", "end": "2030-01-01T03:00:00.123456+01:00"}})
    assert record.status == 201, await record.text()
    assert (await record.json())["result"]["timeRange"] == {"start": "2030-01-01T02:00:00Z",
                                                           "end": "2030-01-01T02:00:00.123456Z"}


async def test_record_jobs_alibaba_list(client: Client) -> None:
    headers = await token(client)
    base = f"/api/v1/projects/{PROJECT}/recordjobs"
    ids = []
    for index in range(3):
        response = await client.post(base, headers=headers, json={
            "name": f"rec {index}", "source": {"streamUrl": "rtmp://origin.example.com/live/x"},
            "output": {"bucket": "media", "path": f"rec/{index}"}})
        assert response.status == 201, await response.text()
        ids.append((await response.json())["result"]["id"])
    body = await (await client.get(base, headers=headers)).json()
    assert [r["id"] for r in body["result"]] == list(reversed(ids))  # newest first by default
    body = await (await client.get(base, params={"SortBy": "asc", "PageSize": "2", "PageNo": "2"},
                                   headers=headers)).json()
    assert [r["id"] for r in body["result"]] == [ids[2]] and body["resultInfo"]["totalCount"] == 3
    agreeing = await (await client.get(base, params={"SortBy": "asc", "sort_dir": "asc"}, headers=headers)).json()
    assert [r["id"] for r in agreeing["result"]] == ids
    selected = await (await client.get(base, params={"select": "id,recordOutput.bucket", "SortBy": "asc"},
                                       headers=headers)).json()
    assert selected["result"] == [{"id": job_id, "recordOutput": {"bucket": "media"}} for job_id in ids]
    body = await (await client.get(base, params={"Keyword": "rec 1"}, headers=headers)).json()
    assert [r["name"] for r in body["result"]] == ["rec 1"]
    paused = await client.post(f"{base}/{ids[0]}/pause", headers=headers)
    assert (await paused.json())["result"]["paused"] is True
    # Paused at once, before the operator moves the phase: the filter and the row say so.
    body = await (await client.get(base, params={"Status": "paused"}, headers=headers)).json()
    assert [(r["id"], r["status"]) for r in body["result"]] == [(ids[0], "paused")]
    body = await (await client.get(base, params={"Status": "initial"}, headers=headers)).json()
    assert [r["id"] for r in body["result"]] == [ids[2], ids[1]]
    resumed = await client.post(f"{base}/{ids[0]}/resume", headers=headers)
    assert (await resumed.json())["result"]["status"] == "initial"
    assert (await (await client.get(base, params={"Status": "paused"}, headers=headers)).json())["result"] == []
    # Keyword and search together: both apply.
    for params, names in (({"Keyword": "rec", "search": "rec 2"}, ["rec 2"]),
                          ({"Keyword": "rec 1", "search": "rec 2"}, []),
                          ({"search": "rec 0"}, ["rec 0"])):
        body = await (await client.get(base, params=params, headers=headers)).json()
        assert [r["name"] for r in body["result"]] == names, params
    # Status (Alibaba's) and status (the filter) differ only in case: another spelling is the filter.
    body = await (await client.get(base, params={"STATUS": "[initial,paused]"}, headers=headers)).json()
    assert [r["id"] for r in body["result"]] == [ids[2], ids[1], ids[0]], body
    for params, error in [({"StartTime": "2024-01-01T00:00:00Z", "EndTime": "2024-03-01T00:00:00Z"},
                           "EndTime: at most 30"),
                          ({"StartTime": "2024-01-01 00:00"}, "StartTime: must be a UTC time"),
                          ({"Status": "sleeping"}, "Status: must be one of"),
                          ({"PageNo": "1", "pageIndex": "1"}, "PageNo: give"),
                          ({"SortBy": "asc", "sort_dir": "desc"}, "SortBy: asks the other order")]:
        response = await client.get(base, params=params, headers=headers)
        assert response.status == 400 and (await response.json())["errors"][0].startswith(error)


async def test_a_pause_never_lands_on_a_record_job_that_failed_after_the_gateway_saw_it(
        client: Client, kube: FakeKube) -> None:
    """A failed job records again when its spec changes: a pause, resume or stop judged on a version the
    operator has since failed is refused with the job as it is, not written."""
    headers = await token(client)
    base = f"/api/v1/projects/{PROJECT}/recordjobs"
    made = await client.post(base, headers=headers, json={
        "name": "rec", "source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"}})
    job = (await made.json())["result"]
    stored = kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/recordjobs/{job['jobId']}"]
    # The operator's writes, which this gateway's cache has not seen yet: progress, then a failure.
    stored["status"] = {"phase": "Started", "progress": 0.1}
    kube._stamp(stored)
    paused = await client.post(f"{base}/{job['id']}/pause", headers=headers)
    assert paused.status == 200 and stored["spec"]["paused"] is True, await paused.text()
    stored["status"] = {"phase": "Failed", "errorMessage": "recorder exited with code 1"}
    kube._stamp(stored)
    for action in ("resume", "stop"):
        refused = await client.post(f"{base}/{job['id']}/{action}", headers=headers)
        assert refused.status == 409, action
        assert (await refused.json())["errors"] == [f"record job {job['id']} is failed; it cannot change any more"]
    assert stored["spec"]["paused"] is True and "timeRange" not in stored["spec"]


async def test_a_stop_that_meets_another_writer_is_judged_again_on_what_that_writer_left(
        client: Client, kube: FakeKube) -> None:
    headers = await token(client)
    base = f"/api/v1/projects/{PROJECT}/recordjobs"
    made = await client.post(base, headers=headers, json={
        "name": "rec", "source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"}})
    job = (await made.json())["result"]
    path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/recordjobs/{job['jobId']}"
    stored = kube.objects[path]
    # Another client's stop, a minute ago, that this gateway's cache has not seen: it keeps its end.
    earlier = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stored["spec"]["timeRange"] = {"end": earlier}
    kube._stamp(stored)
    stopped = await client.post(f"{base}/{job['id']}/stop", headers=headers)
    assert stopped.status == 200 and stored["spec"]["timeRange"] == {"end": earlier}, await stopped.text()
    # Deleted and made again under the same name: another job, which this call does not touch.
    again = {**copy.deepcopy(stored), "spec": {**stored["spec"], "paused": False}}
    again["metadata"]["uid"] = "another-uid"
    kube.objects[path] = again
    kube._stamp(again)
    gone = await client.post(f"{base}/{job['id']}/pause", headers=headers)
    assert gone.status == 404 and again["spec"]["paused"] is False


async def test_a_record_job_that_can_never_record_is_a_400_not_a_201(client: Client) -> None:
    """As for a live cut: a stream's range that has passed, a clip of the time before its live job
    existed or after its schedule finished, and a paused clip of a past range are refused up front,
    instead of a 201 for a job the operator then fails."""
    headers = await token(client)
    base = f"/api/v1/projects/{PROJECT}/recordjobs"
    hour_ago, now = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC)

    def iso(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    stream = {"streamUrl": "rtmp://origin.example.com/live/x"}
    clip = {"liveJobRef": FIRST.upper()}  # a GUID in any case, as in the paths
    finished = "00000000-0000-4000-8000-000000000002"
    store = client.app[STORE_KEY]
    ended = copy.deepcopy(store.livejobs.get(NS, finished))
    ended["spec"]["schedule"] = {"finishDateTime": "2024-01-02T00:00:00Z"}
    ended["metadata"]["resourceVersion"] = "50"
    store.livejobs.upsert(ended)
    recorded = copy.deepcopy(store.livejobs.get(NS, FIRST))
    recorded["spec"]["recording"] = True  # keeps every segment: any range since its creation can be cut
    recorded["metadata"]["resourceVersion"] = "51"
    store.livejobs.upsert(recorded)
    for source, extra, field in (
            (stream, {"timeRange": {"start": iso(hour_ago - timedelta(hours=1)), "end": iso(hour_ago)}},
             "timeRange.end"),
            (clip, {"timeRange": {"start": "2023-06-01T00:00:00Z", "end": "2023-06-02T00:00:00Z"}}, "timeRange.end"),
            ({"liveJobRef": finished}, {"timeRange": {"start": "2024-06-01T00:00:00Z", "end": "2024-06-02T00:00:00Z"}},
             "timeRange.start"),
            (clip, {"timeRange": {"start": iso(hour_ago), "end": iso(now - timedelta(minutes=1))}, "paused": True},
             "paused")):
        response = await client.post(base, headers=headers, json={"source": source, "output": {"bucket": "media"},
                                                                  **extra})
        body = await response.json()
        assert response.status == 400 and body["errors"][0].startswith(f"{field}: "), (source, extra, body)
    made = await client.post(base, headers=headers, json={
        "source": clip, "output": {"bucket": "media"}, "timeRange": {"start": iso(hour_ago), "end": iso(now)}})
    assert made.status == 201, await made.text()
    cut = (await made.json())["result"]
    # A clip of a past range is cut at once: it cannot pause.
    paused = await client.post(f"{base}/{cut['id']}/pause", headers=headers)
    assert paused.status == 409 and "cannot pause" in (await paused.json())["errors"][0]
    # The same live cut through the live job's own call says the same about a finished schedule.
    key = derive_stream_key(SEED, NS, finished, f"uid-{finished}")
    response = await client.post(url(f"/{key}"), headers=headers, json={
        "online": True, "startDateTime": "2024-06-01T00:00:00Z", "finishDateTime": "2024-06-02T00:00:00Z"})
    assert response.status == 400 and (await response.json())["errors"][0].startswith("startDateTime: "), \
        await response.text()


def test_query_names_in_another_case_stand_for_the_same_declared_name_in_any_order() -> None:
    for declared in (["Status", "status", "PageSize", "pageSize", "Keyword"],
                     ["pageSize", "Keyword", "status", "PageSize", "Status"]):
        assert handlers.query_spellings(declared) == {"status": "status", "pagesize": "pageSize",
                                                      "keyword": "Keyword"}


async def test_select_names_nested_fields_that_exist(client: Client) -> None:
    headers = await token(client)
    for path, select, error in [(url(), "id.bogus", "select: unknown field 'id.bogus'"),
                                (url("/1"), "statistics.nope", "select: unknown field 'statistics.nope'"),
                                (url("/1"), "input.serverTypeOptions.nope",
                                 "select: unknown field 'input.serverTypeOptions.nope'")]:
        response = await client.get(path, params={"select": select}, headers=headers)
        body = await response.json()
        assert response.status == 400 and body["errors"] == [error], body
    body = await (await client.get(url("/1"), params={"select": "id,statistics.width,input.serverTypeOptions.value"},
                                   headers=headers)).json()
    assert set(body["result"]) == {"id", "statistics", "input"} and set(body["result"]["statistics"]) == {"width"}


def test_record_status_follows_spec_paused_until_the_job_ends() -> None:
    from onair.api_gateway.mapping import record_status
    for phase, paused, expected in (("Started", True, "paused"), ("Paused", False, "started"),
                                    ("Initial", False, "initial"), ("Completed", True, "completed"),
                                    ("Failed", True, "failed"), (None, True, "paused")):
        assert record_status({"spec": {"paused": paused}, "status": {"phase": phase}}) == expected, phase


async def test_outputs_timings_stats_templates(client: Client) -> None:
    headers = await token(client, "read-key-0123456789")
    body = await (await client.get(url("/outputs"), params={"liveJobId": "3"}, headers=headers)).json()
    assert body["result"] == [{"liveJobId": 3, "outputId": 1, "progress": 50, "status": 1,
                               "lockKey": body["result"][0]["lockKey"], "counter": 12, "encoderId": 1,
                               "name": "720p", "statusText": "Running"}]
    for unknown in ("4242", "00000000-0000-4000-8000-0000000000dd"):
        missing = await client.get(url("/outputs"), params={"liveJobId": unknown}, headers=headers)
        assert missing.status == 404 and (await missing.json())["errors"][0].startswith("liveJobId: live job")
    body = await (await client.get(url("/3/timings"), headers=headers)).json()
    assert body["result"][1] == {"status": "Live", "childStatus": "PublisherConnected",
                                 "startDateTime": "2024-01-01T00:00:03Z", "messageComment": "hi"}
    job_rows = (await (await client.get(url("/3/timings"), headers=headers)).json())["result"]
    assert [r["childStatus"] for r in job_rows] == ["Created", "PublisherConnected"]
    body = await (await client.get(url("/3/timings"), params={"outputId": "1"}, headers=headers)).json()
    assert body["result"][:2] == job_rows  # the job's phases apply to each of its outputs
    assert body["result"][2:] == [{"status": "Running", "childStatus": "720p", "startDateTime": "2024-01-01T00:00:03Z",
                                   "messageComment": "segments written: 12"}]
    missing = await client.get(url("/3/timings"), params={"outputId": "2"}, headers=headers)
    assert missing.status == 404 and (await missing.json())["errors"][0].startswith("outputId: ")
    body = await (await client.get(url("/3/stats"), headers=headers)).json()
    # 29.97 fps as the reference's int32
    assert body["result"] == [{"width": 1280, "height": 720, "framerate": 30, "videoDataRate": None,
                               "videoCodecId": None, "audioDataRate": None, "audioSampleRate": None,
                               "audioSampleSize": None, "audioCodecId": None, "audioChannels": None,
                               "stereo": None, "encoder": None}]
    body = await (await client.get(f"/api/v1/projects/{PROJECT}/jobtemplates", headers=headers)).json()
    assert body["result"][0]["id"] == 7 and body["result"][0]["shared"] is True


async def test_path_numbers_and_ids_outside_their_pattern_are_400s(client: Client) -> None:
    headers = await token(client, "read-key-0123456789")
    # "²" is a digit to str.isdigit() but not to int(); a trailing newline passes re.match with "$".
    for path, field in ((f"/api/v1/projects/{PROJECT}/jobtemplates/%C2%B2", "templateId"),
                        (f"/api/v1/projects/{PROJECT}/jobtemplates/7%0A", "templateId"),
                        (url("/3%0A"), "id"), (f"/api/v1/projects/{PROJECT}%0A/livejobs", "projectId")):
        response = await client.get(path, headers=headers)
        body = await response.json()
        assert response.status == 400, (path, body)
        assert body["success"] is False and body["errors"][0].startswith(f"{field}:"), body


async def test_operations_cors_openapi_metrics(client: Client) -> None:
    admin = await token(client, "admin-key-0123456789")
    health = await client.get("/api/v1/health", params={"format": "openmetrics"}, headers=admin)
    text = await health.text()
    assert health.content_type == "application/openmetrics-text" and text.endswith("# EOF\n")
    assert 'onair_streams{state="operational"} 13' in text
    assert 'onair_streams{state="partial_outage"}' in text
    body = await (await client.get("/api/v1/health", headers=admin)).json()
    assert body["result"]["stream_metrics_total"]["total"] == 25
    # Flussonic Watcher's own names (its admin API's /health and /streamers), for what monitors it.
    totals = {"operational", "degradated", "partial_outage", "outage", "disabled", "total"}
    assert {"version", "server_id", "collected_at", "stream_metrics_total", "streamer_metrics_total"} <= set(
        body["result"]) and set(body["result"]["stream_metrics_total"]) == totals
    # Its version an integer (Flussonic's is one), and as text; both the installed package's.
    from importlib.metadata import version
    assert body["result"]["version_name"] == version("onair") and isinstance(body["result"]["version"], int)
    assert body["result"]["version"] == handlers.packed_version(version("onair"))
    streamers = await (await client.get("/api/v1/streamers", headers=admin)).json()
    assert set(streamers["result"]) == {"estimated_count", "next", "prev", "streamers"}
    node = streamers["result"]["streamers"][0]
    assert node["role"] == "node" and {"cpu_usage", "memory_usage", "kubelet_version"} <= set(node["stats"])
    preflight = await client.options(url(), headers={"Origin": "https://console.example.com",
                                                     "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://console.example.com"
    # What a console's POST may carry: a compressed body too.
    allowed = {name.strip().lower() for name in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type", "content-encoding", "idempotency-key"}
    listed = await client.get(url(), headers={**admin, "Origin": "https://console.example.com"})
    exposed = {name.strip() for name in listed.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"Location", "Idempotent-Replayed", "Retry-After"}  # what a console's script may read
    denied = await client.options(url(), headers={"Origin": "https://evil.example.com",
                                                  "Access-Control-Request-Method": "POST"})
    assert denied.status == 403
    document = await (await client.get("/api/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v{version}/projects/{projectId}/livejobs" in document["paths"]
    made_up = [await client.request(method, "/api/v1/health") for method in ("PROPFIND", "MKCOL", "PROPFIND")]
    assert [response.status for response in made_up] == [405, 405, 405]
    metrics = await (await client.get("/metrics")).text()
    # Every request counted and timed, each method the gateway does not serve as the one value OTHER.
    assert 'onair_gateway_requests_total{method="OTHER",route="unmatched",status="405"} 3.0' in metrics
    assert "PROPFIND" not in metrics and "MKCOL" not in metrics
    assert 'onair_gateway_request_seconds_count{method="GET",route="/api/openapi.json"} 1.0' in metrics


async def test_watch_events_update_the_cache(client: Client) -> None:
    store = client.app[STORE_KEY]
    headers = await token(client, "read-key-0123456789")
    job = live_job("00000000-0000-4000-8000-000000000099", 99, "2024-02-01T00:00:00Z")
    job["metadata"]["resourceVersion"] = "50"
    store.livejobs.apply_event({"type": "ADDED", "object": job})
    assert (await client.get(url("/99"), headers=headers)).status == 200
    stale = copy.deepcopy(job)
    stale["metadata"]["resourceVersion"] = "40"
    stale["status"]["phase"] = "Failed"
    store.livejobs.apply_event({"type": "MODIFIED", "object": stale})
    assert (await (await client.get(url("/99"), headers=headers)).json())["result"]["status"] == "Live"
    store.livejobs.apply_event({"type": "DELETED", "object": {**job, "metadata": {**job["metadata"],
                                                                                   "resourceVersion": "60"}}})
    assert (await client.get(url("/99"), headers=headers)).status == 404


async def test_a_second_namespace_labelled_with_a_project_does_not_take_its_requests(client: Client) -> None:
    """Whoever may label a namespace with another team's project id gets neither that team's jobs nor
    its new ones: the project is not served while two namespaces carry its id."""
    store = client.app[STORE_KEY]
    headers = await token(client)
    impostor = {"metadata": {"name": "tenant-x", "resourceVersion": "90", "labels": {"onair.dev/project-id": PROJECT}}}
    store.namespaces.apply_event({"type": "ADDED", "object": impostor})
    refused = await client.get(url(), headers=headers)
    assert refused.status == 409 and "more than one namespace" in (await refused.json())["errors"][0]
    created = await client.post(url(), headers=headers, json={"jobTemplateId": 7, "bucket": "media", "serverType": 0})
    assert created.status == 409
    store.namespaces.apply_event({"type": "DELETED", "object": {**impostor, "metadata": {
        **impostor["metadata"], "resourceVersion": "91"}}})
    listed = await client.get(url(), headers=headers)
    assert listed.status == 200 and (await listed.json())["result"], await listed.text()
    assert store.project_namespace[PROJECT] == NS


async def test_a_read_only_token_is_not_given_stream_keys(client: Client) -> None:
    """A stream key lets its holder publish into the channel: a dashboard's read-only token gets null,
    also from a page a writer's request left remembered."""
    writer, reader = await token(client, "write-key-0123456789"), await token(client, "read-key-0123456789")
    params = {"pageSize": "3"}
    written = await (await client.get(url(), params=params, headers=writer)).json()
    assert written["result"][0]["key"] == FIRST_KEY
    read = await (await client.get(url(), params=params, headers=reader)).json()
    assert [row["key"] for row in read["result"]] == [None, None, None]
    assert [row["id"] for row in read["result"]] == [row["id"] for row in written["result"]]
    for path, select in ((url(f"/{FIRST}"), None), (url(), "id,key")):
        answer = await (await client.get(path, params={"select": select} if select else {}, headers=reader)).json()
        rows = answer["result"] if isinstance(answer["result"], list) else [answer["result"]]
        assert rows and all(row.get("key") is None for row in rows), answer
    detail = await (await client.get(url(f"/{FIRST}"), headers=writer)).json()
    assert detail["result"]["key"] == FIRST_KEY


async def test_a_read_only_token_is_not_given_the_credentials_a_jobs_urls_carry(client: Client) -> None:
    """An origin's user:password and a webhook receiver's token are the writer's: a dashboard's
    read-only token gets the URLs without them."""
    writer, reader = await token(client, "write-key-0123456789"), await token(client, "read-key-0123456789")
    hook = "https://hooks.example.com/onair?token=receiver-secret"
    origin = "https://user:origin-pass@origin.example.com/live/x.m3u8?sig=abc"
    made = await client.post(url(), headers=writer, json={
        "jobTemplateId": 7, "bucket": "media", "input": {"serverType": 2, "url": origin, "callbackUrl": hook}})
    assert made.status == 201, await made.text()
    name = (await made.json())["result"]["name"]
    record_path = f"/api/v1/projects/{PROJECT}/recordjobs"
    recorded = await client.post(record_path, headers=writer, json={
        "source": {"streamUrl": origin}, "output": {"bucket": "media"}, "notifyUrl": hook})
    assert recorded.status == 201, await recorded.text()
    record_id = (await recorded.json())["result"]["id"]

    async def seen(headers: dict[str, str]) -> list[str | None]:
        live = (await (await client.get(url(f"/{name}"), headers=headers)).json())["result"]["input"]
        record = (await (await client.get(f"{record_path}/{record_id}", headers=headers)).json())["result"]
        listed = (await (await client.get(record_path, params={"Keyword": str(record_id)}, headers=headers)
                         ).json())["result"][0]
        return [live["url"], live["callbackUrl"], record["streamInput"]["url"], record["notifyUrl"],
                listed["streamInput"]["url"], listed["notifyUrl"]]

    assert await seen(writer) == [origin, hook] * 3
    assert await seen(reader) == ["https://origin.example.com/live/x.m3u8", "https://hooks.example.com/onair"] * 3


async def test_answers_are_kept_by_no_cache_and_told_apart_by_origin(client: Client) -> None:
    """A login's token, stream keys, a signing key: no browser or proxy cache keeps an answer, and one
    without CORS headers (a request from another origin) is not served to the console."""
    login = await client.post("/api/v1/login", json={"apiKey": "write-key-0123456789"})
    headers = {"Authorization": f"Bearer {(await login.json())['result']['token']}"}
    listed = await client.get(url(), headers=headers)
    detail = await client.get(url(f"/{FIRST}"), headers=headers)
    refused = await client.get(url(f"/{FIRST}"))
    for response in (login, listed, detail, refused):
        assert response.headers["Cache-Control"] == "no-store", response.url
    elsewhere = await client.get(url(), headers={**headers, "Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in elsewhere.headers and elsewhere.headers["Vary"] == "Origin"
    preflight = await client.options(url(), headers={"Origin": "https://evil.example.com",
                                                     "Access-Control-Request-Method": "POST"})
    assert preflight.status == 403 and preflight.headers["Vary"] == "Origin"


async def test_lists_show_a_changed_job_at_once(client: Client) -> None:
    """List pages are remembered between requests; a changed or re-created job shows at once, a
    re-created one with a new stream key."""
    store = client.app[STORE_KEY]
    headers = await token(client, "write-key-0123456789")
    params = {"pageSize": "3"}

    async def first_row() -> dict[str, Any]:
        return (await (await client.get(url(), params=params, headers=headers)).json())["result"][0]

    assert (await first_row())["key"] == FIRST_KEY
    job = copy.deepcopy(store.livejobs.objects[(NS, FIRST)])
    job["metadata"]["resourceVersion"] = "71"
    job["spec"]["description"] = "renamed"
    store.livejobs.apply_event({"type": "MODIFIED", "object": job})
    assert (await first_row())["description"] == "renamed"
    store.livejobs.apply_event({"type": "DELETED", "object": job})
    job["metadata"].update(uid="uid-recreated", resourceVersion="80")
    store.livejobs.apply_event({"type": "ADDED", "object": job})
    row = await first_row()
    assert row["name"] == FIRST and row["key"] == derive_stream_key(SEED, NS, FIRST, "uid-recreated") != FIRST_KEY
    response = await client.post(url(f"/{FIRST_KEY}"), json={"online": False},
                                 headers=await token(client, "write-key-0123456789"))
    assert response.status == 404, await response.text()  # the old key no longer names a job


async def test_a_job_made_through_another_replica_is_read_from_the_api_server(client: Client,
                                                                              kube: FakeKube) -> None:
    """This replica's watch has not brought the job yet: a GET by name or id asks the API server once."""
    store = client.app[STORE_KEY]
    headers = await token(client)
    name = "00000000-0000-4000-8000-0000000000aa"
    path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{name}"
    kube.objects[path] = live_job(name, 77, "2024-03-01T00:00:00Z")
    assert (NS, name) not in store.livejobs.objects
    got = await client.get(url(f"/{name.upper()}"), headers=headers)
    body = await got.json()
    assert got.status == 200, body
    assert body["result"]["id"] == 77 and body["result"]["key"] == derive_stream_key(SEED, NS, name, f"uid-{name}")
    assert kube.calls.count(("get", path)) == 1
    listed = await (await client.get(url(), params={"id": "77"}, headers=headers)).json()
    assert [r["name"] for r in listed["result"]] == [name]  # now in the cache: lists show it too
    # By integer id: one label-selected request in the project's namespace.
    other = "00000000-0000-4000-8000-0000000000bb"
    kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{other}"] = live_job(other, 78,
                                                                                         "2024-03-01T00:00:01Z")
    got = await client.get(url("/78/stats"), headers=headers)
    assert got.status == 200, await got.text()
    # Its outputs too, by id or by name (the reference's example gives a GUID for liveJobId).
    third = "00000000-0000-4000-8000-0000000000ab"
    kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{third}"] = live_job(third, 76,
                                                                                         "2024-03-01T00:00:02Z")
    for wanted in ("76", third.upper()):
        got = await client.get(url("/outputs"), params={"liveJobId": wanted}, headers=headers)
        body = await got.json()
        assert got.status == 200, body
        assert [row["liveJobId"] for row in body["result"]] == [76]
    assert (await client.get(url("/78"), headers=headers)).status == 200
    # Record jobs alike.
    record_name = "00000000-0000-4000-8000-0000000000cc"
    record_path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/recordjobs/{record_name}"
    kube.objects[record_path] = {
        "metadata": {"name": record_name, "namespace": NS, "uid": "u-rec", "resourceVersion": "9",
                     "creationTimestamp": "2024-03-01T00:00:02Z", "labels": {"onair.dev/project-id": PROJECT,
                                                                              "onair.dev/id": "79"}},
        "spec": {"source": {"liveJobRef": name}, "output": {"bucket": "media"}}}
    got = await client.get(f"/api/v1/projects/{PROJECT}/recordjobs/{record_name}", headers=headers)
    assert got.status == 200 and (await got.json())["result"]["id"] == 79
    # A job the API server does not have either stays a 404, in the envelope.
    missing = await client.get(url("/00000000-0000-4000-8000-0000000000dd"), headers=headers)
    body = await missing.json()
    assert missing.status == 404 and body["success"] is False and body["errors"][0].startswith("id: live job")
    assert (await client.get(url("/4242"), headers=headers)).status == 404


async def test_a_copy_read_before_a_delete_does_not_bring_the_job_back(client: Client, kube: FakeKube) -> None:
    store = client.app[STORE_KEY]
    headers = await token(client, "read-key-0123456789")
    name = "00000000-0000-4000-8000-0000000000ee"
    stale = live_job(name, 80, "2024-03-01T00:00:00Z")
    stale["metadata"]["resourceVersion"] = "90"
    kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{name}"] = stale  # what a slow GET returns
    store.livejobs.apply_event({"type": "DELETED", "object": {**stale, "metadata": {**stale["metadata"],
                                                                                   "resourceVersion": "95"}}})
    assert (await client.get(url(f"/{name}"), headers=headers)).status == 404
    assert (await client.get(url("/80"), headers=headers)).status == 404
    recreated = copy.deepcopy(stale)
    recreated["metadata"].update(uid="uid-again", resourceVersion="99")
    store.livejobs.apply_event({"type": "ADDED", "object": recreated})
    assert (await client.get(url(f"/{name}"), headers=headers)).status == 200


async def test_a_job_deleted_through_the_gateway_stays_gone_while_its_last_writes_come_in(
        client: Client, kube: FakeKube) -> None:
    """After a 200 DELETE the job is not listed or found again: not by a status write the operator made
    just before it (a higher resourceVersion), nor by the job's own deletion in progress (finalizers)."""
    store = client.app[STORE_KEY]
    headers = await token(client)
    name = "00000000-0000-4000-8000-0000000000ef"
    job = live_job(name, 81, "2024-03-01T00:00:00Z")
    job["metadata"]["resourceVersion"] = "100"
    store.livejobs.apply_event({"type": "ADDED", "object": job})
    path = f"/apis/onair.dev/v1alpha1/namespaces/{NS}/livejobs/{name}"
    being_deleted = copy.deepcopy(job)
    being_deleted["metadata"].update(resourceVersion="102", deletionTimestamp="2024-03-01T00:01:00Z",
                                     finalizers=["onair.dev/cleanup"])
    kube.objects[path] = being_deleted  # what the API server answers the DELETE with
    assert (await client.delete(url(f"/{name}"), headers=headers)).status == 200
    status_write = copy.deepcopy(job)
    status_write["metadata"]["resourceVersion"] = "101"
    finalized = copy.deepcopy(being_deleted)
    finalized["metadata"].update(resourceVersion="103", finalizers=[])
    for late in (status_write, being_deleted, finalized):
        store.livejobs.apply_event({"type": "MODIFIED", "object": late})
        listed = await (await client.get(url(), params={"id": "81"}, headers=headers)).json()
        assert listed["result"] == [], late["metadata"]
        assert (await client.get(url("/81"), headers=headers)).status == 404


async def test_public_metrics_false_hides_metrics(aiohttp_client: Callable[..., Awaitable[Client]],
                                                  kube: FakeKube) -> None:
    config = GatewayConfig(jwt_secret=SECRET, stream_key_seed=SEED, watch=False, public_metrics=False)
    client = await aiohttp_client(init_app(config, kube=kube, store=make_store()))  # type: ignore[arg-type]
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/healthz")).status == 200


async def test_health_says_ready_only_when_readyz_would_answer_200(aiohttp_client: Callable[..., Awaitable[Client]],
                                                                    kube: FakeKube) -> None:
    """A gateway that has not read its signing key's Secret yet would sign with a key about to change:
    /readyz is 503, and /health (and its onair_gateway_ready) says not ready with it."""
    config = GatewayConfig(jwt_secret=SECRET, stream_key_seed=SEED, watch=False, jwt_secret_secret="signing",
                           api_keys=parse_api_keys([{"name": "a", "key": "admin-key-0123456789", "projects": ["*"],
                                                     "role": "admin"}]))
    client = await aiohttp_client(init_app(config, kube=kube, store=make_store()))  # type: ignore[arg-type]
    gateway = client.app[GATEWAY_KEY]
    admin = await token(client, "admin-key-0123456789")
    assert (await client.get("/readyz")).status == 503
    assert (await (await client.get("/api/v1/health", headers=admin)).json())["result"]["ready"] is False
    assert "onair_gateway_ready 0" in await (await client.get("/api/v1/health?format=openmetrics",
                                                              headers=admin)).text()
    for secret in gateway.watched_secrets:
        secret.cache.synced.set()
    assert (await client.get("/readyz")).status == 200
    assert (await (await client.get("/api/v1/health", headers=admin)).json())["result"]["ready"] is True


# --- every list: the Brightcove query language, select=, keyset and offset paging -------------------

def set_status(store: Store, job_id: int, rv: str, **status: Any) -> None:
    """A new version of live job `job_id` with these status fields (as a watch event brings it)."""
    job = copy.deepcopy(store.livejobs.objects[(NS, f"00000000-0000-4000-8000-{job_id:012d}")])
    job["metadata"]["resourceVersion"] = rv
    job["status"].update(status)
    store.livejobs.apply_event({"type": "MODIFIED", "object": job})


async def all_pages(client: Client, path: str, headers: dict[str, str], params: dict[str, str],
                    rows_of: Callable[[dict[str, Any]], list[Any]] = lambda body: body["result"]) -> list[Any]:
    """Follows next_token from the first page to the last; every page is a 200."""
    rows: list[Any] = []
    token_ = None
    for _ in range(100):
        response = await client.get(path, params={**params, **({"start_token": token_} if token_ else {})},
                                    headers=headers)
        body = await response.json()
        assert response.status == 200, body
        rows.extend(rows_of(body))
        token_ = body["resultInfo"]["nextToken"]
        assert body["resultInfo"]["hasNextPage"] is bool(token_)
        if not token_:
            return rows
    raise AssertionError("next_token never ended")


async def assert_400(client: Client, path: str, headers: dict[str, str], params: dict[str, str],
                     field: str) -> None:
    response = await client.get(path, params=params, headers=headers)
    body = await response.json()
    assert response.status == 400, (params, body)
    assert body["success"] is False and body["result"] is None, body
    assert body["errors"] and body["errors"][0].startswith(f"{field}:"), (params, body["errors"])


THREE_OUTPUTS = [{"name": "1080p", "status": "Running", "segmentsWritten": 30, "progress": 0.9},
                 {"name": "720p", "status": "Stalled", "segmentsWritten": 20, "progress": 0.4},
                 {"name": "480p", "status": "Pending", "segmentsWritten": 0}]


async def test_outputs_list_filters_selects_and_pages(client: Client) -> None:
    store = client.app[STORE_KEY]
    for job_id in (2, 24):
        set_status(store, job_id, f"6{job_id}", outputs=THREE_OUTPUTS)
    headers = await token(client, "read-key-0123456789")
    path = url("/outputs")

    async def rows(**params: str) -> list[tuple[int, str]]:
        response = await client.get(path, params=params, headers=headers)
        body = await response.json()
        assert response.status == 200, body
        return [(r["liveJobId"], r.get("name")) for r in body["result"]]

    # 23 jobs with one 720p output, 2 with three: 29 outputs. Without paging parameters, all of them
    # (the reference's "get all" has none).
    everything = await rows()
    assert len(everything) == 29 and len(set(everything)) == 29
    assert await rows(pageSize="1000") == everything
    assert await rows(status="Stalled") == [(2, "720p"), (24, "720p")]
    assert await rows(status="[Stalled,Pending]") == [(2, "720p"), (2, "480p"), (24, "720p"), (24, "480p")]
    # By the number each row gives as its status, too.
    stalled = OUTPUT_STATUSES.index("Stalled")
    assert await rows(status=str(stalled)) == await rows(status="Stalled")
    assert all(row["status"] == stalled for row in (await (await client.get(
        path, params={"status": str(stalled)}, headers=headers)).json())["result"])
    # Choices have no order: a range of them is a 400, not names compared alphabetically.
    ranged = await client.get(path, params={"status": f"gt:{stalled}"}, headers=headers)
    assert ranged.status == 400 and (await ranged.json())["errors"] == [
        "status: gt: does not apply to a choice; list the ones wanted: [a,b]"]
    assert await rows(jobId="ge:24", name="'1080p'") == [(24, "1080p")]
    assert await rows(rendition="[1080p,480p]", jobId="le:2") == [(2, "1080p"), (2, "480p")]
    assert await rows(counter="gt:25") == [(2, "1080p"), (24, "1080p")]
    assert await rows(liveJobId="24", status="Pending") == [(24, "480p")]
    assert (await rows(sort_dir="desc", pageSize="3")) == [(25, "720p"), (24, "480p"), (24, "720p")]
    selected = await (await client.get(path, params={"select": "liveJobId,statusText", "jobId": "2"},
                                       headers=headers)).json()
    assert selected["result"] == [{"liveJobId": 2, "statusText": s} for s in ("Running", "Stalled", "Pending")]
    # Keyset paging over every output: the same rows as one big page, none twice, none left out.
    for direction in ("asc", "desc"):
        paged = await all_pages(client, path, headers, {"page_size": "4", "sort_dir": direction})
        listed = [(r["liveJobId"], r["name"]) for r in paged]
        assert listed == (everything if direction == "asc" else everything[::-1])
    first = await (await client.get(path, params={"page_size": "4"}, headers=headers)).json()
    assert first["resultInfo"]["totalCount"] == 29 and first["resultInfo"]["pageIndex"] == 0
    for params, field in (({"status": "Broken"}, "status"), ({"jobId": "abc"}, "jobId"),
                          ({"sort": "name"}, "sort"), ({"page_size": "0"}, "page_size"),
                          ({"page_size": "1001"}, "page_size"), ({"select": "nope"}, "select"),
                          ({"start_token": "Zm9v"}, "start_token"), ({"bogus": "1"}, "bogus"),
                          ({"status": "[Running,"}, "status"), ({"progress": "gt:"}, "progress"),
                          ({"pageSize": "2", "page_size": "2"}, "start_token"), ({"liveJobId": "2 "}, "liveJobId"),
                          ({"liveJobId": "-2"}, "liveJobId")):
        await assert_400(client, path, headers, params, field)
    # A token belongs to its query: with other filters it is refused, not misread.
    other = first["resultInfo"]["nextToken"]
    await assert_400(client, path, headers, {"start_token": other, "status": "Running"}, "start_token")
    # And to its list: the live jobs' token does not page the outputs. The default sort spelled out is
    # the same query.
    jobs = await (await client.get(url(), params={"page_size": "4"}, headers=headers)).json()
    await assert_400(client, path, headers, {"start_token": jobs["resultInfo"]["nextToken"], "page_size": "4"},
                     "start_token")
    spelled = await client.get(path, params={"start_token": other, "page_size": "4", "sort": "created_at",
                                             "sort_dir": "asc"}, headers=headers)
    assert spelled.status == 200, await spelled.text()
    assert [(r["liveJobId"], r["name"]) for r in (await spelled.json())["result"]] == everything[4:8]


async def test_timings_list_filters_sorts_and_pages(client: Client) -> None:
    store = client.app[STORE_KEY]
    history = [{"time": f"2024-01-01T00:0{minute}:00Z", "phase": phase, "reason": reason}
               for minute, (phase, reason) in enumerate([("Pending", "Created"), ("Provisioning", "PodScheduled"),
                                                         ("WaitingForInput", "EncoderReady"),
                                                         ("Live", "PublisherConnected"),
                                                         ("Reconnecting", "PublisherLost"),
                                                         ("Live", "PublisherConnected")])]
    set_status(store, 5, "75", timings=history)
    headers = await token(client, "read-key-0123456789")
    path = url("/5/timings")

    async def reasons(**params: str) -> list[str]:
        response = await client.get(path, params=params, headers=headers)
        body = await response.json()
        assert response.status == 200, body
        return [r["childStatus"] for r in body["result"]]

    assert await reasons() == ["Created", "PodScheduled", "EncoderReady", "PublisherConnected", "PublisherLost",
                               "PublisherConnected"]
    assert await reasons(status="Live") == ["PublisherConnected", "PublisherConnected"]
    assert await reasons(status="[Pending,Reconnecting]") == ["Created", "PublisherLost"]
    assert await reasons(startDateTime="ge:2024-01-01T00:04:00Z") == ["PublisherLost", "PublisherConnected"]
    assert await reasons(created_at=f"lt:{1704067260000}") == ["Created"]  # before 00:01:00
    assert await reasons(sort="created_at", sort_dir="desc", pageSize="2") == ["PublisherConnected",
                                                                                "PublisherLost"]
    body = await (await client.get(path, params={"select": "status", "pageIndex": "2", "pageSize": "4"},
                                   headers=headers)).json()
    assert body["result"] == [{"status": "Reconnecting"}, {"status": "Live"}]
    assert body["resultInfo"]["totalCount"] == 6 and body["resultInfo"]["totalPages"] == 2
    paged = await all_pages(client, path, headers, {"page_size": "4", "sort_dir": "desc"})
    assert [r["status"] for r in paged] == ["Live", "Reconnecting", "Live", "WaitingForInput", "Provisioning",
                                            "Pending"]
    for params, field in (({"sort": "modified_at"}, "sort"), ({"startDateTime": "gt:soon"}, "startDateTime"),
                          ({"select": "phase"}, "select"), ({"outputId": "0"}, "outputId"),
                          ({"pageIndex": "0"}, "pageIndex")):
        await assert_400(client, path, headers, params, field)


async def test_stats_is_one_row_of_every_field_in_every_state(client: Client) -> None:
    store = client.app[STORE_KEY]
    set_status(store, 6, "76", phase="Pending", statistics=None)
    set_status(store, 8, "78", statistics={})
    headers = await token(client, "read-key-0123456789")
    empty = dict.fromkeys(["width", "height", "framerate", "videoDataRate", "videoCodecId", "audioDataRate",
                           "audioSampleRate", "audioSampleSize", "audioCodecId", "audioChannels", "stereo",
                           "encoder"])
    for job_id in (6, 8):  # no statistics yet: the documented row, every value null
        body = await (await client.get(url(f"/{job_id}/stats"), headers=headers)).json()
        assert body["result"] == [empty] and body["resultInfo"]["totalCount"] == 1
        detail = await (await client.get(url(f"/{job_id}"), headers=headers)).json()
        assert detail["result"]["statistics"] == empty
        schemas.LiveJobDetail.model_validate(detail["result"])
    body = await (await client.get(url("/3/stats"), params={"select": "width,height"}, headers=headers)).json()
    assert body["result"] == [{"width": 1280, "height": 720}]
    assert len((await (await client.get(url("/3/stats"), params={"width": "ge:1280", "framerate": "[25,30]"},
                                        headers=headers)).json())["result"]) == 1
    assert (await (await client.get(url("/3/stats"), params={"height": "gt:1000"},
                                    headers=headers)).json())["result"] == []
    await assert_400(client, url("/3/stats"), headers, {"width": "wide"}, "width")
    await assert_400(client, url("/3/stats"), headers, {"select": "bitrate"}, "select")


async def test_templates_list_filters_sorts_and_pages(client: Client) -> None:
    store = client.app[STORE_KEY]

    def template(name: str, namespace: str, template_id: int, created: str, default: bool = False) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "2",
                             "creationTimestamp": created},
                "spec": {"id": template_id, "name": name, "default": default,
                         "renditions": [{"name": "360p", "width": 640, "height": 360, "fps": 30,
                                         "videoBitrate": 800000}]}}

    store.templates.replace([
        template("ladder", "onair-system", 7, "2024-01-03T00:00:00Z", default=True),
        template("HD ladder", NS, 3, "2024-01-05T00:00:00Z"),
        template("mobile", "onair-system", 9, "2024-01-01T00:00:00Z"),
        template("audio", NS, 12, "2024-01-02T00:00:00Z"),
    ], "3")
    headers = await token(client, "read-key-0123456789")
    path = f"/api/v1/projects/{PROJECT}/jobtemplates"

    async def ids(**params: str) -> list[int]:
        response = await client.get(path, params=params, headers=headers)
        body = await response.json()
        assert response.status == 200, body
        return [r["id"] for r in body["result"]]

    assert await ids() == [7, 3, 9, 12]  # the default template first, then by id
    assert await ids(sort="id") == [3, 7, 9, 12]
    assert await ids(sort="created_at") == [9, 12, 7, 3]
    assert await ids(sort="created_at", sort_dir="desc") == [3, 7, 12, 9]
    assert await ids(default="true") == [7]
    assert await ids(shared="false") == [3, 12]
    assert await ids(name="'HD ladder'") == [3]
    assert await ids(id="[9,12]") == [9, 12]
    assert await ids(id="gt:7", created_at="lt:2024-01-02T00:00:00Z") == [9]
    body = await (await client.get(path, params={"select": "id,name", "pageSize": "2", "pageIndex": "2"},
                                   headers=headers)).json()
    assert body["result"] == [{"id": 9, "name": "mobile"}, {"id": 12, "name": "audio"}]
    assert body["resultInfo"]["totalCount"] == 4 and body["resultInfo"]["hasPreviousPage"] is True
    assert [r["id"] for r in await all_pages(client, path, headers, {"page_size": "1"})] == [7, 3, 9, 12]
    assert [r["id"] for r in await all_pages(client, path, headers, {"page_size": "3", "sort_dir": "desc"})] == [
        12, 9, 3, 7]
    # Without paging parameters the whole list, as before this list could page (up to 1000 rows).
    store.templates.replace([template(f"t{i}", NS, 100 + i, "2024-02-01T00:00:00Z") for i in range(15)], "4")
    body = await (await client.get(path, headers=headers)).json()
    assert len(body["result"]) == 15 and body["resultInfo"]["pageSize"] == 1000
    assert body["resultInfo"]["hasNextPage"] is False
    assert len(await ids(pageSize="10")) == 10
    for params, field in (({"default": "maybe"}, "default"), ({"default": "gt:true"}, "default"),
                          ({"sort": "name"}, "sort"), ({"id": "'7'"}, "id"), ({"select": ""}, "select")):
        await assert_400(client, path, headers, params, field)


@pytest.mark.parametrize("sort", ["created_at", "modified_at"])
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_a_streamers_page_past_the_end_leads_back_to_the_last_page(client: Client, sort: str,
                                                                          order: str) -> None:
    """Five encoders, two a page: a next whose rows after it were deleted meanwhile, or a page number past
    the last, gives an empty page whose prev is the last page, and from there back to the first."""
    store = client.app[STORE_KEY]
    store.nodes.replace([], "2")
    store.pods.replace([
        {"metadata": {"name": f"enc-{n}", "namespace": NS, "resourceVersion": "1",
                      "creationTimestamp": f"2024-01-01T00:0{n}:00Z",
                      "labels": {"app.kubernetes.io/part-of": "onair", "onair.dev/role": "encoder",
                                 "onair.dev/job": f"00000000-0000-4000-8000-{n:012d}",
                                 "onair.dev/project-id": PROJECT}},
         "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}} for n in range(1, 6)], "2")
    headers = await token(client, "admin-key-0123456789")
    in_order = ["enc-1", "enc-2", "enc-3", "enc-4", "enc-5"][::1 if order == "asc" else -1]

    async def page(**params: str) -> tuple[list[str], str | None, str | None]:
        response = await client.get("/api/v1/streamers", params={"sort": sort, "sort_dir": order, **params},
                                    headers=headers)
        body = await response.json()
        assert response.status == 200, body
        return [s["hostname"] for s in body["result"]["streamers"]], body["result"]["next"], body["result"]["prev"]

    rows, after_first, _ = await page(limit="2")
    assert rows == in_order[:2] and after_first
    rows, after_second, _ = await page(limit="2", cursor=after_first)
    assert rows == in_order[2:4] and after_second
    rows, _, prev = await page(pageSize="2", pageIndex="4")  # past the last page (3)
    assert rows == [] and prev
    rows, _, prev = await page(limit="2", cursor=prev)
    assert rows == in_order[3:]  # the last page: the last two rows
    store.pods.replace([p for p in store.pods.values() if p["metadata"]["name"] != in_order[4]], "3")
    rows, onward, prev = await page(limit="2", cursor=after_second)
    assert rows == [] and onward is None and prev
    rows, _, prev = await page(limit="2", cursor=prev)
    assert rows == in_order[2:4] and prev  # the last two rows left: the page the cursor ended
    rows, _, prev = await page(limit="2", cursor=prev)
    assert rows == in_order[:2] and prev is None


async def test_streamers_rows_filter_select_and_page(client: Client, kube: FakeKube) -> None:
    store = client.app[STORE_KEY]

    def pod(name: str, role: str | None, node: str, phase: str, job_id: int, created: str) -> dict[str, Any]:
        labels = {"app.kubernetes.io/part-of": "onair"}
        if role:
            labels |= {"onair.dev/role": role, "onair.dev/job": f"00000000-0000-4000-8000-{job_id:012d}",
                       "onair.dev/project-id": PROJECT}
        return {"metadata": {"name": name, "namespace": NS if role else "onair-system", "labels": labels,
                             "resourceVersion": "1", "creationTimestamp": created},
                "spec": {"nodeName": node}, "status": {"phase": phase, "startTime": created}}

    store.pods.replace([
        pod("enc-1", "encoder", "node-1", "Running", 1, "2024-01-01T00:01:00Z"),
        pod("enc-2", "encoder", "node-1", "Pending", 2, "2024-01-01T00:02:00Z"),
        pod("rec-1", "recorder", "node-1", "Running", 3, "2024-01-01T00:03:00Z"),
        pod("onair-gateway-5d8f", None, "node-1", "Running", 0, "2024-01-01T00:00:30Z"),  # not a streamer
    ], "2")
    headers = await token(client, "admin-key-0123456789")
    path = "/api/v1/streamers"

    async def hosts(**params: str) -> list[str]:
        response = await client.get(path, params=params, headers=headers)
        body = await response.json()
        assert response.status == 200, body
        assert body["result"]["estimated_count"] == body["resultInfo"]["totalCount"]
        schemas.StreamersResult.model_validate(body["result"])
        return [s["hostname"] for s in body["result"]["streamers"]]

    assert await hosts() == ["node-1", "enc-1", "enc-2", "rec-1"]  # by creation (the node has no time)
    assert await hosts(role="encoder") == ["enc-1", "enc-2"]
    assert await hosts(role="[recorder,node]") == ["node-1", "rec-1"]
    assert await hosts(status="Running", role="encoder") == ["enc-1"]
    assert await hosts(node="node-1", job="'00000000-0000-4000-8000-000000000003'") == ["rec-1"]
    assert await hosts(created_at="ge:2024-01-01T00:02:00Z", sort_dir="desc") == ["rec-1", "enc-2"]
    body = await (await client.get(path, params={"select": "hostname,stats.encoders", "role": "node"},
                                   headers=headers)).json()
    assert body["result"]["streamers"] == [{"hostname": "node-1", "stats": {"encoders": 3}}]
    # Flussonic's types: cpu_usage and memory_usage in percent, started_at in Unix seconds.
    node = store.nodes.get("", "node-1")
    node["status"]["allocatable"] = {"cpu": "2", "memory": "4Gi"}
    kube.node_metrics = {"items": [{"metadata": {"name": "node-1"}, "usage": {"cpu": "500m", "memory": "1Gi"}}]}
    body = await (await client.get(path, params={"select": "hostname,stats", "hostname": "[node-1,enc-1]"},
                                   headers=headers)).json()
    node_stats, encoder_stats = (row["stats"] for row in body["result"]["streamers"])
    assert (node_stats["cpu_usage"], node_stats["memory_usage"]) == (25, 25)
    assert node_stats["usage"] == {"cpu": "500m", "memory": "1Gi"}
    assert encoder_stats["started_at"] == int(datetime(2024, 1, 1, 0, 1, tzinfo=UTC).timestamp())
    paged = await all_pages(client, path, headers, {"page_size": "3"},
                            rows_of=lambda b: [s["hostname"] for s in b["result"]["streamers"]])
    assert paged == ["node-1", "enc-1", "enc-2", "rec-1"]
    for params, field in (({"select": "estimated_count"}, "select"), ({"role": "gateway"}, "role"),
                          ({"sort": "hostname"}, "sort"), ({"page_size": "x"}, "page_size")):
        await assert_400(client, path, headers, params, field)

    # Flussonic's own paging: limit, and the answer's next and prev given back as cursor, both ways.
    async def page(**params: str) -> dict[str, Any]:
        response = await client.get(path, params=params, headers=headers)
        body = await response.json()
        assert response.status == 200, body
        return cast(dict[str, Any], body["result"])

    for order, expected in (("asc", ["node-1", "enc-1", "enc-2", "rec-1"]),
                            ("desc", ["rec-1", "enc-2", "enc-1", "node-1"])):
        first = await page(limit="3", sort_dir=order)
        assert [s["hostname"] for s in first["streamers"]] == expected[:3] and first["prev"] is None
        last = await page(limit="3", sort_dir=order, cursor=first["next"])
        assert [s["hostname"] for s in last["streamers"]] == expected[3:] and last["next"] is None
        back = await page(limit="3", sort_dir=order, cursor=last["prev"])
        assert [s["hostname"] for s in back["streamers"]] == expected[:3] and back["prev"] is None
        assert [s["hostname"] for s in (await page(limit="3", sort_dir=order, cursor=back["next"]))["streamers"]] \
            == expected[3:]
        # One at a time, to the end and back to the start: every row once each way, none twice.
        forward, cursor = [], None
        while True:
            got = await page(limit="1", sort_dir=order, **({"cursor": cursor} if cursor else {}))
            forward += [s["hostname"] for s in got["streamers"]]
            if got["next"] is None:
                break
            cursor = got["next"]
        backward, cursor = [], got["prev"]
        while cursor is not None:
            got = await page(limit="1", sort_dir=order, cursor=cursor)
            backward += [s["hostname"] for s in got["streamers"]]
            cursor = got["prev"]
        assert forward == expected and backward == expected[::-1][1:]
    # The offset pages carry them too; Brightcove's start_token takes a prev as well.
    second = await page(pageSize="2", pageIndex="2")
    assert [s["hostname"] for s in second["streamers"]] == ["enc-2", "rec-1"] and second["next"] is None
    assert [s["hostname"] for s in (await page(page_size="2", start_token=second["prev"]))["streamers"]] == [
        "node-1", "enc-1"]
    prev = second["prev"]
    for params, field in (({"cursor": prev, "start_token": prev}, "cursor"),
                          ({"limit": "3", "page_size": "3"}, "limit"), ({"limit": "0"}, "limit"),
                          ({"limit": "1001"}, "limit"), ({"cursor": "nonsense"}, "cursor"),
                          ({"cursor": prev, "role": "node"}, "cursor"), ({"cursor": prev, "pageIndex": "1"}, "cursor")):
        await assert_400(client, path, headers, params, field)
    # What was before a prev is gone when it is followed: the first page, not an empty dead end.
    later = await page(limit="2", cursor=(await page(limit="2"))["next"])
    assert [s["hostname"] for s in later["streamers"]] == ["enc-2", "rec-1"]
    store.pods.replace([p for p in store.pods.values() if p["metadata"]["name"] != "enc-1"], "3")
    store.nodes.replace([], "3")
    back = await page(limit="2", cursor=later["prev"])
    assert [s["hostname"] for s in back["streamers"]] == ["enc-2", "rec-1"]
    assert back["prev"] is None and back["next"] is None
    # A prev of the streamers is no token of a job list, nor is a job list's token made to lead backward.
    job_list = f"/api/v1/projects/{PROJECT}/livejobs"
    await assert_400(client, job_list, headers, {"start_token": prev}, "start_token")
    given = (await (await client.get(job_list, params={"page_size": "1"}, headers=headers)).json())["resultInfo"]
    data = json.loads(base64.urlsafe_b64decode(given["nextToken"] + "=="))
    forged = base64.urlsafe_b64encode(json.dumps({**data, "b": True}).encode()).decode().rstrip("=")
    await assert_400(client, job_list, headers, {"start_token": forged}, "start_token")


async def test_an_admin_token_of_some_projects_sees_only_their_jobs_and_pods(client: Client) -> None:
    store = client.app[STORE_KEY]
    store.pods.replace([{"metadata": {"name": "enc-1", "namespace": NS, "resourceVersion": "1",
                                      "labels": {"app.kubernetes.io/part-of": "onair", "onair.dev/role": "encoder",
                                                 "onair.dev/job": FIRST, "onair.dev/project-id": PROJECT}},
                         "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}}], "2")
    for key, encoders, streams in (("admin-key-0123456789", ["enc-1"], 25), ("other-admin-key-0123456789", [], 0)):
        headers = await token(client, key)
        body = await (await client.get("/api/v1/streamers", headers=headers)).json()
        rows = body["result"]["streamers"]
        assert [row["hostname"] for row in rows if row["role"] == "encoder"] == encoders, key
        assert [row["stats"]["encoders"] for row in rows if row["role"] == "node"] == [len(encoders)], key
        health = await (await client.get("/api/v1/health", headers=headers)).json()
        assert health["result"]["stream_metrics_total"]["total"] == streams, key


def test_with_named_namespaces_only_their_projects_and_encoder_pods_are_served() -> None:
    """With the operator's namespaces named, a project elsewhere is not served (its jobs would never
    run), and the chart grants the Pod read in those alone: the gateway watches each of them (a
    cluster-wide watch would be refused) and reads them as one cache."""
    config = GatewayConfig.from_env({"ONAIR_GATEWAY_WATCH_NAMESPACES": "news, sport"})
    store = Store("onair-system", "seed-" * 8, config.watch_namespaces)
    project_a, project_b = str(uuid.uuid4()), str(uuid.uuid4())
    store.namespaces.replace([
        {"metadata": {"name": ns, "resourceVersion": "2", "labels": {"onair.dev/project-id": project}}}
        for ns, project in (("news", project_a), ("elsewhere", project_b))], "2")
    assert store.project_namespace == {project_a: "news"}
    paths = {cache.name: cache.path for cache in store.caches if cache.name.startswith("pods")}
    assert paths == {"pods/news": "/api/v1/namespaces/news/pods", "pods/sport": "/api/v1/namespaces/sport/pods"}

    def pod(namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "3"}}

    store.pods.replace([pod("news", "enc-1"), pod("sport", "enc-2")], "3")
    store.pods.upsert(pod("sport", "enc-3"))
    assert not store.pods.upsert(pod("elsewhere", "enc-4")), "not watched there"
    assert sorted(p["metadata"]["name"] for p in store.pods.values()) == ["enc-1", "enc-2", "enc-3"]
    assert store.pods.get("sport", "enc-3") and store.pods.get("news", "enc-3") is None
    everywhere = Store("onair-system", "seed-" * 8, GatewayConfig.from_env({}).watch_namespaces)
    assert [c.path for c in everywhere.caches if c.name.startswith("pods")] == ["/api/v1/pods"]


def test_with_namespace_patterns_only_the_namespaces_the_operator_watches_are_served() -> None:
    """The operator is given the chart's list as a JSON array of kopf patterns: the gateway reads the
    same list the same way, and reads the encoder Pods cluster-wide (the chart binds its role so)."""
    watched = '["t-*, !t-test", "onair-system"]'
    config = GatewayConfig.from_env({"ONAIR_GATEWAY_WATCH_NAMESPACES": watched})
    assert config.watch_namespaces == ("t-*, !t-test", "onair-system")
    store = Store("onair-system", "seed-" * 8, config.watch_namespaces)
    projects = {ns: str(uuid.uuid4()) for ns in ("t-news", "t-test", "prod-x")}
    store.namespaces.replace([
        {"metadata": {"name": ns, "resourceVersion": "2", "labels": {"onair.dev/project-id": project}}}
        for ns, project in projects.items()], "2")
    assert store.project_namespace == {projects["t-news"]: "t-news"}
    assert [c.path for c in store.caches if c.name.startswith("pods")] == ["/api/v1/pods"]
    with pytest.raises(ValueError, match="WATCH_NAMESPACES"):
        GatewayConfig.from_env({"ONAIR_GATEWAY_WATCH_NAMESPACES": '["t-*", 7]'})


def test_every_list_declares_its_query_language_in_the_openapi_document() -> None:
    from onair.api_gateway.openapi import build_document
    document = build_document()
    lists = {"/api/v{version}/projects/{projectId}/livejobs/outputs": {"status", "name", "jobId"},
             "/api/v{version}/projects/{projectId}/livejobs/{id}/timings": {"status", "startDateTime"},
             "/api/v{version}/projects/{projectId}/livejobs/{id}/stats": {"width", "encoder"},
             "/api/v{version}/projects/{projectId}/jobtemplates": {"id", "name", "default"},
             "/api/v1/streamers": {"node", "status", "job", "role"}}
    for path, filters in lists.items():
        declared = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        assert {"pageIndex", "pageSize", "sort", "sort_dir", "start_token", "page_size", "select"} <= set(declared)
        assert filters <= set(declared), path
        assert declared["sort"]["schema"]["enum"], path


def test_a_packed_version_orders_as_the_releases_do() -> None:
    releases = ["0.1.0", "0.1.1", "0.2", "0.10.0", "1.0.0rc1", "1.2.3", "2.0.0", "10.0.0"]
    packed = [handlers.packed_version(release) for release in releases]
    assert packed == [1000, 1001, 2000, 10000, 1_000_000, 1_002_003, 2_000_000, 10_000_000]


def test_the_openapi_paths_are_distinct_templates_whose_parameters_are_declared() -> None:
    """OpenAPI: paths that differ only in a parameter's name are one path (a document with both is
    invalid, and strict generators refuse it); each {name} in a path is a declared path parameter."""
    import re

    from onair.api_gateway.openapi import build_document
    document = build_document()
    shapes = [re.sub(r"\{[^}]+\}", "{}", path) for path in document["paths"]]
    assert len(shapes) == len(set(shapes)), sorted(shapes)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([^}]+)\}", path)), (method, path)
    control = document["paths"]["/api/v{version}/projects/{projectId}/livejobs/{id}"]
    assert set(control) == {"get", "post", "delete"}
    assert "{streamKey}" in next(p["description"] for p in control["post"]["parameters"] if p["name"] == "id")


async def test_a_project_gets_its_own_webhook_signing_key(client: Client,
                                                          aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    path = f"/api/v1/projects/{PROJECT}/webhooks/signingkey"
    response = await client.get(path, headers=await token(client))
    assert response.status == 200, await response.text()
    result = (await response.json())["result"]
    assert result["signingKey"] == derive_webhook_key(WEBHOOK_SECRET, NS) != derive_webhook_key(WEBHOOK_SECRET, "other")
    assert result["header"] == "Onair-Signature"
    # A key that signs events is a writer's: a read-only token is refused, and so is another project.
    assert (await client.get(path, headers=await token(client, "read-key-0123456789"))).status == 403
    other = f"/api/v1/projects/{uuid.uuid4()}/webhooks/signingkey"
    assert (await client.get(other, headers=await token(client))).status == 403
    unsigned = await aiohttp_client(init_app(GatewayConfig(jwt_secret=SECRET, stream_key_seed=SEED, watch=False,
                                                           api_keys=parse_api_keys([{"name": "w",
                                                                                     "key": "write-key-0123456789",
                                                                                     "projects": [PROJECT],
                                                                                     "role": "write"}])),
                                             kube=FakeKube(), store=make_store()))  # type: ignore[arg-type]
    missing = await unsigned.get(path, headers=await token(unsigned))
    assert missing.status == 404 and "ONAIR_GATEWAY_WEBHOOK_SECRET" in (await missing.json())["errors"][0]


@pytest.mark.parametrize("value", [
    {"name": "Café Noir \u2028 </script>", "control": "\x00\x1f\t", "emoji": "📺", "empty": {}, "list": []},
    {"framerate": 29.97, "tiny": 1e-7, "huge": 1e16, "negative zero": -0.0, "big": 2**70, "flag": True, "none": None},
    [{"id": 1, "rows": [[1, "a"], {"nested": {"deeper": ["x", 2.5]}}]}],
])
def test_answers_are_encoded_as_json_dumps_would(value: Any) -> None:
    """The fast encoder writes what the standard library writes, compact and in UTF-8; only a float's
    exponent may be spelled otherwise (1e-7 for 1e-07), the same number."""
    from onair.api_gateway.errors import encode_json
    encoded, standard = encode_json(value), json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(encoded) == value and encoded.decode().replace("e-7", "e-07") == standard.decode()


def test_text_that_is_not_utf8_fails_to_encode_as_the_error_middleware_expects() -> None:
    from onair.api_gateway.errors import encode_json
    with pytest.raises(UnicodeEncodeError):
        encode_json({"errors": ["path: bad byte \udcff"]})


async def test_a_live_job_ref_guid_matches_in_any_case(client: Client, kube: FakeKube) -> None:
    """Job names are lower case; a console may send a GUID in upper case, as the paths take it."""
    name = "4c1d8932-837e-4000-8000-00000000000a"
    put_job(client, kube, live_job(name, 41, "2024-01-01T00:00:41Z"))
    created = await client.post(f"/api/v1/projects/{PROJECT}/recordjobs", headers=await token(client),
                                json={"source": {"liveJobRef": name.upper()}, "output": {"bucket": "media"}})
    body = await created.json()
    assert created.status == 201, body
    stored = kube.objects[f"/apis/onair.dev/v1alpha1/namespaces/{NS}/recordjobs/{body['result']['jobId']}"]
    assert stored["spec"]["source"]["liveJobRef"] == name


async def test_a_create_in_a_project_whose_namespace_is_being_deleted_is_a_conflict_not_a_503(
        client: Client, kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    create = kube.create

    async def terminating(path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if f"/namespaces/{NS}/" not in path:  # the gateway's own namespace is not being deleted
            return await create(path, body)
        raise ApiError(403, {"reason": "Forbidden", "message": f"unable to create new content in namespace {NS} "
                             "because it is being terminated", "details": {"causes": [
                                 {"reason": "NamespaceTerminating", "field": "metadata.namespace"}]}})

    monkeypatch.setattr(kube, "create", terminating)
    headers = await token(client)
    for path, body in ((f"/api/v1/projects/{PROJECT}/livejobs",
                        {"jobTemplateId": 7, "bucket": "media", "serverType": 0}),
                       (f"/api/v1/projects/{PROJECT}/recordjobs",
                        {"source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"}})):
        refused = await client.post(path, headers=headers, json=body)
        answer = await refused.json()
        assert refused.status == 409 and answer["errors"] == [
            "projectId: the project's namespace is being deleted; nothing new is made in it"], answer


async def test_a_template_id_two_templates_of_the_project_share_is_refused_as_the_operator_would(
        client: Client) -> None:
    """The operator runs no job whose template id is ambiguous (TemplateAmbiguous): no 201 for one."""
    store = client.app[STORE_KEY]
    for name in ("zeta", "alpha"):
        store.templates.upsert({"metadata": {"name": name, "namespace": NS, "resourceVersion": "9"},
                                "spec": {"id": 8, "name": name, "renditions": [
                                    {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 800000}]}})
    headers = await token(client)
    live = await client.post(f"/api/v1/projects/{PROJECT}/livejobs", headers=headers,
                             json={"jobTemplateId": 8, "bucket": "media", "serverType": 0})
    record = await client.post(f"/api/v1/projects/{PROJECT}/recordjobs", headers=headers, json={
        "source": {"streamUrl": "rtmp://origin.example.com/live/x"}, "output": {"bucket": "media"}, "jobTemplateId": 8})
    for refused in (live, record):
        body = await refused.json()
        expected = (f"jobTemplateId: 2 JobTemplates in {NS} have id 8 (alpha, zeta); "
                    "no job of it runs until only one has")
        assert refused.status == 400 and body["errors"] == [expected], body
    shown = await (await client.get(f"/api/v1/projects/{PROJECT}/jobtemplates/8", headers=headers)).json()
    assert shown["result"]["name"] == "alpha"  # the first by name, on every replica alike
    assert (await client.post(f"/api/v1/projects/{PROJECT}/livejobs", headers=headers,
                              json={"jobTemplateId": 7, "bucket": "media", "serverType": 0})).status == 201
