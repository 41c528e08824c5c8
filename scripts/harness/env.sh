# shellcheck shell=bash
# Source me: the environment every harness command, test and molecule run uses.
#   source scripts/harness/env.sh
_dhops_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export DHOPS_REPO_ROOT="$_dhops_root"
export DHOPS_CACHE="${DHOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dhops-envoy}"
export DHOPS_BASE_IMAGE="${DHOPS_BASE_IMAGE:-dhops/debian12-systemd:latest}"
export PATH="$_dhops_root/.venv/bin:$PATH"
# The checkout is exposed as ansible_collections/dhops/envoy so roles, modules and
# playbooks resolve by FQCN exactly as from an installed collection.
export ANSIBLE_COLLECTIONS_PATH="$_dhops_root/.cache/collections"
export ANSIBLE_ROLES_PATH="$_dhops_root/roles"
export ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}"
export PY_COLORS="${PY_COLORS:-0}"
unset _dhops_root
