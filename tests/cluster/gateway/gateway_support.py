"""Helpers for the gateway tests: the gateway as a real process (onair-gateway) against the API server,
API keys for each role, and project namespaces (a namespace labelled onair.dev/project-id with a JobTemplate)."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from fixed_secrets import STREAM_KEY_SEED
from kubernetes import client
from localplatform.platform import PlatformInfo
from localplatform.processes import ManagedProcess, free_ports
from waiting import wait_until

JWT_SECRET = "cluster-test-signing-key-0123456789abcdef"
PINNED_PROJECT = "0b7c6a3e-8f51-4c2e-9d0a-5e2f1a9b7c11"  # the only project the "pinned" key may use
KEYS = {
    "write": {"name": "writer", "key": "key-write-all-0123456789", "projects": ["*"], "role": "write"},
    "read": {"name": "reader", "key": "key-read-all-0123456789", "projects": ["*"], "role": "read"},
    "admin": {"name": "ops", "key": "key-admin-0123456789", "projects": ["*"], "role": "admin"},
    "pinned": {"name": "pinned", "key": "key-write-pinned-0123456789", "projects": [PINNED_PROJECT], "role": "write"},
}
TEMPLATE = {
    "apiVersion": "onair.dev/v1alpha1", "kind": "JobTemplate", "metadata": {"name": "gw-ladder"},
    "spec": {"id": 7, "name": "gateway test ladder", "default": True,
             "renditions": [{"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 800000}]},
}


@dataclass
class RunningGateway:
    process: ManagedProcess
    base: str

    def token(self, role: str = "write") -> str:
        response = requests.post(f"{self.base}/api/v1/login", json={"apiKey": KEYS[role]["key"]}, timeout=10)
        response.raise_for_status()
        return str(response.json()["result"]["token"])

    def headers(self, role: str = "write") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}


def start_gateway(platform: PlatformInfo, run_dir: Path, **extra: str) -> RunningGateway:
    (port,) = free_ports(1)
    process = ManagedProcess(
        name="gateway", argv=[str(Path(sys.executable).parent / "onair-gateway")], run_dir=run_dir,
        env={**platform.env(), "ONAIR_GATEWAY_HOST": "127.0.0.1", "ONAIR_GATEWAY_PORT": str(port),
             "ONAIR_GATEWAY_JWT_SECRET": JWT_SECRET, "ONAIR_GATEWAY_API_KEYS": json.dumps(list(KEYS.values())),
             "ONAIR_GATEWAY_CORS_ORIGINS": "https://console.example.com",
             "ONAIR_GATEWAY_STREAM_KEY_SEED": STREAM_KEY_SEED, **extra})
    process.start()
    gateway = RunningGateway(process, f"http://127.0.0.1:{port}")

    def ready() -> bool:
        if process.running_pid() is None:
            raise AssertionError(f"the gateway exited:\n{process.log_tail()}")
        try:
            return requests.get(f"{gateway.base}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, 60, "the gateway's /readyz")
    return gateway


@dataclass
class Project:
    id: str
    namespace: str
    base: str  # /api/v1/projects/<id>

    def url(self, gateway: RunningGateway, suffix: str = "") -> str:
        return f"{gateway.base}{self.base}{suffix}"


def make_project(kube: client.ApiClient, namespace: str, gateway: RunningGateway, project_id: str | None = None,
                 template: bool = True) -> Project:
    project_id = project_id or str(uuid.uuid4())
    client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": {"onair.dev/project-id": project_id}}})
    if template:
        client.CustomObjectsApi(kube).create_namespaced_custom_object("onair.dev", "v1alpha1", namespace,
                                                                      "jobtemplates", TEMPLATE)
    project = Project(project_id, namespace, f"/api/v1/projects/{project_id}")
    headers = gateway.headers("read")
    wait_until(lambda: requests.get(project.url(gateway, "/jobtemplates"), headers=headers, timeout=5).json()
               .get("result") not in (None, []) or not template, 30, f"the gateway to see project {project_id}")
    return project


def custom(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def get_cr(kube: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    found: Any = custom(kube).get_namespaced_custom_object("onair.dev", "v1alpha1", namespace, plural,
                                                                      name)
    return found
