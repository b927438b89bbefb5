"""The encoder's S3 store against SeaweedFS: what the upload queue writes lands as a player fetches it."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from media_helpers import ACCESS_KEY, REGION, SECRET_KEY, ObjectStore

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
