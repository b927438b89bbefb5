"""The real local platform: etcd, kube-apiserver (RBAC on), controller-manager, scheduler, kwok, the
process node and SeaweedFS, run as local processes on free ports. No Docker needed.

`up()` returns once the API server is ready, the nodes are Ready and the S3 bucket exists; `down()`
stops every process (TERM, wait, KILL) and checks that no port stays bound.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from localplatform import seaweedfs
from localplatform.binaries import Binaries, ensure_binaries
from localplatform.pki import ClientIdentity, LocalPKI
from localplatform.processes import (
    ManagedProcess,
    free_ports,
    port_is_listening,
    running_pid_from_file,
    stop_process_group,
)

PROCESS_NODE_NAME = "onair-process-node"
KWOK_NODE_PREFIX = "kwok-node-"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"
# Simulated Pods' IPs: Kubernetes refuses loopback addresses in Endpoints and EndpointSlices (its
# endpoint controllers would retry and post Warning events for every Service, forever), and a private
# range could reach real hosts of the LAN. 240.0.0.0/4 is reserved: valid for Kubernetes, owned by nobody.
KWOK_POD_CIDR = "240.2.0.0/16"
KWOK_STAGES = Path(__file__).resolve().parent / "kwok-stages.yaml"
S3_BUCKET = "onair"
S3_REGION = "us-east-1"

ADMIN = ClientIdentity("admin", "onair-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")
# kwok and the process node play kubelets for many nodes; a dev-only stand-in, so they run as admins.
KWOK = ClientIdentity("kwok", "onair-kwok", ("system:masters",))
PROCESS_NODE = ClientIdentity("process-node", "onair-process-node", ("system:masters",))
IDENTITIES = [ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK, PROCESS_NODE]

Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    print(f"[localplatform] {message}", file=sys.stderr, flush=True)


@dataclass
class PlatformInfo:
    """What a client needs to use the running platform; written to <state>/platform.json."""

    state_dir: str
    kubeconfig: str
    apiserver_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    s3_region: str
    process_node: str
    kwok_nodes: list[str]
    ports: dict[str, int]
    bin_dirs: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Environment for a process that talks to the platform (kubectl, the operator, the tests)."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "ONAIR_S3_ENDPOINT": self.s3_endpoint,
            "ONAIR_S3_BUCKET": self.s3_bucket,
            "ONAIR_S3_REGION": self.s3_region,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "PATH": os.pathsep.join([*self.bin_dirs, os.environ.get("PATH", "")]),
        }


class LocalPlatform:
    def __init__(self, state_dir: Path, kwok_nodes: int = 2, progress: Progress = _stderr_progress) -> None:
        self.state_dir = state_dir.resolve()
        self.kwok_node_count = kwok_nodes
        self.progress = progress
        self.pki = LocalPKI(self.state_dir / "pki")
        self._started: dict[str, ManagedProcess] = {}

    @property
    def info_file(self) -> Path:
        return self.state_dir / "platform.json"

    def info(self) -> PlatformInfo | None:
        try:
            return PlatformInfo(**json.loads(self.info_file.read_text()))
        except FileNotFoundError:
            return None

    # -- start -------------------------------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> PlatformInfo:
        existing = self.info()
        if existing is not None and self._api_ready(existing):
            self.progress(f"already running: KUBECONFIG={existing.kubeconfig}")
            return existing
        if existing is not None:
            self.down()
        started = time.monotonic()
        self.progress("preparing binaries (built once per version; cached under ~/.cache/onair)")
        binaries = ensure_binaries()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Every start is a fresh cluster: old etcd membership (with old ports) would keep etcd from serving.
        for data in ("etcd", "seaweedfs", "process-node", "logs"):
            shutil.rmtree(self.state_dir / data, ignore_errors=True)
        self.pki.ensure(IDENTITIES)
        names = ["etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok",
                 "s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc"]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        apiserver_url = f"https://127.0.0.1:{ports['apiserver']}"
        for identity in IDENTITIES:
            self._write_kubeconfig(identity, apiserver_url)
        info = PlatformInfo(
            state_dir=str(self.state_dir),
            kubeconfig=str(self._kubeconfig_path(ADMIN)),
            apiserver_url=apiserver_url,
            s3_endpoint=f"http://127.0.0.1:{ports['s3']}",
            s3_access_key="onair-" + secrets.token_hex(4),
            s3_secret_key=secrets.token_urlsafe(24),
            s3_bucket=S3_BUCKET,
            s3_region=S3_REGION,
            process_node=PROCESS_NODE_NAME,
            kwok_nodes=[f"{KWOK_NODE_PREFIX}{i}" for i in range(self.kwok_node_count)],
            ports=ports,
            bin_dirs=[str(d) for d in binaries.directories],
        )
        try:
            self._start_etcd(binaries, ports)
            self._wait(lambda: port_is_listening(ports["etcd"]), "etcd", timeout, "etcd")
            self._start_apiserver(binaries, ports)
            self._wait(lambda: self._api_ready(info), "kube-apiserver /readyz", timeout, "kube-apiserver")
            self._start_controllers(binaries, ports)
            self._start_seaweedfs(binaries, ports, info)
            self._start_process_node(info)
            self._create_kwok_nodes(info)
            self._wait(lambda: self._nodes_ready(info), "nodes Ready", timeout, "kwok")
            self._wait(lambda: self._default_service_account(info), "default ServiceAccount", timeout,
                       "kube-controller-manager")
            self._wait(lambda: self._s3_bucket_ready(info), "S3 bucket", timeout, "seaweedfs")
        except BaseException:
            self.progress("start-up failed; stopping what was started")
            self.down()
            raise
        self.info_file.write_text(json.dumps(asdict(info), indent=2))
        self.progress(f"ready in {time.monotonic() - started:.1f}s: KUBECONFIG={info.kubeconfig}")
        return info

    def _wait(self, check: Callable[[], bool], what: str, timeout: float, log_of: str) -> None:
        self.progress(f"waiting for {what}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            proc = self._process(log_of, [])
            if proc.running_pid() is None and proc.pid_file.exists():
                raise RuntimeError(f"{log_of} exited while waiting for {what} ({proc.diagnose()}):\n{proc.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready after {timeout}s:\n{self._process(log_of, []).log_tail()}")

    def _process(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        """The process of that name started by this object, or a new one to start (argv given)."""
        if not argv and name in self._started:
            return self._started[name]
        process = ManagedProcess(name=name, argv=argv, run_dir=self.state_dir, env=env)
        if argv:
            self._started[name] = process
        return process

    def _start_etcd(self, binaries: Binaries, ports: dict[str, int]) -> None:
        self.progress("starting etcd")
        self._process("etcd", [
            str(binaries.etcd),
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
            f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
            f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
            f"--initial-cluster=default=http://127.0.0.1:{ports['etcd_peer']}",
            "--quota-backend-bytes=8589934592",
            # A throwaway dev store: durability costs fsyncs the tests don't need.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]).start()

    def _start_apiserver(self, binaries: Binaries, ports: dict[str, int]) -> None:
        self.progress("starting kube-apiserver (authorization: RBAC)")
        pki = self.pki.path
        self._process("kube-apiserver", [
            str(binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki('apiserver.crt')}",
            f"--tls-private-key-file={pki('apiserver.key')}",
            f"--client-ca-file={pki('ca.crt')}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki('service-account.pub')}",
            f"--service-account-signing-key-file={pki('service-account.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--v=1",
        ]).start()

    def _start_controllers(self, binaries: Binaries, ports: dict[str, int]) -> None:
        self.progress("starting kube-controller-manager, kube-scheduler and kwok")
        pki = self.pki.path
        cm_kubeconfig = str(self._kubeconfig_path(CONTROLLER_MANAGER))
        self._process("kube-controller-manager", [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={cm_kubeconfig}",
            f"--authentication-kubeconfig={cm_kubeconfig}",
            f"--authorization-kubeconfig={cm_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller_manager']}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki('service-account.key')}",
            f"--root-ca-file={pki('ca.crt')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Quicker garbage collection and node health than the production defaults.
            "--concurrent-gc-syncs=10",
            "--kube-api-qps=200", "--kube-api-burst=400",
            "--node-monitor-grace-period=40s",
            "--v=1",
        ]).start()
        sched_kubeconfig = str(self._kubeconfig_path(SCHEDULER))
        self._process("kube-scheduler", [
            str(binaries.kube_scheduler),
            f"--kubeconfig={sched_kubeconfig}",
            f"--authentication-kubeconfig={sched_kubeconfig}",
            f"--authorization-kubeconfig={sched_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
            # The default 50 QPS binds about 25 Pods a second: too slow for a thousand-job test.
            "--kube-api-qps=500", "--kube-api-burst=1000",
            "--v=1",
        ]).start()
        self._process("kwok", [
            str(binaries.kwok),
            f"--kubeconfig={self._kubeconfig_path(KWOK)}",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--manage-all-nodes=false",
            "--node-ip=127.0.0.1",
            f"--cidr={KWOK_POD_CIDR}",
            "--server-address=127.0.0.1:" + str(ports["kwok"]),
            "--node-lease-duration-seconds=40",
            f"--config={KWOK_STAGES}",
        ]).start()

    def _start_seaweedfs(self, binaries: Binaries, ports: dict[str, int], info: PlatformInfo) -> None:
        self.progress("starting SeaweedFS (S3)")
        data = self.state_dir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        s3_config = self.state_dir / "s3-identities.json"
        # Players fetch playlists and segments without credentials, as from a public bucket behind a CDN.
        seaweedfs.write_identities(s3_config, info.s3_access_key, info.s3_secret_key, public_read_bucket=S3_BUCKET)
        self._process("seaweedfs", seaweedfs.server_argv(binaries.weed, data, s3_config, {
            name: ports[name] for name in seaweedfs.PORT_NAMES})).start()

    def _start_process_node(self, info: PlatformInfo) -> None:
        self.progress(f"starting the process node {PROCESS_NODE_NAME}")
        self._process("process-node", [
            sys.executable, "-m", "localplatform.processnode",
            f"--kubeconfig={self._kubeconfig_path(PROCESS_NODE)}",
            f"--node-name={PROCESS_NODE_NAME}",
            f"--run-dir={self.state_dir / 'process-node'}",
        ], env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent),
                "PATH": os.pathsep.join([*info.bin_dirs, os.environ.get("PATH", "")])}).start()

    # -- the API, through the admin kubeconfig ----------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.path("ca.crt")))
        context.load_cert_chain(str(self.pki.path("admin.crt")), str(self.pki.path("admin.key")))
        return context

    def _api(self, info: PlatformInfo, method: str, path: str, body: object | None = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            info.apiserver_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=self._ssl_context(), timeout=5) as response:
            text = response.read().decode()
        return json.loads(text) if text.startswith("{") else text

    def _api_ready(self, info: PlatformInfo) -> bool:
        try:
            return self._api(info, "GET", "/readyz") == "ok"
        except (OSError, urllib.error.URLError, ssl.SSLError, json.JSONDecodeError):
            return False

    def _create_kwok_nodes(self, info: PlatformInfo) -> None:
        for name in info.kwok_nodes:
            node = {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                               "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/agent": ""},
                },
                # Only Pods that ask for simulated nodes land here; real work goes to the process node.
                "spec": {"taints": [{"key": KWOK_NODE_ANNOTATION, "value": "fake", "effect": "NoSchedule"}]},
                # Room for the 10,000-job benchmark on two nodes at the encoders' default requests
                # (500m CPU, 256Mi).
                "status": {"allocatable": {"cpu": "10000", "memory": "8Ti", "pods": "11000"},
                           "capacity": {"cpu": "10000", "memory": "8Ti", "pods": "11000"}},
            }
            try:
                self._api(info, "POST", "/api/v1/nodes", node)
            except urllib.error.HTTPError as error:
                if error.code != 409:
                    raise

    def _nodes_ready(self, info: PlatformInfo) -> bool:
        try:
            nodes = self._api(info, "GET", "/api/v1/nodes")
        except (OSError, urllib.error.URLError):
            return False
        assert isinstance(nodes, dict)
        ready = {
            n["metadata"]["name"]
            for n in nodes.get("items", [])
            for c in n.get("status", {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        }
        return {info.process_node, *info.kwok_nodes} <= ready

    def _default_service_account(self, info: PlatformInfo) -> bool:
        try:
            self._api(info, "GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return True
        except (OSError, urllib.error.URLError):
            return False

    def _s3_bucket_ready(self, info: PlatformInfo) -> bool:
        import boto3
        import botocore.exceptions

        client = boto3.client(
            "s3", endpoint_url=info.s3_endpoint, aws_access_key_id=info.s3_access_key,
            aws_secret_access_key=info.s3_secret_key, region_name=info.s3_region,
        )
        try:
            client.head_bucket(Bucket=info.s3_bucket)
            return True
        except botocore.exceptions.ClientError:
            try:
                client.create_bucket(Bucket=info.s3_bucket)
            except botocore.exceptions.ClientError:
                return False
            return True
        except (botocore.exceptions.BotoCoreError, OSError):
            return False

    def service_account_kubeconfig(self, info: PlatformInfo, namespace: str, account: str, path: Path,
                                   seconds: int = 7200) -> Path:
        """A kubeconfig holding a token of the ServiceAccount (what its Pod would have mounted), to run
        a component as it is deployed: with its own RBAC, not the platform's admin certificate."""
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": seconds}}
        granted = self._api(info, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request)
        assert isinstance(granted, dict)
        self._save_kubeconfig(path, info.apiserver_url, account, {"token": granted["status"]["token"]})
        return path

    def _kubeconfig_path(self, identity: ClientIdentity) -> Path:
        return self.state_dir / f"{identity.file_stem}.kubeconfig"

    def _write_kubeconfig(self, identity: ClientIdentity, server: str) -> None:
        pki = self.pki.path
        self._save_kubeconfig(self._kubeconfig_path(identity), server, identity.user, {
            "client-certificate": str(pki(f"{identity.file_stem}.crt")),
            "client-key": str(pki(f"{identity.file_stem}.key"))})

    def _save_kubeconfig(self, path: Path, server: str, user_name: str, credentials: dict[str, str]) -> None:
        """A kubeconfig for the platform's API server (trusting its CA) as one user, readable by us only."""
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "onair-local", "cluster": {
                "server": server, "certificate-authority": str(self.pki.path("ca.crt"))}}],
            "users": [{"name": user_name, "user": credentials}],
            "contexts": [{"name": "onair-local", "context": {"cluster": "onair-local", "user": user_name}}],
            "current-context": "onair-local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    # -- stop --------------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop in reverse order of start, so no controller logs errors about a vanished API server."""
        pid_dir = self.state_dir / "pids"
        order = ["process-node", "kwok", "kube-scheduler", "kube-controller-manager", "seaweedfs",
                 "kube-apiserver", "etcd"]
        known = {p.stem for p in pid_dir.glob("*.pid")} if pid_dir.exists() else set()
        for name in [*order, *sorted(known - set(order))]:
            pid_file = pid_dir / f"{name}.pid"
            started = self._started.pop(name, None)
            pid = started.running_pid() if started is not None else running_pid_from_file(pid_file)
            if pid is not None:
                self.progress(f"stopping {name}")
                stop_process_group(pid, grace_seconds=15 if name == "process-node" else 10)
            pid_file.unlink(missing_ok=True)
        info = self.info()
        if info is not None:
            still_bound = [name for name, port in info.ports.items() if port_is_listening(port)]
            if still_bound:
                self.progress(f"warning: ports still bound after stop: {still_bound}")
        self.info_file.unlink(missing_ok=True)
