#!/usr/bin/env bash
# The README's test command: sets up a fresh machine (hack/bootstrap.sh), then lint, types and every test.
# Extra arguments go to pytest, e.g. `hack/test.sh -m unit` or `hack/test.sh tests/cluster -k kwok`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/hack/bootstrap.sh"
# shellcheck source=/dev/null
source "${ONAIR_VENV:-$root/.venv}/bin/activate"
echo "==> ruff" >&2
ruff check .
echo "==> mypy" >&2
mypy
echo "==> hadolint, shellcheck, helm lint, promtool" >&2
bash "$root/hack/lint.sh"
echo "==> pytest" >&2
exec pytest "$@"
