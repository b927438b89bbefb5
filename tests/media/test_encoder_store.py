"""The encoder's S3 store against SeaweedFS: what the upload queue writes lands as a player fetches it."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError
from media_helpers import ACCESS_KEY, REGION, SECRET_KEY, ObjectStore

from onair.addresses import AddressPolicy
from onair.encoder.upload import LARGE_FILE_BYTES, S3Store, UploadQueue


def test_a_large_file_is_streamed_in_parts_not_read_into_memory(object_store: ObjectStore, tmp_path: Path) -> None:
    """A long recording's MP4 may be larger than the encoder Pod's memory limit."""
    size = LARGE_FILE_BYTES + 5 * 1024 * 1024
    mp4 = tmp_path / "720p.mp4"
    content = os.urandom(size)
    mp4.write_bytes(content)
    store = S3Store(object_store.direct_endpoint, object_store.bucket, REGION, aws_access_key_id=ACCESS_KEY,
                    aws_secret_access_key=SECRET_KEY)
    queue = UploadQueue(store, spool_limit_bytes=10 * size)
    key = "records/large/720p.mp4"
    del content
    tracemalloc.start()
    try:
        queue.start()
        queue.put_file(key, mp4, remove_local=False)
        assert queue.wait_idle(120), queue.stats.last_error
        queue.stop()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 2, f"{peak} bytes allocated at the peak for a {size}-byte file"
    stored = object_store.client.head_object(Bucket=object_store.bucket, Key=key)
    assert stored["ContentLength"] == size
    assert stored["ContentType"] == "video/mp4" and stored["CacheControl"] == "public, max-age=31536000, immutable"
    assert stored["ETag"].strip('"').endswith("-3")  # three parts of 16 MiB at most
    body = object_store.client.get_object(Bucket=object_store.bucket, Key=key)["Body"].read()
    assert body == mp4.read_bytes() and queue.stats.uploaded_bytes == size


def test_a_store_a_job_names_is_reached_only_at_addresses_the_installation_allows(object_store: ObjectStore) -> None:
    """Each connection resolves the endpoint's name and checks the address (a name that resolves
    elsewhere later gets no further); SeaweedFS here listens on loopback, which only an allowed
    network lets through."""
    named = object_store.direct_endpoint.replace("127.0.0.1", "localhost")
    credentials = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}
    refused = S3Store(named, object_store.bucket, REGION, policy=AddressPolicy(), **credentials)
    with pytest.raises(EndpointConnectionError) as refusal:
        refused.put("named/refused.txt", b"x", "text/plain", "no-cache")
    assert "localhost resolves to no public address" in str(refusal.value.kwargs["error"])
    with pytest.raises(object_store.client.exceptions.ClientError, match="404"):
        object_store.client.head_object(Bucket=object_store.bucket, Key="named/refused.txt")

    allowed = S3Store(named, object_store.bucket, REGION, policy=AddressPolicy.allowing(["127.0.0.0/8"]),
                      **credentials)
    allowed.put("named/allowed.txt", b"stored", "text/plain", "no-cache")
    assert allowed.get("named/allowed.txt") == b"stored"
    assert object_store.get_text(object_store.bucket, "named/allowed.txt") == "stored"
