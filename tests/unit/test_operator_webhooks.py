import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from onair.addresses import is_public
from onair.kubeclient import ApiError
from onair.operator import controller as controller_module
from onair.operator.config import OperatorConfig
from onair.operator.controller import Controller, merge_patch
from onair.operator.webhooks import (
    MAX_WAITING_PER_JOB,
    SIGNATURE_HEADER,
    DeliveryResult,
    WebhookSender,
    build_payload,
    event_name,
    pending_webhook,
    refused_target,
    sign,
    verify,
)
from onair.phases import LiveJobPhase, RecordJobPhase
from onair.streamkeys import derive_webhook_key


def test_signature_verifies_and_detects_tampering_and_replay() -> None:
    body = b'{"event":"live"}'
    now = int(time.time())
    header = sign("s3cret", body, now)
    assert header.startswith(f"t={now},v1=")
    assert verify("s3cret", body, header)
    assert not verify("other", body, header)
    assert not verify("s3cret", body + b" ", header)
    assert not verify("s3cret", body, sign("s3cret", body, now - 3600))
    assert not verify("s3cret", body, "garbage")


def test_events_named_as_the_issue_lists_them() -> None:
    assert event_name(LiveJobPhase.PROVISIONING, LiveJobPhase.WAITING_FOR_INPUT) == "started"
    assert event_name(LiveJobPhase.WAITING_FOR_INPUT, LiveJobPhase.LIVE) == "live"
    assert event_name(LiveJobPhase.LIVE, LiveJobPhase.RECONNECTING) == "disconnected"
    assert event_name(LiveJobPhase.STOPPING, LiveJobPhase.OFFLINE) == "stopped"
    assert event_name(None, LiveJobPhase.PROVISIONING) is None
    assert event_name(RecordJobPhase.INITIAL, RecordJobPhase.STARTED) == "record_started"
    assert event_name(RecordJobPhase.PAUSED, RecordJobPhase.STARTED) == "resumed"
    assert event_name(RecordJobPhase.STARTED, RecordJobPhase.PAUSED) == "paused"
    assert event_name(RecordJobPhase.STARTED, RecordJobPhase.COMPLETED) == "completed"


def test_payload_names_the_job() -> None:
    job = {"kind": "LiveJob", "metadata": {"name": "n", "namespace": "ns", "uid": "u",
                                             "labels": {"onair.dev/project-id": "p"}}}
    pending = pending_webhook("live", "Live", "input connected", datetime(2026, 12, 4, 21, 0, 0, 123456, UTC))
    assert pending["createdAt"] == "2026-12-04T21:00:00Z"
    payload = build_payload(job, pending)
    assert payload["type"] == "livejob.live" and payload["id"] == pending["id"]
    assert payload["createdAt"] == "2026-12-04T21:00:00Z" and payload["message"] == "input connected"
    assert payload["job"] == {"kind": "LiveJob", "namespace": "ns", "name": "n", "uid": "u", "projectId": "p",
                              "phase": "Live"}


def test_merge_patch_removes_and_replaces() -> None:
    old = {"phase": "Live", "urls": {"a": 1, "b": 2}, "outputs": [1, 2], "gone": True}
    new = {"phase": "Live", "urls": {"a": 1, "c": 3}, "outputs": [1]}
    assert merge_patch(old, new) == {"urls": {"b": None, "c": 3}, "outputs": [1], "gone": None}
    assert merge_patch(old, old) == {}


def test_private_and_metadata_addresses_are_not_public() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.10", "169.254.169.254", "::1", "::ffff:127.0.0.1",
                    "fd00::1", "0.0.0.0", "224.0.0.1"):
        assert not is_public(address), address
    # IPv6 that a NAT64 gateway, a 6to4 relay or a dual stack takes to a private IPv4 address.
    for address in ("64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "2002:a00:1::", "::a00:1", "64:ff9b:1::a00:1",
                    "::ffff:0:a00:1", "::ffff:0:7f00:1"):
        assert not is_public(address), address
    assert refused_target("http://[64:ff9b::a9fe:a9fe]/latest/meta-data", allow_private=False)
    assert is_public("93.184.216.34") and is_public("2606:4700::1111")
    assert is_public("64:ff9b::5db8:d822") and is_public("2002:5db8:d822::")  # 93.184.216.34 wrapped
    assert refused_target("http://169.254.169.254/latest/meta-data", allow_private=False)
    assert refused_target("http://[::1]:8080/hook", allow_private=False)
    # Loopback in the forms inet_aton reads, which some HTTP clients connect to without resolving them.
    for loopback in ("2130706433", "127.1", "017700000001", "0x7f.1"):
        assert refused_target(f"http://{loopback}:8080/hook", allow_private=False), loopback
    assert refused_target("http://169.254.169.254/x", allow_private=True) is None
    assert refused_target("https://hooks.example.com/x", allow_private=False) is None  # checked once resolved


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[int, list[tuple[bytes, str]]]]:
    """A webhook receiver on 127.0.0.1: its port, and the (body, signature header) of each request."""
    received: list[tuple[bytes, str]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1], received  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def deliver(sender: WebhookSender, url: str, namespace: str = "news",
                  messages: list[str] | None = None) -> tuple[DeliveryResult, list[str]]:
    """One delivery of a "live" event; returns its result and the Event reasons it reported (and their
    messages into `messages`)."""
    reasons: list[str] = []

    async def report(event_type: str, reason: str, message: str) -> None:
        reasons.append(reason)
        if messages is not None:
            messages.append(message)

    job = {"kind": "LiveJob", "metadata": {"name": "n", "namespace": namespace, "uid": "u"}}
    payload = build_payload(job, pending_webhook("live", "Live", "", datetime.now(UTC)))
    try:
        return await sender.deliver(url, payload, report), reasons
    finally:
        await sender.close()


async def test_a_jobs_webhooks_go_in_order_and_a_dead_receiver_holds_a_bounded_backlog() -> None:
    """A flapping job whose receiver is down: its newest events wait (as many as its status keeps),
    older waiting ones are dropped, and stopping the operator cancels what is left cleanly."""
    release = asyncio.Event()
    delivered: list[str] = []

    async def slow(url: str, payload: dict[str, Any], report: Any) -> DeliveryResult:
        await release.wait()
        delivered.append(payload["id"])
        return DeliveryResult(True, 1, "")

    async def report(event_type: str, reason: str, message: str) -> None:
        pass

    job = {"kind": "LiveJob", "metadata": {"name": "n", "namespace": "news", "uid": "u"}}
    sender = WebhookSender("s", attempts=1, timeout=1)
    sender.deliver = slow  # type: ignore[method-assign]
    payloads = [build_payload(job, pending_webhook("live", "Live", "", datetime.now(UTC))) for _ in range(1000)]
    results = [sender.send("http://receiver.example/", payloads[0], report)]
    await asyncio.sleep(0)  # in flight
    results += [sender.send("http://receiver.example/", payload, report) for payload in payloads[1:]]
    dropped = [result for result in results if result.done()]
    assert len(dropped) == 1000 - 1 - MAX_WAITING_PER_JOB  # one in flight, twenty waiting
    assert not any(result.result().delivered for result in dropped)
    release.set()
    await asyncio.gather(*results)
    assert delivered == [payload["id"] for payload in [payloads[0], *payloads[-MAX_WAITING_PER_JOB:]]]

    release.clear()
    results = [sender.send("http://receiver.example/", payloads[0], report)]
    await asyncio.sleep(0)
    results += [sender.send("http://receiver.example/", payload, report) for payload in payloads[1:]]
    await sender.cancel_queued()  # stood by: the acting replica sends them (a chain of a thousand was a RecursionError)
    assert all(result.done() for result in results)
    assert sum(result.cancelled() for result in results) == 1 + MAX_WAITING_PER_JOB  # the next operator sends them
    release.set()  # acting again, it delivers
    assert (await sender.send("http://receiver.example/", payloads[0], report)).delivered
    # Cancelled before its worker ever ran, a job's queue does not keep it: later deliveries go.
    sender.send("http://receiver.example/", payloads[1], report)
    await sender.cancel_queued()
    assert (await asyncio.wait_for(sender.send("http://receiver.example/", payloads[2], report), 5)).delivered
    await sender.close()


def test_no_webhook_is_sent_unsigned_by_an_operator_without_a_secret() -> None:
    async def run() -> None:
        async with receiver() as (port, received):
            sender = WebhookSender("", attempts=1, timeout=2, allow_private=True)
            result, reasons = await deliver(sender, f"http://127.0.0.1:{port}/hook")
            assert not result.delivered and reasons == ["WebhookRefused"] and received == []
            assert "ONAIR_WEBHOOK_SECRET" in result.last_error
    asyncio.run(run())


def test_a_webhook_to_a_private_address_is_refused_unless_allowed() -> None:
    async def scenario(allow_private: bool) -> tuple[DeliveryResult, int, list[str]]:
        async with receiver() as (port, received):
            sender = WebhookSender("s", attempts=2, timeout=2, base_delay=0.01, allow_private=allow_private)
            # A name that resolves to loopback, as a job's author could point callbackUrl at the cluster.
            result, reasons = await deliver(sender, f"http://localhost:{port}/hook")
            return result, len(received), reasons

    refused, hits, reasons = asyncio.run(scenario(allow_private=False))
    assert not refused.delivered and hits == 0 and reasons == ["WebhookRefused"]
    delivered, hits, reasons = asyncio.run(scenario(allow_private=True))
    assert delivered.delivered and hits == 1 and reasons == ["WebhookDelivered"]


def test_the_events_of_a_webhook_name_its_url_without_the_credentials_it_carries() -> None:
    """Events are read by whoever may list a namespace's Events, not only the job's author: a receiver's
    user:password or token in the query stays out of them."""
    async def run() -> None:
        async with receiver() as (port, received):
            sender = WebhookSender("s", attempts=1, timeout=2, allow_private=True)
            messages: list[str] = []
            url = f"http://hook:s3cret@127.0.0.1:{port}/hook?token=t0ken"
            result, reasons = await deliver(sender, url, messages=messages)
            assert result.delivered and len(received) == 1 and reasons == ["WebhookDelivered"]
            refusing = WebhookSender("s", attempts=2, timeout=2, base_delay=0.01, allow_private=True)
            result, reasons = await deliver(refusing, f"http://hook:s3cret@127.0.0.1:{port}/missing?token=t0ken",
                                            messages=messages)
            assert not result.delivered and reasons == ["WebhookFailed"]
            assert all(f"http://127.0.0.1:{port}/" in message for message in messages), messages
            assert not any("s3cret" in text or "t0ken" in text for text in [*messages, result.last_error]), messages
    asyncio.run(run())


def test_a_redirecting_receiver_is_not_followed() -> None:
    """A public receiver answering 307 to a private address would otherwise get the signed POST
    there: the next hop is never checked (an IP literal never reaches the resolver)."""
    async def scenario() -> tuple[DeliveryResult, list[str], int]:
        internal: list[str] = []

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect("/internal")

        async def record(request: web.Request) -> web.Response:
            internal.append(request.method)
            return web.Response()

        app = web.Application()
        app.router.add_post("/hook", redirect)
        app.router.add_route("*", "/internal", record)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            sender = WebhookSender("s", attempts=3, timeout=2, base_delay=0.01, allow_private=True)
            result, reasons = await deliver(sender, f"http://127.0.0.1:{port}/hook")
        finally:
            await runner.cleanup()
        return result, reasons, len(internal)

    result, reasons, internal_hits = asyncio.run(scenario())
    assert not result.delivered and internal_hits == 0 and reasons == ["WebhookFailed"]
    assert result.attempts == 1 and "redirect" in result.last_error


def test_each_project_has_its_own_signing_key() -> None:
    """A receiver of one project cannot forge (or accept) another project's events."""

    async def scenario() -> tuple[bytes, str]:
        async with receiver() as (port, received):
            sender = WebhookSender("installation-secret", attempts=1, timeout=2, allow_private=True)
            result, _ = await deliver(sender, f"http://127.0.0.1:{port}/hook", namespace="news")
            assert result.delivered
            return received[0]

    body, header = asyncio.run(scenario())
    assert verify(derive_webhook_key("installation-secret", "news"), body, header)
    assert not verify(derive_webhook_key("installation-secret", "sport"), body, header)
    assert not verify("installation-secret", body, header)  # the installation's secret itself signs nothing


class StatusStore:
    """The API server as _forget_webhook uses it: the job, and a JSON patch that fails first."""

    def __init__(self, job: dict[str, Any], failure: BaseException) -> None:
        self.job = job
        self.failure: BaseException | None = failure
        self.patches = 0

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.job)

    async def json_patch(self, path: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        self.patches += 1
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        assert operations[0] == {"op": "test", "path": "/status/pendingWebhooks",
                                 "value": self.job["status"]["pendingWebhooks"]}
        self.job["status"].pop("pendingWebhooks")
        return self.job


@pytest.mark.parametrize("failure", [ApiError(503, {"reason": "ServiceUnavailable"}), ConnectionResetError("reset")],
                         ids=["503", "connection-reset"])
async def test_a_delivered_webhook_leaves_the_status_after_the_api_server_failed_once(
        failure: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(controller_module, "FORGET_WEBHOOK_FIRST_DELAY_SECONDS", 0.01)
    entry = pending_webhook("live", "Live", "input connected", datetime.now(UTC))
    job = {"kind": "LiveJob", "metadata": {"name": "news", "namespace": "t", "uid": "u1", "resourceVersion": "7"},
           "spec": {"callbackUrl": "https://hooks.example.com/x"}, "status": {"phase": "Live",
                                                                             "pendingWebhooks": [entry]}}
    store = StatusStore(copy.deepcopy(job), failure)
    controller = Controller(store, OperatorConfig(stream_key_seed="unit-test-stream-key-seed-0123456789"))  # type: ignore[arg-type]
    await controller._forget_webhook(("LiveJob", "t", "news"), "u1", entry["id"])
    assert store.patches == 2 and "pendingWebhooks" not in store.job["status"]
