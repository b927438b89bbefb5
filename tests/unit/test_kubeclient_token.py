"""The Kubernetes client's bearer token from a file (a projected ServiceAccount token): read once a
minute, not on every request, and a rotated token is in use within that minute."""

from __future__ import annotations

from pathlib import Path

import pytest

from onair import kubeclient
from onair.kubeclient import TOKEN_REREAD_SECONDS, Credentials, KubeClient


def test_a_token_file_is_read_again_once_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(kubeclient.time, "monotonic", lambda: now[0])
    token = tmp_path / "token"
    token.write_text("first\n")
    client = KubeClient(Credentials(server="https://127.0.0.1:6443", token_file=str(token)))
    assert client._headers()["Authorization"] == "Bearer first"
    token.write_text("second\n")  # the kubelet rotated it
    now[0] += TOKEN_REREAD_SECONDS - 1
    assert client._headers()["Authorization"] == "Bearer first"
    now[0] += 1
    assert client._headers()["Authorization"] == "Bearer second"


def test_a_token_given_inline_needs_no_file() -> None:
    client = KubeClient(Credentials(server="https://127.0.0.1:6443", token="inline"))
    assert client._headers("application/json") == {"Accept": "application/json", "Authorization": "Bearer inline",
                                                   "Content-Type": "application/json"}
    assert "Authorization" not in KubeClient(Credentials(server="https://127.0.0.1:6443"))._headers()
