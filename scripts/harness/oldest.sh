#!/usr/bin/env bash
# Run a command with the oldest supported ansible-core (requirements-oldest.txt) first on PATH:
#   scripts/harness/oldest.sh ansible --version
#   scripts/harness/oldest.sh scripts/harness/sanity.sh
#   scripts/harness/oldest.sh molecule test -s envoy
# The venv (.cache/venv-oldest) is built by scripts/bootstrap.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
venv="$DHOPS_REPO_ROOT/.cache/venv-oldest"
[ -x "$venv/bin/ansible" ] || die "no $venv: run scripts/bootstrap"
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
exec "$@"
