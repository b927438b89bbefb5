"""Ordered upload to the bucket, with retry and a bounded local spool.

Operations are ordered per lane: the folder of the key (one rendition's segments and playlists).
Within a lane they go strictly in the order they were queued, so a segment always lands before any
playlist naming it, and a playlist that drops a segment lands before the delete of that segment; an
operation in a parent folder (the master playlist) waits for everything queued before it in the
folders below, and they for it. Lanes upload in parallel (a few worker threads), so three
renditions whose segments close at the same moment do not queue behind one another. When the store
fails, a worker retries the same operation with exponential backoff and everything behind it in its
lane waits on local disk (the spool). Only playlists are coalesced, so that an outage does not
pile up stale playlists: a newer version of a playlist takes the place of the older queued one, the
files its folder queued since (the segments it names) move ahead of it and the deletes stay behind
it. So every segment lands before a playlist naming it, no segment is deleted while the stored
playlist still names it, and a master queued after the older version still lands after a version of
every playlist it names.

A segment that leaves the live playlist stays fetchable for a while (`hold`) after the first stored
playlist without it landed (RFC 8216 6.2.2): players that loaded the previous one may still ask for
it. Normally that playlist landed long before the delete is queued; after an outage it lands just
now, and the delete waits its hold, without holding up its folder meanwhile.
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from onair.addresses import AddressPolicy, NotPublicError, allowed_addresses_now, storage_refusal
from onair.phases import ConditionReason

log = logging.getLogger(__name__)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
CONTENT_TYPES = {
    ".m3u8": PLAYLIST_TYPE,
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
}
# Segments never change once written; live playlists change every segment (Apple: at most half the
# target duration); a finished (VOD) playlist never changes again.
SEGMENT_CACHE_CONTROL = "public, max-age=31536000, immutable"
LIVE_PLAYLIST_CACHE_CONTROL = "public, max-age=1"
MASTER_PLAYLIST_CACHE_CONTROL = "public, max-age=5"
FINAL_PLAYLIST_CACHE_CONTROL = "public, max-age=31536000"
# S3 error codes of a refused identity or signature (AWS S3, SeaweedFS and OSS answer with these).
ACCESS_DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                                 "ExpiredToken", "AllAccessDisabled"})


def content_type_for(key: str) -> str:
    suffix = key[key.rfind(".") :] if "." in key else ""
    return CONTENT_TYPES.get(suffix, "application/octet-stream")


def storage_problem(error: BaseException, bucket: str) -> tuple[ConditionReason, str]:
    """What a failed store request says to a user: the StorageAvailable reason and a message."""
    if (refusal := _refusal_in(error)) is not None:  # botocore's own message would not say why
        return ConditionReason.BUCKET_UNREACHABLE, f"bucket {bucket!r}: {refusal}"
    response = getattr(error, "response", None)
    code = str(((response or {}).get("Error") or {}).get("Code") or "") if isinstance(response, dict) else ""
    if code == "NoSuchBucket":
        return ConditionReason.BUCKET_NOT_FOUND, f"bucket {bucket!r} does not exist"
    if code in ACCESS_DENIED_CODES:
        return ConditionReason.ACCESS_DENIED, f"bucket {bucket!r} refused the credentials ({code}): {error}"
    return ConditionReason.BUCKET_UNREACHABLE, f"bucket {bucket!r}: {error}"


def _refusal_in(error: BaseException | None) -> NotPublicError | None:
    """The NotPublicError under a store request's error (botocore keeps urllib3's as kwargs["error"])."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, NotPublicError):
            return error
        kwargs = getattr(error, "kwargs", None)
        inner = kwargs.get("error") if isinstance(kwargs, dict) else None
        error = inner if isinstance(inner, BaseException) else (error.__cause__ or error.__context__)
        seen += 1
    return None


# A file this large (an MP4 of a recording) is streamed from disk in parts, never read into memory.
LARGE_FILE_BYTES = 32 * 1024 * 1024


class ObjectStore(Protocol):
    def put(self, key: str, body: bytes | Path, content_type: str, cache_control: str) -> None: ...

    def delete(self, key: str) -> None: ...


@dataclass
class Operation:
    key: str
    delete: bool = False
    path: Path | None = None  # a local file (segment) to upload
    body: bytes | None = None  # in-memory content (playlist)
    cache_control: str = SEGMENT_CACHE_CONTROL
    remove_local: bool = True  # delete the local file once uploaded
    # time.monotonic() of the segments whose availability this operation completes (the playlist
    # that first names them): upload latency is measured from there.
    closed_at: list[float] = field(default_factory=list)
    on_done: Callable[[], None] | None = None
    # A playlist: the keys of the segments its version (or the versions it replaced) no longer names.
    unnames: list[str] = field(default_factory=list)
    # A delete: seconds it waits after the first stored playlist without `unnamed_key` (by default its
    # own key) landed, and the time.monotonic() that makes, once known.
    hold: float = 0.0
    unnamed_key: str | None = None
    not_before: float | None = None

    @property
    def size(self) -> int:
        if self.body is not None:
            return len(self.body)
        try:
            return self.path.stat().st_size if self.path else 0
        except FileNotFoundError:
            return 0


@dataclass
class UploadStats:
    last_latency_ms: float | None = None
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    failures: int = 0
    uploaded_objects: int = 0
    uploaded_bytes: int = 0
    last_error: str | None = None
    failing_since: float | None = None

    def p99_ms(self) -> float | None:
        return percentile(list(self.latencies_ms), 99)

    def p50_ms(self) -> float | None:
        return percentile(list(self.latencies_ms), 50)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def lane_of(key: str) -> str:
    """The folder of a key: operations in one folder keep their order."""
    return key.rsplit("/", 1)[0] if "/" in key else ""


def lanes_conflict(lane: str, other: str) -> bool:
    """Same folder, or one inside the other (the master playlist's folder holds the renditions')."""
    return lane == other or not lane or not other or other.startswith(lane + "/") or lane.startswith(other + "/")


class UploadQueue:
    """The ordered queue and its worker thread."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        spool_limit_bytes: int,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
        on_latency: Callable[[float], None] | None = None,
        workers: int = 4,
    ) -> None:
        self._on_latency = on_latency  # seconds from segment closed to its playlist uploaded
        self._store = store
        self._queue: deque[Operation] = deque()
        self._condition = threading.Condition()
        self._in_flight: list[Operation] = []
        self._stopping = False
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self.spool_limit_bytes = spool_limit_bytes
        self.stats = UploadStats()
        self._spool_bytes = 0
        # When the first stored playlist without each key landed, until that key's delete is done.
        self._unnamed_since: dict[str, float] = {}
        self._idle_waiters = 0  # wait_idle callers, woken when a delete's hold becomes known
        self._threads = [threading.Thread(target=self._run, name=f"uploader-{i}", daemon=True)
                         for i in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    # --- queueing (any thread) ---------------------------------------------------------------

    @property
    def spool_bytes(self) -> int:
        """Bytes of local segment files waiting for upload."""
        return self._spool_bytes

    def has_room_for(self, size: int) -> bool:
        return self._spool_bytes + size <= self.spool_limit_bytes

    def put_file(self, key: str, path: Path, *, remove_local: bool = True) -> None:
        operation = Operation(key=key, path=path, remove_local=remove_local)
        # Sized outside the lock: the stat releases the GIL, and the count changes only under the lock,
        # here and when a worker has uploaded a file, so that neither change is lost.
        size = operation.size
        operation.on_done = self._release(size)
        with self._condition:
            self._spool_bytes += size
            self._queue.append(operation)
            self._condition.notify_all()

    def _release(self, size: int) -> Callable[[], None]:
        def release() -> None:
            with self._condition:
                self._spool_bytes -= size

        return release

    def put_bytes(self, key: str, body: bytes, cache_control: str, closed_at: list[float] | None = None,
                  unnames: list[str] | None = None) -> None:
        """Queue a playlist; an older queued version of the same key is replaced (see module doc).
        `unnames`: the segment keys the previous version named and this one does not."""
        lane = lane_of(key)
        with self._condition:
            queued = list(self._queue)
            older = next((index for index, operation in enumerate(queued)
                          if operation.key == key and not operation.delete and operation.body is not None), None)
            if older is None:
                self._queue.append(Operation(key=key, body=body, cache_control=cache_control,
                                             closed_at=list(closed_at or []), unnames=list(unnames or [])))
            else:
                marks = queued[older].closed_at + list(closed_at or [])
                since = queued[older + 1:]
                ahead = [operation for operation in since if lane_of(operation.key) == lane and not operation.delete]
                behind = [operation for operation in since if lane_of(operation.key) != lane or operation.delete]
                newer = Operation(key=key, body=body, cache_control=cache_control, closed_at=marks,
                                  unnames=queued[older].unnames + list(unnames or []))
                self._queue = deque([*queued[:older], *ahead, newer, *behind])
            self._condition.notify_all()

    def delete(self, key: str, hold: float = 0.0, unnamed_key: str | None = None) -> None:
        """Queue a delete, due `hold` seconds after the first stored playlist that no longer names
        `unnamed_key` (by default `key`; an init segment goes with the segments that use it) landed."""
        with self._condition:
            self._queue.append(Operation(key=key, delete=True, hold=hold, unnamed_key=unnamed_key or key))
            self._condition.notify_all()

    def pending(self) -> int:
        with self._condition:
            return len(self._queue) + len(self._in_flight)

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything queued so far is uploaded (True) or the timeout passes (False).
        Deletes still in their hold are not waited for: players may still ask for those segments
        after the encoder has gone (the bucket serves them), and the job's next Pod deletes what no
        stored playlist names. `stop()` then abandons them."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._idle_waiters += 1
            try:
                while self._in_flight or any(not self._in_hold(operation, time.monotonic())
                                             for operation in self._queue):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._condition.wait(remaining)
                return True
            finally:
                self._idle_waiters -= 1

    @staticmethod
    def _in_hold(operation: Operation, now: float) -> bool:
        return operation.delete and operation.not_before is not None and operation.not_before > now

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the workers once their current operation is done, waiting for them `timeout` in all
        (a worker stuck in a store request is left to its daemon thread)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # --- the worker ----------------------------------------------------------------------------

    def _next(self) -> Operation | None:
        with self._condition:
            while True:
                if self._stopping:  # stop() comes after wait_idle: whatever is left is abandoned
                    return None
                operation, wake_at = self._first_ready(time.monotonic())
                if operation is not None:
                    self._queue.remove(operation)
                    self._in_flight.append(operation)
                    return operation
                self._condition.wait(None if wake_at is None else max(0.0, wake_at - time.monotonic()))

    def _first_ready(self, now: float) -> tuple[Operation | None, float | None]:
        """The oldest queued operation whose lane has nothing in flight or queued before it (a delete
        also waits for its hold, holding up nothing behind it); else when a waiting delete is due."""
        blocked = [lane_of(op.key) for op in self._in_flight]
        wake_at = None
        for operation in self._queue:
            lane = lane_of(operation.key)
            if any(lanes_conflict(lane, other) for other in blocked):
                blocked.append(lane)
                continue
            if operation.delete:
                if operation.not_before is None:  # what unnamed it has landed: its hold starts there
                    since = self._unnamed_since.get(operation.unnamed_key or operation.key)
                    operation.not_before = since + operation.hold if since is not None else now
                    if self._idle_waiters:
                        self._condition.notify_all()
                if operation.not_before > now:
                    wake_at = operation.not_before if wake_at is None else min(wake_at, operation.not_before)
                    continue
            return operation, None
        return None, wake_at

    def _run(self) -> None:
        while (operation := self._next()) is not None:
            backoff = self._initial_backoff
            while not self._attempt(operation):
                with self._condition:
                    if self._stopping:
                        break
                    self._condition.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            with self._condition:
                self._in_flight.remove(operation)
                self._condition.notify_all()

    def _attempt(self, operation: Operation) -> bool:
        try:
            self._perform(operation)
        except Exception as error:  # any store error: retry the same operation later, keeping the order
            self.stats.failures += 1
            self.stats.last_error = f"{operation.key}: {error}"
            if self.stats.failing_since is None:
                self.stats.failing_since = time.monotonic()
            log.warning("upload of %s failed, will retry: %s", operation.key, error)
            return False
        self.stats.failing_since = None
        return True

    def _perform(self, operation: Operation) -> None:
        started = time.monotonic()
        if operation.delete:
            self._store.delete(operation.key)
            with self._condition:
                self._unnamed_since.pop(operation.key, None)
        else:
            body: bytes | Path
            if operation.body is not None:
                body = operation.body
            elif operation.path is not None and operation.size > LARGE_FILE_BYTES:
                body = operation.path
            else:
                body = operation.path.read_bytes() if operation.path else b""
            self._store.put(operation.key, body, content_type_for(operation.key), operation.cache_control)
            self.stats.uploaded_objects += 1
            self.stats.uploaded_bytes += len(body) if isinstance(body, bytes) else operation.size
            if operation.path is not None and operation.remove_local:
                operation.path.unlink(missing_ok=True)
        now = time.monotonic()
        if operation.unnames:
            with self._condition:
                for key in operation.unnames:
                    self._unnamed_since.setdefault(key, now)
        if log.isEnabledFor(logging.DEBUG):  # every upload passes here
            log.debug("%s %s in %.0f ms; segments available %s ms after they closed",
                      "deleted" if operation.delete else "uploaded", operation.key, (now - started) * 1000,
                      [round((now - closed) * 1000) for closed in operation.closed_at])
        for closed in operation.closed_at:
            latency = (now - closed) * 1000
            self.stats.last_latency_ms = latency
            self.stats.latencies_ms.append(latency)
            if self._on_latency is not None:
                self._on_latency(latency / 1000)
        if operation.on_done:
            operation.on_done()


def limit_connections(client: Any, policy: AddressPolicy) -> None:
    """Makes every connection of a boto3 client go only to addresses `policy` allows (see S3Store).
    botocore has no public hook for its connections: this sets the connection classes of its urllib3
    session's pools, and fails at once (not silently unchecked) where a botocore release changed them."""
    from botocore import awsrequest

    pools = getattr(getattr(client._endpoint, "http_session", None), "_pool_classes_by_scheme", None)
    if not isinstance(pools, dict) or set(pools) != {"http", "https"}:
        raise RuntimeError("this botocore's S3 client cannot be limited to allowed addresses")

    class Checked:
        def _new_conn(self: Any) -> Any:
            from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
            from urllib3.util import connection

            # Through the installation's outbound proxy: the tunnel's target is checked (the proxy resolves
            # it again); a forwarding proxy (plain http) gets whole URLs, whose host this cannot check.
            target = self._tunnel_host if self.proxy is not None else self._dns_host
            if target is None:
                refused = NotPublicError("an S3 endpoint a job names is not reached through a forwarding proxy "
                                         "(http:// through http_proxy): name it https://, or put it in no_proxy")
                raise NewConnectionError(self, str(refused)) from refused
            try:
                addresses = allowed_addresses_now(target, self.port, policy, storage_refusal)
            except socket.gaierror as error:
                raise NameResolutionError(target, self, error) from error
            except NotPublicError as error:
                raise NewConnectionError(self, str(error)) from error
            if self.proxy is not None:
                return super()._new_conn()  # type: ignore[misc]
            failure: OSError | None = None
            for address in addresses:  # each checked one in turn, as urllib3 tries a name's addresses
                try:
                    return connection.create_connection((address, self.port), self.timeout,
                                                        source_address=self.source_address,
                                                        socket_options=self.socket_options)
                except OSError as error:
                    failure = error
            if isinstance(failure, TimeoutError):
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout="
                                                f"{self.timeout})") from failure
            raise NewConnectionError(self, f"Failed to establish a new connection: {failure}") from failure

    class CheckedHTTP(Checked, awsrequest.AWSHTTPConnection):
        pass

    class CheckedHTTPS(Checked, awsrequest.AWSHTTPSConnection):
        pass

    # In place: the session's pool managers (and the proxy managers it makes later) share this dict.
    pools["http"] = type("CheckedHTTPPool", (awsrequest.AWSHTTPConnectionPool,), {"ConnectionCls": CheckedHTTP})
    pools["https"] = type("CheckedHTTPSPool", (awsrequest.AWSHTTPSConnectionPool,), {"ConnectionCls": CheckedHTTPS})


class S3Store:
    """ObjectStore on boto3. Retries are ours (UploadQueue), so botocore's are off.

    `policy`: for an endpoint a job names (not the installation's own), the addresses its connections
    may reach; each connection resolves the name and connects only to an address the policy allows, so
    a name that resolves elsewhere later (DNS rebinding) does not get past it either."""

    def __init__(self, endpoint: str, bucket: str, region: str, addressing_style: str = "path",
                 policy: AddressPolicy | None = None, **client_kwargs: Any) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint or None,  # none given: AWS S3 of the region
            region_name=region,
            config=Config(
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=2,
                read_timeout=10,
                s3={"addressing_style": addressing_style},
                # botocore 1.36 started to add CRC32 checksums (over HTTPS in aws-chunked trailers) to
                # every upload, which many S3-compatible stores refuse. Only where S3 requires one (the
                # batch delete): SigV4 already covers the body over HTTP, TLS over HTTPS.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
            **client_kwargs,
        )
        if policy is not None:
            limit_connections(self.client, policy)

    def put(self, key: str, body: bytes | Path, content_type: str, cache_control: str) -> None:
        if isinstance(body, Path):  # multipart, a part at a time from disk
            from boto3.s3.transfer import TransferConfig

            self.client.upload_file(
                str(body), self.bucket, key, ExtraArgs={"ContentType": content_type, "CacheControl": cache_control},
                Config=TransferConfig(multipart_threshold=LARGE_FILE_BYTES, multipart_chunksize=16 * 1024 * 1024,
                                      max_concurrency=4),
            )
            return
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, CacheControl=cache_control
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def delete_many(self, keys: list[str]) -> None:
        """DeleteObjects, a thousand keys a request (its limit)."""
        for first in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[first:first + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def list_names(self, folder: str) -> list[str]:
        """The names of the objects directly in `folder` (a key prefix without its trailing slash)."""
        return list(self.sizes(folder))

    def sizes(self, folder: str) -> dict[str, int]:
        """The objects directly in `folder`: name -> size in bytes."""
        prefix = folder.rstrip("/") + "/"
        sizes: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix,
                                                                           Delimiter="/"):
            sizes.update((entry["Key"][len(prefix):], int(entry["Size"])) for entry in page.get("Contents", []))
        return sizes

    def in_bucket(self, bucket: str) -> S3Store:
        """The same store (endpoint, credentials, client) for another of its buckets."""
        other = copy.copy(self)
        other.bucket = bucket
        return other

    def copy(self, source_key: str, key: str, cache_control: str, source_bucket: str | None = None) -> None:
        """Copies `source_key` (of `source_bucket`, by default this one) to `key` in this bucket."""
        self.client.copy_object(
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": source_bucket or self.bucket, "Key": source_key},
            ContentType=content_type_for(key),
            CacheControl=cache_control,
            MetadataDirective="REPLACE",
        )
