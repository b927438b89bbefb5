"""The local platform is a real Kubernetes: kubectl, CRD validation, watches, scheduling, GC, S3."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from localplatform.platform import LocalPlatform, PlatformInfo
from localplatform.processes import port_is_listening, running_pid_from_file
from waiting import wait_until

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.onair.dev}
spec:
  group: test.onair.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              color: {type: string, enum: [red, blue]}
"""


def widget(name: str, size: int) -> str:
    return json.dumps({"apiVersion": "test.onair.dev/v1", "kind": "Widget",
                       "metadata": {"name": name}, "spec": {"size": size, "color": "red"}})


def test_kubectl_applies_crd_and_rejects_bad_field_and_watches(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.test.onair.dev", "--timeout=30s")
    kubectl("apply", "-n", namespace, "-f", "-", input=widget("good", 3))

    refused = kubectl("apply", "-n", namespace, "-f", "-", input=widget("bad", 42), check=False)
    assert refused.returncode != 0
    assert "spec.size" in refused.stderr and "less than or equal to 10" in refused.stderr

    # --raw: the API's own list, whose resourceVersion is the collection's (kubectl get builds its own List).
    listing = json.loads(kubectl("get", "--raw", f"/apis/test.onair.dev/v1/namespaces/{namespace}/widgets").stdout)
    assert [item["metadata"]["name"] for item in listing["items"]] == ["good"]
    resource_version = listing["metadata"]["resourceVersion"]

    # A watch from that resourceVersion sees only what happened after it.
    watcher = subprocess.Popen(
        ["kubectl", "get", "--raw",
         # The server ends the watch after 30 s: a missing event fails the test instead of hanging it.
         f"/apis/test.onair.dev/v1/namespaces/{namespace}/widgets?watch=1&resourceVersion={resource_version}"
         "&timeoutSeconds=30"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        kubectl("apply", "-n", namespace, "-f", "-", input=widget("later", 5))
        assert watcher.stdout is not None
        line = watcher.stdout.readline()
        assert line, "the watch ended without an event"
        event = json.loads(line)
        assert event["type"] == "ADDED"
        assert event["object"]["metadata"]["name"] == "later"
    finally:
        watcher.kill()
        watcher.wait()


def pod_manifest(name: str, node: str, command: list[str], **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": node,
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": command, **extra}],
    }
    if node.startswith("kwok-"):
        spec["tolerations"] = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_pod_on_kwok_node_reaches_running(kube: client.ApiClient, namespace: str, platform: PlatformInfo) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, pod_manifest("sim", platform.kwok_nodes[0], ["sleep", "3600"]))
    pod = wait_until(lambda: _pod_if(core, namespace, "sim", lambda p: p.status.phase == "Running"), 30,
                     "the kwok Pod to be Running")
    assert pod.status.pod_ip


def test_scheduler_places_a_pod_on_a_kwok_node(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    manifest = pod_manifest("scheduled", "", ["sleep", "3600"])
    del manifest["spec"]["nodeName"]
    manifest["spec"]["nodeSelector"] = {"type": "kwok"}
    manifest["spec"]["tolerations"] = [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]
    core.create_namespaced_pod(namespace, manifest)
    pod = wait_until(lambda: _pod_if(core, namespace, "scheduled", lambda p: p.status.phase == "Running"), 30,
                     "the scheduled Pod to be Running")
    assert pod.spec.node_name.startswith("kwok-node-")


def test_process_node_runs_the_command_with_env_and_reports_exit_code(
    kube: client.ApiClient, namespace: str, platform: PlatformInfo, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}})
    out = tmp_path / "out.txt"
    script = f'echo "$GREETING $TOKEN $POD_NAME $POD_IP" > {out}; exit 3'
    core.create_namespaced_pod(namespace, pod_manifest(
        "worker", platform.process_node, ["sh", "-c", script],
        env=[{"name": "GREETING", "value": "hello"},
             {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
             {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
             {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    ))
    pod = wait_until(lambda: _pod_if(core, namespace, "worker", lambda p: p.status.phase == "Failed"), 30,
                     "the process Pod to finish")
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert out.read_text().split() == ["hello", "s3cr3t", "worker", pod.status.pod_ip]
    assert pod.status.pod_ip.startswith("127.")


def test_two_process_pods_listen_on_the_same_port(
    kube: client.ApiClient, namespace: str, platform: PlatformInfo
) -> None:
    core = client.CoreV1Api(kube)
    server = ["python3", "-m", "http.server", "8080", "--bind", "$(POD_IP)"]
    env = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    probe = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    for name in ("web-a", "web-b"):
        manifest = pod_manifest(name, platform.process_node, server, env=env, readinessProbe=probe,
                                ports=[{"containerPort": 8080}])
        manifest["spec"]["restartPolicy"] = "Always"
        core.create_namespaced_pod(namespace, manifest)
    ips = set()
    for name in ("web-a", "web-b"):
        pod = wait_until(lambda n=name: _pod_if(core, namespace, n, _ready), 30, f"{name} Ready")
        ips.add(pod.status.pod_ip)
        assert port_is_listening(8080, pod.status.pod_ip)
    assert len(ips) == 2


def test_deleting_an_owner_deletes_its_children(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    for i in range(3):
        core.create_namespaced_secret(namespace, {"metadata": {"name": f"child-{i}", "ownerReferences": [reference]}})
    core.delete_namespaced_config_map("owner", namespace)
    wait_until(lambda: not [s for s in core.list_namespaced_secret(namespace).items
                            if s.metadata.name.startswith("child-")],
               30, "garbage collection of the owned Secrets")


def test_s3_put_get_list(s3: Any, platform: PlatformInfo) -> None:
    prefix = f"test-{secrets.token_hex(4)}/"
    for i in range(3):
        s3.put_object(Bucket=platform.s3_bucket, Key=f"{prefix}seg{i}.ts", Body=b"x" * (i + 1),
                      ContentType="video/mp2t")
    got = s3.get_object(Bucket=platform.s3_bucket, Key=f"{prefix}seg2.ts")
    assert got["Body"].read() == b"xxx"
    assert got["ContentType"] == "video/mp2t"
    listing = s3.list_objects_v2(Bucket=platform.s3_bucket, Prefix=prefix)
    assert [o["Key"] for o in listing["Contents"]] == [f"{prefix}seg{i}.ts" for i in range(3)]


def test_a_second_platform_runs_beside_and_stops_without_leftovers(tmp_path: Path, platform: PlatformInfo) -> None:
    second = LocalPlatform(tmp_path / "second", kwok_nodes=1, progress=lambda _: None)
    info = second.up()
    assert info.apiserver_url != platform.apiserver_url
    pids = {pid_file.stem: running_pid_from_file(pid_file) for pid_file in (tmp_path / "second/pids").glob("*.pid")}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "seaweedfs",
            "process-node"} <= {name for name, pid in pids.items() if pid}
    second.down()
    alive = [name for name, pid in pids.items() if pid and Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert alive == []
    assert [name for name, port in info.ports.items() if port_is_listening(port)] == []


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _pod_if(core: client.CoreV1Api, namespace: str, name: str,
            predicate: Callable[[client.V1Pod], bool]) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, namespace)
    return pod if pod.status and predicate(pod) else None
