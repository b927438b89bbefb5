"""The kopf handlers: wiring only. They are thin: they hand watch events to the controller, which
decides and writes (see controller.py). Importing this module registers them (main.py does)."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from prometheus_client import start_http_server

from onair.kubeclient import Credentials, KubeClient
from onair.models import GROUP, VERSION
from onair.operator import kopf_fixes, metrics
from onair.operator.builders import MANAGED_BY_SELECTOR
from onair.operator.config import OperatorConfig
from onair.operator.controller import Controller
from onair.operator.leadership import Leadership

FINALIZER = "onair.dev/finalizer"
ANNOTATION_PREFIX = "onair.dev"


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = OperatorConfig.from_env()
    # Our own names on everything kopf may write, so nothing collides with another kopf operator.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf_fixes.diffbase_storage(ANNOTATION_PREFIX, "last-handled-configuration")
    # Watches end on the server side before any proxy cuts them, and kopf reconnects.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # kopf keeps one worker per object until it has been idle for idle_timeout: at most worker_limit /
    # idle_timeout objects a second get their events through (64 / 5 s by default: 13 jobs a second in
    # a burst). Our handlers only hand the event to the controller's queue, so a worker may go at once.
    settings.queueing.worker_limit = 256
    settings.queueing.idle_timeout = 0.1
    # Only our Pods (and Services) come over the wire: kopf's handler filter alone would still receive
    # (and keep per-object state for) every Pod of the cluster.
    settings.watching.label_selectors["v1", "pods"] = MANAGED_BY_SELECTOR
    settings.watching.label_selectors["v1", "services"] = MANAGED_BY_SELECTOR
    settings.posting.level = logging.WARNING
    settings.peering.name = config.peering_name
    settings.peering.standalone = config.standalone
    settings.peering.priority = config.peering_priority
    settings.peering.lifetime = config.peering_lifetime_seconds
    settings.peering.mandatory = not config.standalone
    settings.networking.request_timeout = 60

    kube = KubeClient(Credentials.discover(), connections=config.api_connections, field_manager="onair-operator")
    # POD_ID is kopf's name for this replica in the peering objects (main.py sets it when the chart did not).
    leadership = Leadership(kube, standalone=config.standalone, peering_name=config.peering_name,
                            priority=config.peering_priority, own_id=os.environ.get("POD_ID", ""))
    controller = Controller(kube, config, leadership=leadership)
    metrics.REGISTRY.register(metrics.JobsByPhase(controller.phase_counts))
    metrics.QUEUE_DEPTH.set_function(controller.queue_depth)
    start_http_server(config.metrics_port, addr=config.listen_host, registry=metrics.REGISTRY)
    await controller.sync_caches()
    controller.start()
    memo.controller = controller
    memo.kube = kube
    logging.getLogger("onair.operator").info(
        "onair operator started: %d workers, metrics on :%d", config.workers, config.metrics_port)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.stop()
    await memo.kube.close()


@kopf.on.event(GROUP, VERSION, "livejobs")
async def livejob_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_job_event("LiveJob", event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, "recordjobs")
async def recordjob_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_job_event("RecordJob", event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, "jobtemplates")
async def jobtemplate_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_template_event(event.get("type"), event["object"])


@kopf.on.event("", "v1", "pods")  # only ours arrive: see the label selector in start()
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_pod_event(event.get("type"), event["object"])


async def service_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.on_service_event(event.get("type"), event["object"])


def watch_ingest_services() -> None:
    """Registers the watch of the jobs' ingest Services, which only NodePort and LoadBalancer Services
    need (their node ports and addresses go into the ingest URLs): with ClusterIP the operator neither
    watches them nor may (the chart grants list and watch of Services only then)."""
    kopf.on.event("", "v1", "services")(service_event)


@kopf.on.probe(id="queueDepth")
async def queue_depth(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.controller.queue)
