"""Signed webhooks: a JSON POST per job event, signed like Livepeer's and Mux's
(`Onair-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`) with the job's project's own
key (streamkeys.derive_webhook_key), retried with exponential back-off on 5xx, 429, time-outs and
connection errors, delivered in order per job."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from onair.addresses import NotPublicError, is_public, literal_address
from onair.models import PendingWebhook
from onair.phases import LiveJobPhase, RecordJobPhase
from onair.streamkeys import WEBHOOK_SIGNATURE_HEADER, derive_webhook_key
from onair.urls import shown_url

log = logging.getLogger(__name__)

SIGNATURE_HEADER = WEBHOOK_SIGNATURE_HEADER

# The event a phase change announces, as the issue lists them.
LIVE_JOB_EVENTS: dict[LiveJobPhase, str] = {
    LiveJobPhase.WAITING_FOR_INPUT: "started",
    LiveJobPhase.LIVE: "live",
    LiveJobPhase.RECONNECTING: "disconnected",
    LiveJobPhase.OFFLINE: "stopped",
    LiveJobPhase.COMPLETED: "stopped",
    LiveJobPhase.FAILED: "failed",
}
RECORD_JOB_EVENTS: dict[RecordJobPhase, str] = {
    RecordJobPhase.STARTED: "record_started",
    RecordJobPhase.PAUSED: "paused",
    RecordJobPhase.COMPLETED: "completed",
    RecordJobPhase.FAILED: "failed",
}


def event_name(previous: LiveJobPhase | RecordJobPhase | None, phase: LiveJobPhase | RecordJobPhase,
               recorded_before: bool = True) -> str | None:
    """`recorded_before`: whether the RecordJob has recorded (been Started) before; one created paused
    that is resumed for the first time starts recording, it does not resume."""
    if isinstance(phase, RecordJobPhase):
        if phase == RecordJobPhase.STARTED and previous == RecordJobPhase.PAUSED and recorded_before:
            return "resumed"
        return RECORD_JOB_EVENTS.get(phase)
    return LIVE_JOB_EVENTS.get(phase)


def events_announced(previous: LiveJobPhase | RecordJobPhase | None,
                     phases: list[LiveJobPhase] | list[RecordJobPhase] | list[LiveJobPhase | RecordJobPhase],
                     recorded_before: bool) -> list[tuple[str, LiveJobPhase | RecordJobPhase]]:
    """The events (with the phase of each) that passing from `previous` through `phases` announces."""
    events = []
    for phase in phases:
        event = event_name(previous, phase, recorded_before)
        previous = phase
        if event:
            events.append((event, phase))
    return events


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance_seconds: int = 300, now: float | None = None) -> bool:
    """What a receiver does: check the HMAC and that the timestamp is recent (replay protection)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp, signature = int(parts["t"]), parts["v1"]
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, body, timestamp).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, signature)


def pending_webhook(event: str, phase: str, message: str, now: datetime, webhook_id: str | None = None
                    ) -> dict[str, Any]:
    """The status entry (pendingWebhooks) of an event a phase change owes, with the id every delivery of it
    carries (a new one unless given)."""
    entry = PendingWebhook(id=webhook_id or str(uuid.uuid4()), event=event, phase=phase, message=message or None,
                           created_at=now.replace(microsecond=0))
    return entry.model_dump(mode="json", by_alias=True, exclude_none=True)


def deletion_webhook_id(uid: str) -> str:
    """The id of a job's `deleted` webhook: the same from any replica that announces it (one that takes
    over with an older view may announce it again), so that a receiver can drop the repeat."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"onair:deleted:{uid}"))


def build_payload(job: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
    """The body of the webhook a job's `pendingWebhooks` entry stands for."""
    metadata = job["metadata"]
    return {
        "id": pending["id"],
        "type": f"{job['kind'].lower()}.{pending['event']}",
        "event": pending["event"],
        "createdAt": pending["createdAt"],
        "job": {
            "kind": job["kind"],
            "namespace": metadata.get("namespace"),
            "name": metadata.get("name"),
            "uid": metadata.get("uid"),
            "projectId": (metadata.get("labels") or {}).get("onair.dev/project-id"),
            "phase": pending["phase"],
        },
        "message": pending.get("message") or "",
    }


class PublicAddressesOnly(AbstractResolver):
    """Resolves like aiohttp does, then keeps only public addresses: the check holds for the address
    actually connected to (no DNS rebinding between a check and the connection)."""

    def __init__(self) -> None:
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = [r for r in await self._resolver.resolve(host, port, family) if is_public(r["host"])]
        if not results:
            raise NotPublicError(f"{host} resolves to no public address (private targets are refused)")
        return results

    async def close(self) -> None:
        await self._resolver.close()


def refused_target(url: str, allow_private: bool) -> str | None:
    """Why a webhook URL is refused before any connection (an IP literal that is not public)."""
    if allow_private:
        return None
    host = urlsplit(url).hostname or ""
    address = literal_address(host)
    if address is None or is_public(address):
        return None  # a name: checked when it is resolved
    return f"{host} is not a public address (private targets are refused)"


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    last_error: str


Reporter = Callable[[str, str, str], Awaitable[None]]  # (event type, reason, message) -> Kubernetes Event


# A job's deliveries wait behind its earlier ones (in order); while its receiver is down, at most this
# many wait, as many as its status keeps pending: a newer one drops the oldest waiting.
MAX_WAITING_PER_JOB = 20


@dataclass(frozen=True)
class QueuedDelivery:
    url: str
    payload: dict[str, Any]
    report: Reporter
    result: asyncio.Future[DeliveryResult]


class WebhookSender:
    def __init__(self, secret: str, attempts: int, timeout: float, base_delay: float = 1.0,
                 max_delay: float = 300.0, allow_private: bool = False) -> None:
        self.secret = secret
        self.allow_private = allow_private
        self.attempts = attempts
        self.timeout = timeout
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._session: aiohttp.ClientSession | None = None
        self._waiting: dict[str, deque[QueuedDelivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    async def close(self) -> None:
        await self.cancel_queued()
        if self._session is not None:
            await self._session.close()

    async def cancel_queued(self) -> None:
        """Cancels what is queued and in flight (their results are cancelled: whichever operator acts
        next sends them from the jobs' pendingWebhooks)."""
        workers = list(self._workers.values())
        self._workers.clear()  # a worker cancelled before it ran never reaches its own cleanup
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for waiting in self._waiting.values():
            for queued in waiting:
                queued.result.cancel()
        self._waiting.clear()

    def send(self, url: str, payload: dict[str, Any], report: Reporter) -> asyncio.Future[DeliveryResult]:
        """Queue a delivery behind the earlier ones of the same job; returns its result."""
        key = str(payload["job"]["uid"])
        queued = QueuedDelivery(url, payload, report, asyncio.get_running_loop().create_future())
        waiting = self._waiting.setdefault(key, deque())
        waiting.append(queued)
        if len(waiting) > MAX_WAITING_PER_JOB:
            dropped = waiting.popleft()
            log.warning("webhook %s to %s dropped: %d newer events of the job wait behind it",
                        dropped.payload["type"], shown_url(dropped.url), MAX_WAITING_PER_JOB)
            dropped.result.set_result(DeliveryResult(False, 0, "dropped: too many newer events waiting"))
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._deliver_in_order(key))
        return queued.result

    async def _deliver_in_order(self, key: str) -> None:
        waiting = self._waiting.get(key, deque())
        try:
            while waiting:
                queued = waiting.popleft()
                try:
                    result = await self.deliver(queued.url, queued.payload, queued.report)
                except asyncio.CancelledError:
                    queued.result.cancel()
                    raise
                except Exception as error:  # a bug: the job's later deliveries still go
                    log.exception("webhook %s to %s failed", queued.payload["type"], shown_url(queued.url))
                    result = DeliveryResult(False, 0, f"{type(error).__name__}: {error}")
                if not queued.result.done():
                    queued.result.set_result(result)
        finally:
            if self._workers.get(key) is asyncio.current_task():
                del self._workers[key]
            if not waiting and self._waiting.get(key) is waiting:
                del self._waiting[key]

    async def deliver(self, url: str, payload: dict[str, Any], report: Reporter) -> DeliveryResult:
        if self._session is None:
            resolver = None if self.allow_private else PublicAddressesOnly()
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver))
        body = json.dumps(payload, separators=(",", ":")).encode()
        shown = shown_url(url)  # Events are readable by more than the job's owner: no credentials in them
        refused = refused_target(url, self.allow_private)
        if not self.secret:  # a key derived from nothing is anybody's: the receiver could be sent forgeries
            refused = "the operator has no webhook secret (ONAIR_WEBHOOK_SECRET) to sign it with"
        if refused is not None:
            await report("Warning", "WebhookRefused", f"{payload['type']} not sent to {shown}: {refused}")
            return DeliveryResult(False, 0, refused)
        error = ""
        key = derive_webhook_key(self.secret, str(payload["job"].get("namespace") or ""))
        for attempt in range(1, self.attempts + 1):
            headers = {"Content-Type": "application/json", "User-Agent": "onair-webhooks/1",
                       SIGNATURE_HEADER: sign(key, body, int(time.time())), "Onair-Event": payload["type"]}
            retryable = True
            try:
                # Redirects are not followed: the next hop could be a private address, checked by
                # nothing (an IP literal never reaches the resolver).
                async with self._session.post(url, data=body, headers=headers, allow_redirects=False,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                    if 200 <= response.status < 300:
                        await report("Normal", "WebhookDelivered",
                                     f"{payload['type']} delivered to {shown} (attempt {attempt})")
                        return DeliveryResult(True, attempt, "")
                    error = f"HTTP {response.status}"
                    if 300 <= response.status < 400:
                        error += " (a redirect: webhooks do not follow them)"
                    retryable = response.status >= 500 or response.status == 429
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}".replace(url, shown)[:200]
                if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, NotPublicError):
                    await report("Warning", "WebhookRefused", f"{payload['type']} not sent to {shown}: {exc.os_error}")
                    return DeliveryResult(False, attempt, str(exc.os_error))
            if not retryable or attempt == self.attempts:
                break
            await report("Warning", "WebhookRetrying",
                         f"{payload['type']} to {shown} failed ({error}), attempt {attempt}/{self.attempts}")
            await asyncio.sleep(min(self.base_delay * 2 ** (attempt - 1), self.max_delay))
        await report("Warning", "WebhookFailed",
                     f"{payload['type']} to {shown} gave up after {attempt} attempts: {error}")
        return DeliveryResult(False, attempt, error)
