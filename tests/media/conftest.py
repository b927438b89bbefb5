"""Media-tier fixtures: a real SeaweedFS S3 server (behind a TCP proxy the tests can cut to play an
outage), the real encoder as a subprocess on its own 127.x address, and real ffmpeg publishers."""

from __future__ import annotations

import http.server
import itertools
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from localplatform import seaweedfs
from localplatform.processes import stop_child
from media_helpers import (
    ACCESS_KEY,
    ENCODER,
    REGION,
    SECRET_KEY,
    WEED,
    CuttableProxy,
    EncoderProcess,
    ObjectStore,
    free_port,
    serve_directory,
)
from waiting import wait_until


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """SeaweedFS `weed server -s3` on free ports in a tmp dir, stopped at the end of the session."""
    directory = tmp_path_factory.mktemp("seaweedfs")
    identities = directory / "identities.json"
    seaweedfs.write_identities(identities, ACCESS_KEY, SECRET_KEY)
    argv = seaweedfs.server_argv(WEED, directory, identities)
    ports = {"s3": seaweedfs.s3_port(argv)}
    log = (directory / "weed.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    direct = f"http://127.0.0.1:{ports['s3']}"
    client = boto3.client("s3", endpoint_url=direct, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                          region_name=REGION)

    def ready() -> bool:
        assert process.poll() is None, f"weed exited: {(directory / 'weed.log').read_text()[-3000:]}"
        try:
            client.create_bucket(Bucket="ready-check")
            return True
        except Exception:
            return False

    proxy = CuttableProxy(ports["s3"])
    try:
        wait_until(ready, 60, "SeaweedFS S3 to accept requests", interval=0.25)
        client.create_bucket(Bucket="media")
        yield ObjectStore(f"http://127.0.0.1:{proxy.port}", direct, proxy, client, "media")
    finally:
        proxy.stop()
        stop_child(process, 5)
        log.close()


_addresses = itertools.count(2)


@pytest.fixture
def start_encoder(
    object_store: ObjectStore, tmp_path: Path
) -> Iterator[Callable[..., EncoderProcess]]:
    started: list[EncoderProcess] = []

    def start(
        kind: str,
        spec: dict[str, Any],
        template: dict[str, Any] | None,
        *,
        bucket: str | None = None,
        prefix: str | None = None,
        clip: dict[str, Any] | None = None,
        srt_passphrase: str | None = None,
        extra_env: dict[str, str] | None = None,
        wait_healthy: bool = True,
        finish_only: bool = False,
        pull_allowed_networks: tuple[str, ...] = ("127.0.0.0/8",),  # the sources the tests pull listen there
        endpoint_named_by_job: str | None = None,  # the store under another name, as a job names its own
        storage_allowed_networks: tuple[str, ...] = (),
    ) -> EncoderProcess:
        number = next(_addresses)
        host = f"127.0.{number // 250}.{number % 250 + 2}"  # each encoder its own address, as a Pod IP
        bucket = bucket or object_store.bucket
        prefix = prefix or f"live/test{number}"
        stream_key = secrets.token_hex(8)
        control_key = secrets.token_hex(32)
        preview_key = secrets.token_hex(16)
        config = {
            "kind": kind, "namespace": "media", "name": f"job{number}", "attempt": 1, "spec": spec,
            "template": template, "clip": clip,
            "storage": {"endpoint": endpoint_named_by_job or object_store.endpoint, "bucket": bucket,
                        "prefix": prefix, "region": REGION, "namedByJob": endpoint_named_by_job is not None},
            "finishOnly": finish_only, "pullAllowedNetworks": pull_allowed_networks,
            "storageAllowedNetworks": storage_allowed_networks,
        }  # fmt: skip
        env = {
            # The sources and the store are on this machine: no outbound proxy of the developer's between.
            **{name: value for name, value in os.environ.items() if not name.lower().endswith("_proxy")},
            "ONAIR_JOB_CONFIG": json.dumps(config),
            "ONAIR_STREAM_KEY": stream_key,
            "ONAIR_CONTROL_KEY": control_key,
            "ONAIR_PREVIEW_KEY": preview_key,
            "ONAIR_LISTEN_HOST": host,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "ONAIR_WORK_DIR": str(tmp_path / f"work{number}"),
            **(extra_env or {}),
        }
        if srt_passphrase:
            env["ONAIR_SRT_PASSPHRASE"] = srt_passphrase
        ports = {name: free_port(host) for name in ("rtmp", "srt", "status", "preview")}
        log_path = tmp_path / f"encoder{number}.log"
        process = subprocess.Popen(
            [ENCODER, "--rtmp-port", str(ports["rtmp"]), "--srt-port",
             str(ports["srt"]), "--status-port", str(ports["status"]), "--preview-port", str(ports["preview"])],
            env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        encoder = EncoderProcess(process, host, ports["rtmp"], ports["srt"], ports["status"], stream_key,
                                 control_key, bucket, prefix, log_path, ports["preview"], preview_key)
        started.append(encoder)
        if wait_healthy:

            def healthy() -> bool:
                assert process.poll() is None, f"encoder exited {process.returncode}:\n{encoder.log()[-4000:]}"
                try:
                    return requests.get(f"{encoder.base_url}/healthz", timeout=1).status_code == 200
                except requests.RequestException:
                    return False

            wait_until(healthy, 20, "the encoder's /healthz")
        return encoder

    yield start
    for encoder in started:  # a failed test may leave one running: stop it cleanly, then for sure
        if encoder.process.poll() is None:
            stop_child(encoder.process, 30)


OriginServer = tuple[http.server.ThreadingHTTPServer, list[str]]  # the server, the paths it was asked for


@pytest.fixture
def _hls_origin_server(tmp_path: Path) -> Iterator[OriginServer]:
    root = tmp_path / "origin"
    root.mkdir()
    # Its segments need the cookie its playlists set, as some CDNs' token cookies: every pull must
    # send it back (through the pull guard, ffmpeg would not on its own).
    server, requested = serve_directory(root, cookie="origin-session=o1; Path=/; HttpOnly")
    try:
        yield server, requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hls_origin(_hls_origin_server: OriginServer, tmp_path: Path) -> tuple[str, Path]:
    """An HTTP origin serving a directory, as a CDN or packager would serve a live HLS stream."""
    return f"http://127.0.0.1:{_hls_origin_server[0].server_address[1]}", tmp_path / "origin"


@pytest.fixture
def hls_origin_requests(_hls_origin_server: OriginServer) -> list[str]:
    """The paths hls_origin was asked for, in order."""
    return _hls_origin_server[1]
