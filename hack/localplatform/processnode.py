"""A dev-only node that runs the containers of the Pods bound to it as local processes.

It stands in for a kubelet on a machine without a container runtime: it registers a Node, keeps its
Lease fresh, runs each container's command with the Pod's environment (values, Secrets, ConfigMaps,
the downward API), and writes phase, readiness, restarts and exit codes back to the Pod status. Each
Pod gets its own loopback address as its Pod IP, so two Pods can listen on the same port. Images are
not pulled: a container must name its command, and that command must exist on this machine. Nothing is
mounted either: in place of the kubelet's file at the container's terminationMessagePath, each container
gets a file of its own named in ONAIR_TERMINATION_MESSAGE_PATH, read back into terminated.message.

A real cluster (kind, any cloud) runs the same Pods as containers; nothing in onair depends on this.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from base64 import b64decode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("processnode")
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
MERGE_PATCH = "application/merge-patch+json"
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones kept, $$ escapes a $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


class LoopbackAddresses:
    """Hands out 127.1.x.y, one per Pod, and takes them back when the Pod goes."""

    def __init__(self) -> None:
        self._free = (str(ip) for ip in ipaddress.ip_network("127.1.0.0/16").hosts())
        self._returned: list[str] = []
        self._lock = threading.Lock()

    def take(self) -> str:
        with self._lock:
            return self._returned.pop() if self._returned else next(self._free)

    def give_back(self, ip: str) -> None:
        with self._lock:
            self._returned.append(ip)


class ConfigError(Exception):
    """The Pod refers to a Secret, ConfigMap or key that is not there (CreateContainerConfigError)."""


def termination_message_file(pod_directory: Path, container: str) -> Path:
    return pod_directory / f"{container}.termination-log"


def termination_message(path: Path) -> str:
    """What a container left in its termination-message file, cut as the kubelet cuts it (4096 bytes)."""
    try:
        return path.read_bytes()[:4096].decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass
class ContainerRun:
    name: str
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    ready: bool = False
    restart_count: int = 0
    last_exit: dict[str, Any] | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    next_start: float = 0.0


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    ip: str
    spec: dict[str, Any]
    metadata: dict[str, Any]
    directory: Path
    containers: dict[str, ContainerRun] = field(default_factory=dict)
    started_at: str = field(default_factory=now)
    terminating: bool = False
    finished: bool = False
    last_status: dict[str, Any] | None = None
    stamped_conditions: list[dict[str, str]] = field(default_factory=list)


class ProcessNode:
    def __init__(self, api_client: client.ApiClient, node_name: str, run_dir: Path) -> None:
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.node_name = node_name
        self.run_dir = run_dir
        self.addresses = LoopbackAddresses()
        self.pods: dict[str, PodRun] = {}
        self.lock = threading.RLock()
        self.stopping = threading.Event()

    # -- the Node ----------------------------------------------------------------------------------

    def register(self) -> None:
        cpus = str(os.cpu_count() or 1)
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 1024}Ki"
        body = {
            "metadata": {"name": self.node_name, "labels": {
                "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "onair.dev/process-node": "true"}},
        }
        try:
            self.core.create_node(body)  # type: ignore[arg-type]  # the client takes plain dicts too
        except ApiException as error:
            if error.status != 409:
                raise
        capacity = {"cpu": cpus, "memory": memory, "pods": "110"}
        self.core.patch_node_status(self.node_name, {"status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "conditions": self._node_conditions(),
            "nodeInfo": {"kubeletVersion": "onair-process-node", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "process://local",
                         "kernelVersion": os.uname().release, "osImage": "local processes",
                         "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        }})

    def _node_conditions(self) -> list[dict[str, str]]:
        stamp = now()
        conditions = [{"type": "Ready", "status": "True", "reason": "ProcessNodeReady",
                       "message": "the process runner is up"}]
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            conditions.append({"type": kind, "status": "False", "reason": f"No{kind}", "message": ""})
        for condition in conditions:
            condition["lastHeartbeatTime"] = stamp
            condition["lastTransitionTime"] = stamp
        return conditions

    def heartbeat_forever(self) -> None:
        """Renew the node Lease, so the node lifecycle controller keeps the node Ready."""
        beats = 0
        while not self.stopping.is_set():
            try:
                self._renew_lease()
                beats += 1
                if beats % 6 == 0:
                    self.core.patch_node_status(self.node_name, {"status": {"conditions": self._node_conditions()}})
            except Exception:
                log.exception("heartbeat failed")
            self.stopping.wait(HEARTBEAT_SECONDS)

    def _renew_lease(self) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": stamp}}
        try:
            self.coordination.patch_namespaced_lease(self.node_name, "kube-node-lease", body)
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)  # type: ignore[arg-type]

    # -- Pods --------------------------------------------------------------------------------------

    def watch_pods_forever(self) -> None:
        selector = f"spec.nodeName={self.node_name}"
        while not self.stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                seen = set()
                for pod in listing.items:
                    raw = self.core.api_client.sanitize_for_serialization(pod)
                    seen.add(raw["metadata"]["uid"])
                    self.on_pod(raw)
                for uid in set(self.pods) - seen:
                    self.on_pod_gone(uid)
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces, field_selector=selector,
                    resource_version=listing.metadata.resource_version if listing.metadata else None,
                    timeout_seconds=60,
                    _preload_content=False, allow_watch_bookmarks=False,
                )
                for event in stream:
                    if self.stopping.is_set():
                        break
                    raw = event["raw_object"]
                    if event["type"] == "DELETED":
                        self.on_pod_gone(raw["metadata"]["uid"])
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.on_pod(raw)
            except Exception:
                if not self.stopping.is_set():
                    log.exception("pod watch failed; listing again")
                    self.stopping.wait(1)

    def on_pod(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            run = self.pods.get(uid)
            if run is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    return
                namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
                run = PodRun(
                    namespace=namespace, name=name, uid=uid, ip=self.addresses.take(), spec=pod["spec"],
                    metadata=pod["metadata"], directory=self.run_dir / "pods" / f"{namespace}_{name}_{uid[:8]}",
                )
                run.directory.mkdir(parents=True, exist_ok=True)
                self.pods[uid] = run
                log.info("pod %s/%s: taking it, ip %s", run.namespace, run.name, run.ip)
                threading.Thread(target=self._supervise, args=(run,), daemon=True,
                                 name=f"pod-{run.name}").start()
            run.metadata = pod["metadata"]
            if pod["metadata"].get("deletionTimestamp") and not run.terminating:
                run.terminating = True

    def on_pod_gone(self, uid: str) -> None:
        with self.lock:
            run = self.pods.get(uid)
            if run is not None:
                run.terminating = True
                run.finished = True

    def _supervise(self, run: PodRun) -> None:
        """One thread per Pod: start, probe, restart and stop its containers; report its status."""
        try:
            self._run_pod(run)
        except Exception:
            log.exception("pod %s/%s: supervisor failed", run.namespace, run.name)
        finally:
            for container in run.containers.values():
                self._stop_container(container, grace=0)
            with self.lock:
                self.pods.pop(run.uid, None)
            self.addresses.give_back(run.ip)

    def _run_pod(self, run: PodRun) -> None:
        for spec in run.spec.get("containers", []):
            run.containers[spec["name"]] = ContainerRun(spec["name"])
        last_probe: dict[str, float] = {}
        policy = run.spec.get("restartPolicy", "Always")
        while not self.stopping.is_set():
            if run.terminating:
                self._terminate(run)
                return
            for spec in run.spec.get("containers", []):
                container = run.containers[spec["name"]]
                self._keep_running(run, spec, container, policy)
                self._probe(run, spec, container, last_probe)
            self._report(run)
            if self._all_done(run, policy):
                run.finished = True
                self._report(run)
                # Finished Pods keep their status; the loop ends until the Pod is deleted.
                while not (run.terminating or self.stopping.is_set()):
                    time.sleep(0.2)
                if run.terminating and not self.stopping.is_set():
                    self._delete_pod_object(run)
                return
            time.sleep(0.2)

    def _keep_running(self, run: PodRun, spec: dict[str, Any], container: ContainerRun, policy: str) -> None:
        if container.process is not None:
            code = container.process.poll()
            if code is None:
                return
            finished_at = now()
            container.last_exit = {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": container.started_at, "finishedAt": finished_at,
            }
            message = termination_message(termination_message_file(run.directory, container.name))
            if message:
                container.last_exit["message"] = message
            container.process = None
            container.ready = False
            log.info("pod %s/%s container %s exited %s", run.namespace, run.name, container.name, code)
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if not restart:
                return
            container.restart_count += 1
            # The kubelet's crash-loop back-off: 10 s doubling to 5 min; shorter here for a dev loop.
            container.next_start = time.monotonic() + min(1.0 * 2 ** (container.restart_count - 1), 60.0)
            container.waiting_reason = "CrashLoopBackOff"
            container.waiting_message = f"back-off restarting failed container {container.name}"
            return
        if container.last_exit is not None and container.waiting_reason != "CrashLoopBackOff" and \
                container.waiting_reason != "CreateContainerConfigError":
            return
        if time.monotonic() < container.next_start:
            return
        try:
            argv, env, cwd = self._container_command(run, spec)
        except ConfigError as error:
            container.waiting_reason = "CreateContainerConfigError"
            container.waiting_message = str(error)
            container.next_start = time.monotonic() + 1
            return
        log_path = run.directory / f"{container.name}.log"
        try:
            with open(log_path, "ab") as log_file:
                container.process = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
        except OSError as error:
            container.waiting_reason = "RunContainerError"
            container.waiting_message = str(error)
            container.next_start = time.monotonic() + 2
            return
        container.started_at = now()
        container.waiting_reason = container.waiting_message = None
        log.info("pod %s/%s container %s started: %s", run.namespace, run.name, container.name, argv)

    def _container_command(self, run: PodRun, spec: dict[str, Any]) -> tuple[list[str], dict[str, str], str]:
        if not spec.get("command"):
            raise ConfigError(f"container {spec['name']}: the process node needs an explicit command "
                              f"(it does not read image {spec.get('image')!r})")
        env = self._container_env(run, spec)
        message_file = termination_message_file(run.directory, spec["name"])
        message_file.unlink(missing_ok=True)  # a restarted container's message is its own
        env["ONAIR_TERMINATION_MESSAGE_PATH"] = str(message_file)
        argv = [expand_vars(part, env) for part in [*spec["command"], *spec.get("args", [])]]
        resolved = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
        cwd = spec.get("workingDir") or str(run.directory)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        return [resolved, *argv[1:]], env, cwd

    def _container_env(self, run: PodRun, spec: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(run.directory),
            "HOSTNAME": run.name,
            "KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "",
        }
        for source in spec.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                data = self._secret_data(run.namespace, source["secretRef"]["name"],
                                         source["secretRef"].get("optional", False))
            else:
                data = self._configmap_data(run.namespace, source["configMapRef"]["name"],
                                            source["configMapRef"].get("optional", False))
            env.update({prefix + k: v for k, v in data.items()})
        for item in spec.get("env", []):
            if "valueFrom" not in item:
                env[item["name"]] = expand_vars(item.get("value", ""), env)
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = self._secret_data(run.namespace, ref["name"], ref.get("optional", False)).get(ref["key"])
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = self._configmap_data(run.namespace, ref["name"], ref.get("optional", False)).get(ref["key"])
            elif "fieldRef" in source:
                value = self._field_value(run, source["fieldRef"]["fieldPath"])
            else:
                raise ConfigError(f"env {item['name']}: unsupported valueFrom {sorted(source)}")
            if value is None:
                if ref.get("optional", False):
                    continue
                raise ConfigError(f"env {item['name']}: key {ref.get('key')!r} not found in {ref.get('name')!r}")
            env[item["name"]] = value
        return env

    def _secret_data(self, namespace: str, name: str, optional: bool) -> dict[str, str]:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise ConfigError(f'secret "{name}" not found') from error
        return {k: b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _configmap_data(self, namespace: str, name: str, optional: bool) -> dict[str, str]:
        try:
            configmap = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status == 404 and optional:
                return {}
            raise ConfigError(f'configmap "{name}" not found') from error
        return dict(configmap.data or {})

    def _field_value(self, run: PodRun, path: str) -> str:
        simple = {
            "metadata.name": run.name, "metadata.namespace": run.namespace, "metadata.uid": run.uid,
            "spec.nodeName": self.node_name, "spec.serviceAccountName": run.spec.get("serviceAccountName", ""),
            "status.podIP": run.ip, "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            return str(run.metadata.get(match.group(1), {}).get(match.group(2), ""))
        raise ConfigError(f"unsupported fieldRef {path}")

    def _probe(self, run: PodRun, spec: dict[str, Any], container: ContainerRun,
               last_probe: dict[str, float]) -> None:
        probe = spec.get("readinessProbe")
        if container.process is None:
            container.ready = False
            return
        if probe is None:
            container.ready = True
            return
        # Until first ready, probe every second, so a Pod does not wait a whole period to become Ready.
        period = max(1, probe.get("periodSeconds", 10)) if container.ready else 1
        if time.monotonic() - last_probe.get(container.name, 0.0) < period:
            return
        last_probe[container.name] = time.monotonic()
        container.ready = self._probe_once(run, spec, probe)

    def _probe_once(self, run: PodRun, spec: dict[str, Any], probe: dict[str, Any]) -> bool:
        timeout = probe.get("timeoutSeconds", 1)

        def port_number(port: int | str) -> int:
            if isinstance(port, int):
                return port
            for declared in spec.get("ports", []):
                if declared.get("name") == port:
                    return int(declared["containerPort"])
            return int(port)

        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                url = f"http://{run.ip}:{port_number(get['port'])}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= response.status < 400
            if "tcpSocket" in probe:
                with socket.create_connection((run.ip, port_number(probe["tcpSocket"]["port"])), timeout=timeout):
                    return True
            if "exec" in probe:
                return subprocess.run(probe["exec"]["command"], timeout=timeout, check=False).returncode == 0
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return False
        return True

    def _all_done(self, run: PodRun, policy: str) -> bool:
        if policy == "Always":
            return False
        for container in run.containers.values():
            if container.process is not None or container.last_exit is None:
                return False
            if policy == "OnFailure" and container.last_exit["exitCode"] != 0:
                return False
        return True

    def _report(self, run: PodRun) -> None:
        statuses = []
        for spec in run.spec.get("containers", []):
            container = run.containers[spec["name"]]
            status: dict[str, Any] = {
                "name": container.name, "image": spec.get("image", ""), "imageID": "",
                "ready": container.ready, "restartCount": container.restart_count,
                "started": container.process is not None,
            }
            if container.process is not None:
                status["state"] = {"running": {"startedAt": container.started_at}}
                status["containerID"] = f"process://{container.process.pid}"
            elif container.waiting_reason is not None or container.last_exit is None:
                status["state"] = {"waiting": {"reason": container.waiting_reason or "ContainerCreating",
                                               "message": container.waiting_message or ""}}
            else:
                status["state"] = {"terminated": container.last_exit}
            if container.last_exit is not None and "terminated" not in status["state"]:
                status["lastState"] = {"terminated": container.last_exit}
            statuses.append(status)
        all_ready = all(s["ready"] for s in statuses)
        if run.finished:
            failed = any(c.last_exit and c.last_exit["exitCode"] != 0 for c in run.containers.values())
            phase = "Failed" if failed else "Succeeded"
        elif any(s["state"].get("running") for s in statuses) or any(c.last_exit for c in run.containers.values()):
            phase = "Running"
        else:
            phase = "Pending"
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True" if all_ready else "False"},
            {"type": "Ready", "status": "True" if all_ready and not run.finished else "False"},
        ]
        status_body = {
            "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": run.ip, "podIPs": [{"ip": run.ip}], "startTime": run.started_at,
            "conditions": conditions, "containerStatuses": statuses,
        }
        if status_body == run.last_status:
            return
        previous = {c["type"]: c for c in run.stamped_conditions}
        stamped = []
        for condition in conditions:
            old = previous.get(condition["type"])
            kept = old["lastTransitionTime"] if old is not None and old["status"] == condition["status"] else None
            stamped.append({**condition, "lastTransitionTime": kept or now()})
        try:
            self.core.patch_namespaced_pod_status(
                run.name, run.namespace, {"status": {**status_body, "conditions": stamped}},
                _content_type=MERGE_PATCH,
            )
            run.last_status = status_body
            run.stamped_conditions = stamped
        except ApiException as error:
            if error.status == 404:
                run.terminating = run.finished = True
            else:
                log.warning("pod %s/%s: status update failed: %s %s", run.namespace, run.name, error.reason,
                            error.body)

    def _stop_container(self, container: ContainerRun, grace: float) -> None:
        process = container.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Children the container left in its group go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        container.process = None

    def _terminate(self, run: PodRun) -> None:
        grace = run.metadata.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = run.spec.get("terminationGracePeriodSeconds", 30)
        threads = [threading.Thread(target=self._stop_container, args=(c, float(grace)))
                   for c in run.containers.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not run.finished:
            self._delete_pod_object(run)

    def _delete_pod_object(self, run: PodRun) -> None:
        # As the kubelet does: once the containers are gone, remove the object for good.
        try:
            self.core.delete_namespaced_pod(
                run.name, run.namespace, grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": run.uid}),
            )
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("pod %s/%s: final delete failed: %s", run.namespace, run.name, error.reason)

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            runs = list(self.pods.values())
        for run in runs:
            for container in run.containers.values():
                self._stop_container(container, grace=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    api_client = config.new_client_from_config(args.kubeconfig)
    node = ProcessNode(api_client, args.node_name, args.run_dir)
    node.register()
    signal.signal(signal.SIGTERM, lambda *_: node.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: node.stopping.set())
    threading.Thread(target=node.heartbeat_forever, daemon=True, name="heartbeat").start()
    threading.Thread(target=node.watch_pods_forever, daemon=True, name="pods").start()
    node.stopping.wait()
    log.info("stopping: terminating every container")
    node.stop()


if __name__ == "__main__":
    main()
