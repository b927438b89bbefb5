"""The uploader's lanes: renditions upload in parallel, each keeps its own order, and the master
playlist waits for what was queued before it below its folder; the spool's count survives lanes that
end uploads while others queue."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path, PosixPath
from typing import Any

from onair.encoder.upload import S3Store, UploadQueue, lanes_conflict


class SlowStore:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, float]] = []

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        with self.lock:
            self.events.append(("start", key, time.monotonic()))
        time.sleep(0.2 if key.endswith(".ts") else 0.01)
        with self.lock:
            self.events.append(("end", key, time.monotonic()))

    def delete(self, key: str) -> None:
        self.put(key, b"", "", "")

    def when(self, what: str, key: str) -> float:
        return next(t for kind, k, t in self.events if kind == what and k == key)


def test_renditions_upload_in_parallel_and_keep_their_order() -> None:
    store = SlowStore()
    queue = UploadQueue(store, spool_limit_bytes=10**9)
    queue.start()
    for rendition in ("720p", "360p"):
        queue.put_bytes(f"live/x/{rendition}/seg_1.ts", b"segment", "no-cache")
    for rendition in ("720p", "360p"):
        queue.put_bytes(f"live/x/{rendition}/index.m3u8", b"playlist", "no-cache")
    queue.put_bytes("live/x/master.m3u8", b"master", "no-cache")
    assert queue.wait_idle(5)
    queue.stop()
    # Both segments were uploading at the same time...
    assert store.when("start", "live/x/360p/seg_1.ts") < store.when("end", "live/x/720p/seg_1.ts")
    # ...each playlist only after its own segment, and the master after everything below it.
    for rendition in ("720p", "360p"):
        playlist, segment = f"live/x/{rendition}/index.m3u8", f"live/x/{rendition}/seg_1.ts"
        assert store.when("start", playlist) >= store.when("end", segment)
        assert store.when("start", "live/x/master.m3u8") >= store.when("end", playlist)


def test_lanes_conflict_within_a_folder_and_across_parent_folders() -> None:
    assert lanes_conflict("live/x/720p", "live/x/720p")
    assert lanes_conflict("live/x", "live/x/720p")
    assert lanes_conflict("live/x/720p", "live/x")
    assert not lanes_conflict("live/x/720p", "live/x/360p")
    assert not lanes_conflict("live/x/720p", "live/x/720p-hd")


class OutageStore:
    """Refuses everything while `down`; records each landed operation with the playlist then stored."""

    def __init__(self) -> None:
        self.down = False
        self.lock = threading.Lock()
        self.objects: dict[str, bytes] = {}
        self.deleted_while_named: list[str] = []

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        if self.down:
            raise ConnectionError("store down")
        with self.lock:
            self.objects[key] = body

    def delete(self, key: str) -> None:
        if self.down:
            raise ConnectionError("store down")
        with self.lock:
            if key.rsplit("/", 1)[1].encode() in self.objects.get("live/x/180p/index.m3u8", b""):
                self.deleted_while_named.append(key)
            self.objects.pop(key, None)


def down_after_one_segment(store: OutageStore, lane: str) -> UploadQueue:
    """A running queue that stored a segment and the playlist naming it, and then the store went down."""
    queue = UploadQueue(store, spool_limit_bytes=10**9, initial_backoff=0.01, max_backoff=0.02)
    queue.start()
    queue.put_bytes(f"{lane}/seg_0.ts", b"s0", "immutable")
    queue.put_bytes(f"{lane}/index.m3u8", b"seg_0.ts", "max-age=1")
    assert queue.wait_idle(5)
    store.down = True
    return queue


def test_after_an_outage_no_segment_is_deleted_while_the_stored_playlist_names_it() -> None:
    store = OutageStore()
    lane = "live/x/180p"
    queue = down_after_one_segment(store, lane)
    # What the encoder queues during the outage: each segment, the playlist naming the window, and
    # the delete of a segment that left the window long enough ago.
    queue.put_bytes(f"{lane}/seg_1.ts", b"s1", "immutable")
    queue.put_bytes(f"{lane}/index.m3u8", b"seg_1.ts", "max-age=1")
    queue.delete(f"{lane}/seg_0.ts")
    queue.put_bytes(f"{lane}/seg_2.ts", b"s2", "immutable")
    queue.put_bytes(f"{lane}/index.m3u8", b"seg_2.ts", "max-age=1")
    store.down = False
    assert queue.wait_idle(5)
    queue.stop()
    assert store.deleted_while_named == []
    assert store.objects[f"{lane}/index.m3u8"] == b"seg_2.ts" and f"{lane}/seg_0.ts" not in store.objects


class ClockedStore(OutageStore):
    """An OutageStore that notes when each key landed or was deleted."""

    def __init__(self) -> None:
        super().__init__()
        self.landed: dict[str, float] = {}
        self.deleted: dict[str, float] = {}

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        super().put(key, body, content_type, cache_control)
        self.landed[key] = time.monotonic()

    def delete(self, key: str) -> None:
        super().delete(key)
        self.deleted[key] = time.monotonic()


def wait_for(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_after_an_outage_a_segment_stays_fetchable_for_its_hold_once_the_playlist_without_it_landed() -> None:
    """Players loaded the playlist stored before the outage, which names it: the outage did not count
    as its hold. And its folder's later uploads do not wait behind it."""
    store = ClockedStore()
    lane = "live/x/180p"
    queue = down_after_one_segment(store, lane)
    queue.put_bytes(f"{lane}/seg_1.ts", b"s1", "immutable")
    queue.put_bytes(f"{lane}/index.m3u8", b"seg_1.ts", "max-age=1", unnames=[f"{lane}/seg_0.ts"])
    queue.delete(f"{lane}/seg_0.ts", hold=0.5)  # its hold is over on the media clock: the outage lasted
    store.down = False
    assert wait_for(lambda: f"{lane}/seg_1.ts" in store.landed and f"{lane}/seg_0.ts" in store.deleted, 5)
    playlist_landed = store.landed[f"{lane}/index.m3u8"]
    assert store.deleted[f"{lane}/seg_0.ts"] - playlist_landed >= 0.5
    # Meanwhile the next segment and playlist went up, not held behind the waiting delete.
    queue.put_bytes(f"{lane}/seg_2.ts", b"s2", "immutable")
    queue.put_bytes(f"{lane}/index.m3u8", b"seg_2.ts", "max-age=1", unnames=[f"{lane}/seg_1.ts"])
    queue.delete(f"{lane}/seg_1.ts", hold=30)
    queue.put_bytes(f"{lane}/seg_3.ts", b"s3", "immutable")  # queued behind the delete
    assert wait_for(lambda: f"{lane}/seg_3.ts" in store.landed, 5)
    assert f"{lane}/seg_1.ts" not in store.deleted and queue.pending() == 1  # its 30 s are not over
    # A stopping encoder neither waits for the hold nor cuts it short: players may still ask for the
    # segment from the bucket, and the job's next Pod deletes what no stored playlist names.
    started = time.monotonic()
    assert queue.wait_idle(5)
    assert time.monotonic() - started < 1
    queue.stop()
    assert f"{lane}/seg_1.ts" not in store.deleted and store.deleted_while_named == []


def test_a_stop_waits_for_the_playlist_that_starts_a_hold_but_not_for_the_hold() -> None:
    """The playlist that unnames a segment is still queued when the encoder stops: it is uploaded,
    and the delete behind it, whose hold only starts then, is left."""
    store = ClockedStore()
    lane = "live/x/180p"
    queue = down_after_one_segment(store, lane)
    queue.put_bytes(f"{lane}/seg_1.ts", b"s1", "immutable")
    queue.put_bytes(f"{lane}/index.m3u8", b"seg_1.ts", "max-age=1", unnames=[f"{lane}/seg_0.ts"])
    queue.delete(f"{lane}/seg_0.ts", hold=30)
    store.down = False
    assert queue.wait_idle(5)
    queue.stop()
    assert f"{lane}/index.m3u8" in store.landed and f"{lane}/seg_0.ts" not in store.deleted


class OrderStore:
    """Records what lands, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.landed: list[tuple[str, bytes]] = []

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        with self.lock:
            self.landed.append((key, body))

    def delete(self, key: str) -> None:
        self.put(key, b"", "", "")


def test_after_an_outage_the_master_lands_after_a_version_of_every_playlist_it_names() -> None:
    store = OrderStore()
    queue = UploadQueue(store, spool_limit_bytes=10**9)
    # Queued during an outage (the workers have not started): each rendition's first segment and
    # playlist, the master once both are known, then the next segment of one rendition.
    for rendition in ("a", "b"):
        queue.put_bytes(f"live/x/{rendition}/seg_0.ts", b"s0", "immutable")
        queue.put_bytes(f"live/x/{rendition}/index.m3u8", b"seg_0.ts", "max-age=1")
    queue.put_bytes("live/x/master.m3u8", b"a/index.m3u8\nb/index.m3u8", "max-age=5")
    queue.put_bytes("live/x/a/seg_1.ts", b"s1", "immutable")
    queue.put_bytes("live/x/a/index.m3u8", b"seg_0.ts\nseg_1.ts", "max-age=1")
    queue.start()
    assert queue.wait_idle(5)
    queue.stop()
    keys = [key for key, _ in store.landed]
    for rendition in ("a", "b"):
        assert keys.index(f"live/x/{rendition}/index.m3u8") < keys.index("live/x/master.m3u8")
    for position, (key, body) in enumerate(store.landed):  # and every playlist after the segments it names
        if key.endswith("index.m3u8"):
            folder = key.rsplit("/", 1)[0]
            assert all(f"{folder}/{name}" in keys[:position] for name in body.decode().split())


class WaitingStore:
    """Holds the first upload until told it may finish."""

    def __init__(self) -> None:
        self.uploading = threading.Event()
        self.may_finish = threading.Event()

    def put(self, key: str, body: bytes, content_type: str, cache_control: str) -> None:
        self.uploading.set()
        self.may_finish.wait(5)

    def delete(self, key: str) -> None:
        pass


def test_the_spool_count_keeps_an_upload_that_ends_while_another_file_is_queued(tmp_path: Path) -> None:
    """A file is sized (a stat: other threads run meanwhile) while another lane's upload ends."""
    one_file = 1_000_000
    store = WaitingStore()
    queue = UploadQueue(store, spool_limit_bytes=one_file)

    class SizedWhileAnUploadEnds(PosixPath):
        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            if not store.may_finish.is_set():
                store.may_finish.set()
                deadline = time.monotonic() + 5
                while queue.spool_bytes and time.monotonic() < deadline:  # the other upload has ended
                    time.sleep(0.001)
            return super().stat(follow_symlinks=follow_symlinks)

    for name in ("a.ts", "b.ts"):
        (tmp_path / name).write_bytes(b"x" * one_file)
    queue.start()
    queue.put_file("live/x/720p/a.ts", tmp_path / "a.ts")
    assert store.uploading.wait(5)
    queue.put_file("live/x/360p/b.ts", SizedWhileAnUploadEnds(tmp_path / "b.ts"))
    assert queue.wait_idle(5)
    queue.stop()
    assert queue.spool_bytes == 0 and queue.has_room_for(one_file)  # the next segments are not dropped



def test_the_s3_client_sends_a_checksum_only_where_s3_requires_one() -> None:
    """What the store receives, caught before it is sent: no CRC32 (nor its aws-chunked trailer, which
    many S3-compatible stores refuse) on a segment's put; the batch delete, which S3 refuses without
    one, still carries it."""
    from botocore.awsrequest import AWSResponse

    store = S3Store("http://127.0.0.1:9", "media", "us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    sent: list[tuple[str, dict[str, str]]] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append((request.method, {name.lower(): str(value) for name, value in request.headers.items()}))
        body = (b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult></DeleteResult>' if request.method == "POST"
                else b"")
        return AWSResponse(request.url, 200, {}, _Raw(body))

    store.client.meta.events.register("before-send.s3", answer)
    store.put("live/720p/seg_000001.ts", b"\x47" * 188 * 100, "video/mp2t", "max-age=31536000, immutable")
    store.delete_many(["live/720p/seg_000000.ts"])
    (put_method, put_headers), (delete_method, delete_headers) = sent
    assert put_method == "PUT" and not any(name.startswith("x-amz-checksum") for name in put_headers), put_headers
    assert "aws-chunked" not in put_headers.get("content-encoding", "")
    assert put_headers["x-amz-content-sha256"] != "UNSIGNED-PAYLOAD"  # over HTTP SigV4 signs the body
    assert delete_method == "POST"
    assert "content-md5" in delete_headers or any(name.startswith("x-amz-checksum") for name in delete_headers)


class _Raw:
    """The raw stream botocore reads a response body from."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body
