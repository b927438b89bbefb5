#!/usr/bin/env bash
# Builds the local platform's Go binaries from the Go module proxy, once per version.
# Output: $ONAIR_CACHE/bin/<component>-<version>/ (default ~/.cache/onair). Prints the bin dirs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${ONAIR_CACHE:-$HOME/.cache/onair}"
PATH="$("$here/ensure-go.sh"):$PATH"
export GOTOOLCHAIN=auto  # a module that needs a newer Go than ensure-go.sh chose (kwok) gets it from the proxy too
export GOFLAGS="-mod=mod"
export GOCACHE="${GOCACHE:-$cache/go-build}"
export GOPATH="${GOPATH:-$(go env GOPATH)}"

module_version() { # module_version <go.mod> <module path>
  awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$1"
}

log() { printf '[build-binaries] %s\n' "$*" >&2; }

build_kubernetes() {
  local version dir ldflags
  version="$(module_version "$here/kubernetes/go.mod" k8s.io/kubernetes)"
  dir="$cache/bin/kubernetes-$version"
  if [[ -x "$dir/kube-apiserver" && -x "$dir/kube-controller-manager" && -x "$dir/kube-scheduler" ]]; then
    echo "$dir"; return
  fi
  mkdir -p "$dir.tmp"
  local minor="${version#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    log "building $cmd $version (first run only; several minutes on 2 cores)"
    (cd "$here/kubernetes" && go build -trimpath -ldflags "$ldflags" -o "$dir.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  echo "$dir"
}

build_etcd() {
  local version dir
  version="$(module_version "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)"
  dir="$cache/bin/etcd-$version"
  if [[ -x "$dir/etcd" ]]; then echo "$dir"; return; fi
  mkdir -p "$dir.tmp"
  log "building etcd $version"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$dir.tmp/etcd" .)
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  echo "$dir"
}

build_kwok() {
  local version dir
  version="$(cat "$here/kwok.version")"
  dir="$cache/bin/kwok-$version"
  if [[ -x "$dir/kwok" ]]; then echo "$dir"; return; fi
  log "building kwok $version"
  GOBIN="$dir.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$version"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  echo "$dir"
}

case "${1:-all}" in
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  all) build_etcd; build_kwok; build_kubernetes ;;
  *) echo "usage: $0 [all|kubernetes|etcd|kwok]" >&2; exit 2 ;;
esac
