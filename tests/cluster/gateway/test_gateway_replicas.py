"""Two gateway replicas against the real API server (the chart runs two): a job created through one is
read through the other at once, before the other's watch has brought it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from fixed_secrets import STREAM_KEY_SEED
from gateway_support import JWT_SECRET, KEYS, Project, RunningGateway
from localplatform.platform import PlatformInfo

from onair.api_gateway.app import STORE_KEY, init_app
from onair.api_gateway.auth import parse_api_keys
from onair.api_gateway.cache import Store
from onair.api_gateway.config import GatewayConfig
from onair.kubeclient import Credentials, KubeClient

Client = TestClient[web.Request, web.Application]
CREATE = {"jobTemplateId": 7, "destination": "live/replicas", "bucket": "media", "serverType": 0}


async def test_a_job_created_through_one_replica_is_read_through_the_other_at_once(
        gateway: RunningGateway, project: Project, platform: PlatformInfo,
        aiohttp_client: Callable[..., Awaitable[Client]]) -> None:
    kube = KubeClient(Credentials.from_kubeconfig(platform.kubeconfig), field_manager="onair-gateway")
    try:
        # Replica B: listed once, its watch not running, so it has not seen what A creates below.
        store = Store("onair-system", STREAM_KEY_SEED)
        for cache in store.core_caches:
            page = await kube.list(cache.path, **({"labelSelector": cache.label_selector}
                                                  if cache.label_selector else {}))
            cache.replace(page["items"], str(page["metadata"].get("resourceVersion", "")))
        config = GatewayConfig(jwt_secret=JWT_SECRET, stream_key_seed=STREAM_KEY_SEED, watch=False,
                               api_keys=parse_api_keys(list(KEYS.values())))
        other = await aiohttp_client(init_app(config, kube=kube, store=store))
        headers = await asyncio.to_thread(gateway.headers)

        async with aiohttp.ClientSession(headers=headers) as replica_a:  # the gateway process
            async with replica_a.post(project.url(gateway, "/livejobs"), json=CREATE) as created:
                assert created.status == 201, await created.text()
                job = (await created.json())["result"]
            async with replica_a.post(project.url(gateway, "/recordjobs"), json={
                    "source": {"liveJobRef": job["name"]}, "output": {"bucket": "media", "path": "clips/b"}}) as clip:
                assert clip.status == 201, await clip.text()
                record = (await clip.json())["result"]
        assert (project.namespace, job["name"]) not in store.livejobs.objects  # B has not seen it

        for ident in (job["name"], job["name"].upper(), str(job["id"])):
            got = await other.get(f"{project.base}/livejobs/{ident}", headers=headers)
            body = await got.json()
            assert got.status == 200, body
            assert (body["result"]["name"], body["result"]["key"], body["result"]["bucket"]) == (
                job["name"], job["key"], "media")
        for ident in (record["jobId"], str(record["id"])):
            got = await other.get(f"{project.base}/recordjobs/{ident}", headers=headers)
            assert got.status == 200, await got.text()
            assert (await got.json())["result"]["streamInput"]["liveJobName"] == job["name"]
        # Cached now: B's list shows the job without its watch.
        listed = await (await other.get(f"{project.base}/livejobs", headers=headers)).json()
        assert job["name"] in [row["name"] for row in listed["result"]]
        assert other.app[STORE_KEY].livejobs.get(project.namespace, job["name"]) is not None

        # A job neither replica has is a 404 in the envelope, not a 500.
        missing = await other.get(f"{project.base}/livejobs/{uuid.uuid4()}", headers=headers)
        body = await missing.json()
        assert missing.status == 404 and body["success"] is False and body["errors"][0].startswith("id: live job")
        assert (await other.get(f"{project.base}/recordjobs/{2**29}", headers=headers)).status == 404
    finally:
        await kube.close()
