#!/usr/bin/env bash
# The README's main command: set-up on a fresh machine, then the demo (platform, operator, gateway,
# a LiveJob fed by a test pattern). Arguments go to hack/demo.py (e.g. --seconds 60).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/hack/bootstrap.sh"
# shellcheck source=/dev/null
source "${ONAIR_VENV:-$root/.venv}/bin/activate"
PATH="$("$root/hack/build/install-kubectl-helm.sh"):$PATH"
export PATH
exec python "$root/hack/demo.py" "$@"
