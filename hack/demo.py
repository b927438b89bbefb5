"""The README's main job: the local platform (or the cluster KUBECONFIG points at), the operator and
the gateway as processes, a demo LiveJob fed by a generated test pattern, and where to play it.

    hack/demo.sh            (does the set-up first, then runs this)
    Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

from localplatform.platform import LocalPlatform, PlatformInfo  # noqa: E402
from localplatform.processes import ManagedProcess, free_ports, stop_process_group  # noqa: E402

NAMESPACE = "onair-demo"
PROJECT_ID = "8d6f1a52-4c1e-4f0e-9b7a-2f3c5d9e1a01"
OPERATOR_NAMESPACE = "onair-system"
TEMPLATE = {
    "apiVersion": "onair.dev/v1alpha1", "kind": "JobTemplate",
    "metadata": {"name": "demo-ladder", "namespace": OPERATOR_NAMESPACE},
    "spec": {"id": 1, "name": "720p ladder", "default": True, "segmentDurationSeconds": 2, "playlistWindow": 6,
             "renditions": [
                 {"name": "720p", "width": 1280, "height": 720, "fps": 30, "videoBitrate": 2_500_000},
                 {"name": "480p", "width": 854, "height": 480, "fps": 30, "videoBitrate": 1_200_000},
                 {"name": "360p", "width": 640, "height": 360, "fps": 30, "videoBitrate": 700_000}]},
}


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def apply(obj: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(obj))


def cluster_reachable() -> bool:
    if not os.environ.get("KUBECONFIG"):
        return False
    return subprocess.run(["kubectl", "get", "--raw", "/readyz"], capture_output=True, timeout=20).returncode == 0


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def job_status() -> dict[str, Any]:
    out = kubectl("get", "livejob", "demo", "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(out).get("status", {}) if out else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="onair-demo-"))
    platform: LocalPlatform | None = None
    processes: list[ManagedProcess] = []
    try:
        if cluster_reachable():
            say(f"using the cluster in KUBECONFIG={os.environ['KUBECONFIG']}")
            info = None
        else:
            say("starting the local platform (first run builds Kubernetes from the Go module proxy: ~15 min)")
            platform = LocalPlatform(ROOT / ".local" / "platform")
            info = platform.up()
            os.environ.update(info.env())
        run(info, run_dir, processes, args.seconds)
    except KeyboardInterrupt:
        say("stopping")
    finally:
        if platform is None and processes:
            # Someone's cluster: the demo LiveJob goes while its operator still runs (it stops the encoder
            # Pod), and then its namespace. The CRDs and the JobTemplate stay for the next run.
            say(f"deleting the demo LiveJob and namespace {NAMESPACE} from the cluster")
            kubectl("delete", "livejob", "demo", "-n", NAMESPACE, "--ignore-not-found", "--timeout=60s", check=False)
            kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
        for process in reversed(processes):
            pid = process.running_pid()
            if pid is not None:
                stop_process_group(pid, grace_seconds=20)
        if platform is not None:
            platform.down()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def run(info: PlatformInfo | None, run_dir: Path, processes: list[ManagedProcess], seconds: float) -> None:
    bin_dir = Path(sys.executable).parent
    say("installing the CRDs and the demo JobTemplate")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/livejobs.onair.dev",
            "crd/jobtemplates.onair.dev", "crd/recordjobs.onair.dev")
    for namespace, labels in ((OPERATOR_NAMESPACE, {}), (NAMESPACE, {"onair.dev/project-id": PROJECT_ID})):
        apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
    apply(TEMPLATE)
    s3_endpoint = info.s3_endpoint if info else os.environ.get("ONAIR_S3_ENDPOINT", "")
    apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "onair-s3-credentials", "namespace": NAMESPACE},
           "stringData": {"AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
                          "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "")}})

    operator_ports = free_ports(2)
    stream_key_seed = secrets.token_urlsafe(32)  # shared, as the chart shares one Secret
    operator = ManagedProcess("operator", [str(bin_dir / "onair-operator")], run_dir, env={
        "ONAIR_STANDALONE": "true", "ONAIR_NAMESPACE": OPERATOR_NAMESPACE, "ONAIR_LISTEN_HOST": "127.0.0.1",
        "ONAIR_HEALTH_PORT": str(operator_ports[0]), "ONAIR_METRICS_PORT": str(operator_ports[1]),
        "ONAIR_INGEST_ADDRESS": "pod-ip" if info else "service",
        "ONAIR_ENCODER_COMMAND": json.dumps([str(bin_dir / "onair-encoder")] if info else ["onair-encoder"]),
        "ONAIR_S3_ENDPOINT": s3_endpoint, "ONAIR_WEBHOOK_SECRET": secrets.token_hex(16),
        "ONAIR_STREAM_KEY_SEED": stream_key_seed,
    })
    api_key = "demo-" + secrets.token_hex(8)
    gateway_port = free_ports(1)[0]
    gateway = ManagedProcess("gateway", [str(bin_dir / "onair-gateway")], run_dir, env={
        "ONAIR_GATEWAY_HOST": "127.0.0.1", "ONAIR_GATEWAY_PORT": str(gateway_port),
        "ONAIR_GATEWAY_JWT_SECRET": secrets.token_urlsafe(32), "ONAIR_GATEWAY_STREAM_KEY_SEED": stream_key_seed,
        "ONAIR_GATEWAY_API_KEYS": json.dumps([{"name": "demo", "key": api_key, "projects": [PROJECT_ID],
                                               "role": "write"}]),
    })
    for process in (operator, gateway):
        say(f"starting the {process.name} (log: {process.log_file})")
        process.start()
        processes.append(process)
    wait_for("the operator", lambda: _http_ok(f"http://127.0.0.1:{operator_ports[0]}/healthz"), 60)
    wait_for("the gateway", lambda: _http_ok(f"http://127.0.0.1:{gateway_port}/healthz"), 60)

    say("creating the demo LiveJob (RTMP in, a 3-rendition HLS ladder out)")
    apply({"apiVersion": "onair.dev/v1alpha1", "kind": "LiveJob",
           "metadata": {"name": "demo", "namespace": NAMESPACE, "labels": {"onair.dev/project-id": PROJECT_ID}},
           "spec": {"jobTemplateId": 1, "description": "onair demo: test pattern",
                    "input": {"serverType": "RTMP", "inputClass": "Standard"},
                    "destination": {"bucket": info.s3_bucket if info else "onair", "path": "live/demo"}}})
    status = wait_for("the encoder to listen (WaitingForInput)",
                      lambda: (s := job_status()).get("phase") == "WaitingForInput" and s.get("streamKeySecret") and s,
                      180)
    key = subprocess.run(["kubectl", "get", "secret", status["streamKeySecret"], "-n", NAMESPACE, "-o",
                          "jsonpath={.data.streamKey}"], capture_output=True, text=True, check=True).stdout
    import base64

    ingest = status["urls"]["rtmpServer"] + base64.b64decode(key).decode()
    say(f"publishing a test pattern to {status['urls']['rtmpServer']}<stream key>")
    publisher = ManagedProcess("publisher", [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-f", "flv", ingest,
    ], run_dir)
    publisher.start()
    processes.append(publisher)
    status = wait_for("the job to go Live", lambda: (s := job_status()).get("phase") == "Live" and s, 120)
    master = status["urls"].get("storageMasterFile")
    # What a player does first: fetch the master playlist, without credentials.
    wait_for("the master playlist to be readable", lambda: _http_ok(master), 60)
    say("LIVE. Play the HLS ladder (any HLS player, e.g. ffplay, VLC, hls.js):")
    print(f"    {master}")
    for name, url in sorted(status["urls"].get("outputManifests", {}).items()):
        print(f"    {name:>5}: {url}")
    if status["urls"].get("webSocketConnection"):
        print(f"    live preview (MPEG-TS over WebSocket, e.g. mpegts.js): {status['urls']['webSocketConnection']}")
    print(f"\n    REST gateway: http://127.0.0.1:{gateway_port}  (API key: {api_key})")
    base = f"http://127.0.0.1:{gateway_port}"
    print(f"      curl -s -X POST {base}/api/v1/login -H 'Content-Type: application/json' \\")
    print(f"           -d '{{\"apiKey\": \"{api_key}\"}}'   # result.token is the Bearer token")
    print(f"      curl -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/projects/{PROJECT_ID}/livejobs")
    if info is not None:
        print(f"    kubectl: export KUBECONFIG={info.kubeconfig}; kubectl get onair -A")
    print("\n    Ctrl-C stops everything.", flush=True)
    deadline = time.monotonic() + seconds if seconds else None
    while deadline is None or time.monotonic() < deadline:
        time.sleep(1)
        if publisher.running_pid() is None:
            raise RuntimeError(f"the test-pattern publisher stopped:\n{publisher.log_tail()}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
