#!/usr/bin/env bash
# Prints the bin directory of a Go at least as new as the wrapper modules' `go` line: the machine's
# own if it is new enough, else the toolchain from the Go module proxy (what GOTOOLCHAIN=auto would
# fetch; Debian's golang-go is too old to know that), cached under $ONAIR_CACHE/go-<version>.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${ONAIR_CACHE:-$HOME/.cache/onair}"
want="$(awk '$1 == "go" {print $2; exit}' "$here/kubernetes/go.mod")"
have=""
if command -v go >/dev/null; then
  have="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || true)"; have="${have#go}"
  if [[ -n "$have" && "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" == "$want" ]]; then
    dirname "$(command -v go)"; exit 0
  fi
fi
dir="$cache/go-$want"
if [[ ! -x "$dir/bin/go" ]]; then
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) arch="$(uname -m)" ;; esac
  proxy="${GOPROXY:-https://proxy.golang.org}"; proxy="${proxy%%[,|]*}"
  [[ "$proxy" == http* ]] || proxy="https://proxy.golang.org"
  url="$proxy/golang.org/toolchain/@v/v0.0.1-go$want.linux-$arch.zip"
  echo "[ensure-go] Go $want from $url (this machine has ${have:-no Go})" >&2
  python3 - "$url" "$dir" <<'PY'
import io, pathlib, shutil, sys, urllib.request, zipfile
url, target = sys.argv[1], pathlib.Path(sys.argv[2])
partial = target.with_name(target.name + ".tmp")
shutil.rmtree(partial, ignore_errors=True)
with urllib.request.urlopen(url, timeout=600) as response:
    archive = zipfile.ZipFile(io.BytesIO(response.read()))
for info in archive.infolist():
    parts = info.filename.split("/", 2)  # golang.org/toolchain@v0.0.1-go<version>.<os>-<arch>/<path>
    if len(parts) < 3 or not parts[2] or info.is_dir():
        continue
    path = partial / parts[2]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive.read(info))
    path.chmod((info.external_attr >> 16) & 0o777 or 0o644)
shutil.rmtree(target, ignore_errors=True)
partial.rename(target)
PY
fi
echo "$dir/bin"
