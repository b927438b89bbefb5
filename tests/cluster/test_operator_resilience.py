"""The operator survives restarts and kills without duplicating Pods, and delivers signed webhooks
with retries. Each test runs its own operator (namespaces r-*), since it stops or kills it."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cluster.conftest import (
    KWOK_PLACEMENT,
    RunningOperator,
    chart_operator_identity,
    own_job_namespace,
    start_operator,
    stop_operator,
)
from cluster.test_operator_lifecycle import live_job_manifest
from kubernetes import client
from localplatform.platform import PlatformInfo
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from onair.operator.webhooks import SIGNATURE_HEADER, verify
from onair.streamkeys import derive_webhook_key

WATCH = json.dumps(["r-*"])


@pytest.fixture
def resilience_namespace(kube: client.ApiClient, platform: PlatformInfo, crds: None,
                         operator_namespace: str) -> Iterator[str]:
    with own_job_namespace(kube, platform, "r") as name:
        yield name


def own_operator(platform: PlatformInfo, run_root: Path, name: str) -> RunningOperator:
    return start_operator(platform, run_root / name, name=name, ONAIR_WATCH_NAMESPACES=WATCH, **KWOK_PLACEMENT)


def create_jobs(kube: client.ApiClient, namespace: str, names: list[str]) -> None:
    api = client.CustomObjectsApi(kube)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: api.create_namespaced_custom_object(
            "onair.dev", "v1alpha1", namespace, "livejobs", live_job_manifest(n)), names))


def phases(kube: client.ApiClient, namespace: str) -> Counter[str]:
    jobs = client.CustomObjectsApi(kube).list_namespaced_custom_object("onair.dev", "v1alpha1", namespace, "livejobs")
    return Counter((j.get("status") or {}).get("phase", "None") for j in jobs["items"])


def pods_by_job(kube: client.ApiClient, namespace: str) -> Counter[str]:
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector="onair.dev/role=encoder").items
    return Counter(p.metadata.labels["onair.dev/job"] for p in pods)


def live_job_reader(kube: client.ApiClient, namespace: str, name: str) -> Callable[[], dict[str, Any]]:
    api = client.CustomObjectsApi(kube)
    return lambda: api.get_namespaced_custom_object("onair.dev", "v1alpha1", namespace, "livejobs", name)


def test_a_node_port_ingest_url_names_the_services_node_port_also_after_a_restart(
        kube: client.ApiClient, platform: PlatformInfo, kubectl: Callable[..., Any], run_root: Path,
        resilience_namespace: str) -> None:
    job = live_job_reader(kube, resilience_namespace, "np")
    # As the chart deploys it: the operator reads the Services its RBAC lets it read.
    with chart_operator_identity(platform, kubectl, run_root / "nodeport", resilience_namespace,
                                 **{"ingest.serviceType": "NodePort"}) as identity:
        public = {"ONAIR_SERVICE_TYPE": "NodePort", "ONAIR_INGEST_ADDRESS": "service",
                  "ONAIR_INGEST_HOST": "ingest.example.net", **identity, **KWOK_PLACEMENT}
        first = start_operator(platform, run_root / "nodeport-a", name="nodeport-a", **public)
        try:
            create_jobs(kube, resilience_namespace, ["np"])
            status = wait_until(lambda: (s := job().get("status") or {}).get("phase") == "WaitingForInput" and s,
                                60, "the job waiting for input")
            service = client.CoreV1Api(kube).read_namespaced_service(status["serviceName"], resilience_namespace)
            node_port = next(p.node_port for p in service.spec.ports if p.name == "rtmp")
            expected = f"rtmp://ingest.example.net:{node_port}/live/"
            wait_until(lambda: job()["status"]["urls"]["ingest"] == expected, 10, f"the ingest URL {expected}")
        finally:
            stop_operator(first)
        second = start_operator(platform, run_root / "nodeport-b", name="nodeport-b", **public)
        try:
            # A spec change makes the new operator write the status again: with the node port it read back.
            client.CustomObjectsApi(kube).patch_namespaced_custom_object(
                "onair.dev", "v1alpha1", resilience_namespace, "livejobs", "np",
                {"spec": {"description": "after a restart"}})
            wait_until(lambda: job()["status"].get("observedGeneration") == 2, 30, "the new generation reconciled")
            assert job()["status"]["urls"]["ingest"] == expected
        finally:
            stop_operator(second)


def test_a_load_balancer_ingest_url_names_the_address_the_cloud_gives_it(
        kube: client.ApiClient, platform: PlatformInfo, kubectl: Callable[..., Any], run_root: Path,
        resilience_namespace: str) -> None:
    job = live_job_reader(kube, resilience_namespace, "lb")
    with chart_operator_identity(platform, kubectl, run_root / "loadbalancer", resilience_namespace,
                                 **{"ingest.serviceType": "LoadBalancer"}) as identity:
        operator = start_operator(platform, run_root / "loadbalancer", name="loadbalancer",
                                  ONAIR_SERVICE_TYPE="LoadBalancer", ONAIR_INGEST_ADDRESS="service",
                                  **identity, **KWOK_PLACEMENT)
        try:
            create_jobs(kube, resilience_namespace, ["lb"])
            status = wait_until(lambda: (s := job().get("status") or {}).get("phase") == "WaitingForInput" and s,
                                60, "the job waiting for input")
            service = status["serviceName"]
            assert status["urls"]["ingest"] == f"rtmp://{service}.{resilience_namespace}.svc:1935/live/", \
                "before the load balancer has an address, the name that works inside the cluster"
            # What a cloud's service controller writes once the job's load balancer is up.
            client.CoreV1Api(kube).patch_namespaced_service_status(
                service, resilience_namespace, {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}})
            expected = "rtmp://203.0.113.7:1935/live/"
            wait_until(lambda: job()["status"]["urls"]["ingest"] == expected, 10, f"the ingest URL {expected}")
            assert job()["status"]["urls"]["rtmpServer"] == expected
        finally:
            stop_operator(operator)


def test_restart_keeps_the_same_pods(kube: client.ApiClient, platform: PlatformInfo, run_root: Path,
                                     resilience_namespace: str) -> None:
    names = [f"keep-{i}" for i in range(5)]
    first = own_operator(platform, run_root, "restart-a")
    try:
        create_jobs(kube, resilience_namespace, names)
        wait_until(lambda: phases(kube, resilience_namespace)["WaitingForInput"] == 5, 60, "5 jobs waiting")
        before = {p.metadata.name for p in client.CoreV1Api(kube).list_namespaced_pod(resilience_namespace).items}
    finally:
        stop_operator(first)
    second = own_operator(platform, run_root, "restart-b")
    try:
        # The new operator has seen and reconciled every job once it reports reconciles and an empty queue.
        def settled() -> bool:
            samples = {(s.name, s.labels.get("result")): s.value
                       for family in text_string_to_metric_families(urlread(second.metrics_url))
                       for s in family.samples}
            reconciled = samples.get(("onair_operator_reconciles_total", "ok"), 0) >= 5
            return reconciled and samples.get(("onair_operator_queue_depth", None)) == 0

        wait_until(settled, 30, "the restarted operator to reconcile")
        after = {p.metadata.name for p in client.CoreV1Api(kube).list_namespaced_pod(resilience_namespace).items}
        assert after == before
        assert phases(kube, resilience_namespace) == Counter({"WaitingForInput": 5})
    finally:
        stop_operator(second)


def test_sigkill_during_a_burst_leaves_one_pod_per_job(kube: client.ApiClient, platform: PlatformInfo,
                                                      run_root: Path, resilience_namespace: str) -> None:
    names = [f"burst-{i:03d}" for i in range(200)]
    victim = own_operator(platform, run_root, "burst-a")
    creator = threading.Thread(target=create_jobs, args=(kube, resilience_namespace, names))
    creator.start()
    wait_until(lambda: sum(pods_by_job(kube, resilience_namespace).values()) >= 40, 120,
               "the operator to be creating Pods")
    pid = victim.process.running_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    creator.join()
    survivor = own_operator(platform, run_root, "burst-b")
    try:
        wait_until(lambda: phases(kube, resilience_namespace)["WaitingForInput"] == 200, 240,
                   "all 200 jobs waiting for input", interval=1)
        per_job = pods_by_job(kube, resilience_namespace)
        assert set(per_job) == set(names)
        assert set(per_job.values()) == {1}
    finally:
        stop_operator(survivor)


class WebhookReceiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    failures_left = 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        namespace = json.loads(body).get("job", {}).get("namespace", "")
        # Each project's webhooks are signed with its own key (what GET …/webhooks/signingkey gives it).
        verified = verify(derive_webhook_key("test-webhook-secret", namespace), body,
                          self.headers.get(SIGNATURE_HEADER, ""))
        if WebhookReceiver.failures_left > 0:
            WebhookReceiver.failures_left -= 1
            self.send_response(500)
        else:
            WebhookReceiver.received.append({"verified": verified, **json.loads(body)})
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_is_signed_and_retried_after_500(kube: client.ApiClient, platform: PlatformInfo, run_root: Path,
                                                 resilience_namespace: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    operator = own_operator(platform, run_root, "webhooks")
    try:
        manifest = live_job_manifest("hooked")
        manifest["spec"]["callbackUrl"] = url
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            "onair.dev", "v1alpha1", resilience_namespace, "livejobs", manifest)
        delivered = wait_until(lambda: [r for r in WebhookReceiver.received if r["event"] == "started"], 30,
                               "the 'started' webhook after one 500")
        assert delivered[0]["verified"] is True
        assert delivered[0]["job"]["name"] == "hooked" and delivered[0]["job"]["phase"] == "WaitingForInput"

        def event_reasons() -> set[str]:
            events = client.CoreV1Api(kube).list_namespaced_event(resilience_namespace).items
            return {e.reason for e in events if e.involved_object.name == "hooked"}

        reasons = wait_until(lambda: (r := event_reasons()) >= {"WebhookRetrying", "WebhookDelivered"} and r, 10,
                             "the delivery attempts as Events")
        assert "WebhookRetrying" in reasons
    finally:
        stop_operator(operator)
        server.shutdown()


class ReceiverDownThenUp(http.server.BaseHTTPRequestHandler):
    """Answers 503 until `up`, then takes every webhook."""

    up = False
    attempts = 0
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ReceiverDownThenUp.attempts += 1
        if ReceiverDownThenUp.up:
            ReceiverDownThenUp.received.append(body)
        self.send_response(204 if ReceiverDownThenUp.up else 503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_the_operator_stopped_before_delivering_is_delivered_by_the_next_one(
        kube: client.ApiClient, platform: PlatformInfo, run_root: Path, resilience_namespace: str) -> None:
    """A rolling update (or a crash) while the receiver is down: the event is in the job's status with
    its phase, and the next operator delivers it, with the same id, once."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ReceiverDownThenUp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    job = live_job_reader(kube, resilience_namespace, "owed")

    def pending() -> list[dict[str, Any]]:
        return list((job().get("status") or {}).get("pendingWebhooks") or [])

    first = own_operator(platform, run_root, "webhooks-first")
    try:
        manifest = live_job_manifest("owed")
        manifest["spec"]["callbackUrl"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            "onair.dev", "v1alpha1", resilience_namespace, "livejobs", manifest)
        owed = wait_until(lambda: [entry for entry in pending() if entry["event"] == "started"], 30,
                          "the 'started' webhook in the job's status")
        wait_until(lambda: ReceiverDownThenUp.attempts > 0, 15, "a delivery attempt the receiver refuses")
    finally:
        stop_operator(first)
    assert [entry["id"] for entry in pending()] == [entry["id"] for entry in owed]
    ReceiverDownThenUp.up = True
    second = own_operator(platform, run_root, "webhooks-second")
    try:
        wait_until(lambda: not pending(), 30, "the delivered webhook to leave the status")
        started = [body for body in ReceiverDownThenUp.received if body["event"] == "started"]
        assert [body["id"] for body in started] == [owed[0]["id"]]
        assert started[0]["createdAt"] == owed[0]["createdAt"] and started[0]["job"]["phase"] == "WaitingForInput"
    finally:
        stop_operator(second)
        server.shutdown()


def urlread(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
