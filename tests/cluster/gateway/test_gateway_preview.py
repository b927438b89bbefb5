"""The live preview through the gateway, end to end: an operator told that the gateway relays previews
runs the real encoder on the process node, ffmpeg publishes, and the job's webSocketConnection (the
gateway's URL) plays the stream. The gateway found the encoder Pod through its own watches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cluster.conftest import get_job, own_job_namespace, start_operator, stop_operator, wait_phase
from cluster.test_operator_lifecycle import create_live_job
from cluster.test_operator_live import ingest_url
from gateway_support import RunningGateway
from kubernetes import client
from livepreview import receive_preview, receive_preview_together
from localplatform.platform import PlatformInfo


@pytest.fixture
def relay_namespace(kube: client.ApiClient, platform: PlatformInfo, crds: None,
                    operator_namespace: str) -> Iterator[str]:
    with own_job_namespace(kube, platform, "v") as name:
        yield name


def test_a_live_jobs_preview_url_plays_through_the_gateway(
        kube: client.ApiClient, platform: PlatformInfo, run_root: Path, gateway: RunningGateway,
        relay_namespace: str, publisher: Any) -> None:
    relay_base = gateway.base.replace("http://", "ws://", 1)
    operator = start_operator(platform, run_root / "preview-relay", name="preview-relay",
                              ONAIR_WATCH_NAMESPACES=json.dumps(["v-*"]), ONAIR_PREVIEW_BASE_URL=relay_base)
    try:
        create_live_job(kube, relay_namespace, "relayed")
        job = wait_phase(kube, relay_namespace, "relayed", "WaitingForInput", timeout=90)
        url = job["status"]["urls"]["webSocketConnection"]
        assert url.startswith(f"{relay_base}/websocketplay/"), url
        publisher(ingest_url(kube, relay_namespace, job["status"]))
        wait_phase(kube, relay_namespace, "relayed", "Live", timeout=60)
        assert len(receive_preview(url, 100_000)) >= 100_000

        # More viewers than an encoder serves (8), all through the gateway: it opens the preview once.
        def one_preview_open_for_all() -> None:
            metrics = requests.get(f"{gateway.base}/metrics", timeout=10).text
            assert "onair_gateway_preview_viewers 10.0" in metrics
            assert "onair_gateway_preview_encoders 1.0" in metrics
        watched = receive_preview_together(url, 10, 50_000, while_watching=one_preview_open_for_all)
        assert all(len(data) >= 50_000 for data in watched)

        # The key is the credential: another one finds nothing.
        wrong = requests.get(url[:-1].replace("ws://", "http://", 1) + ("0" if url[-1] != "0" else "1"), timeout=10)
        assert wrong.status_code == 404 and wrong.json()["success"] is False
        assert get_job(kube, relay_namespace, "relayed")["status"]["phase"] == "Live"
    finally:
        stop_operator(operator)
