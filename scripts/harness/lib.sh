# shellcheck shell=bash
# Shared settings for the harness scripts (sourced, not run).
# The cache outlives clones so a second run reuses the image inputs and Envoy binaries.
DHOPS_CACHE="${DHOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dhops-envoy}"
DHOPS_BASE_IMAGE="${DHOPS_BASE_IMAGE:-dhops/debian12-systemd:latest}"
# shellcheck disable=SC2034  # used by the scripts that source this file
DHOPS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
log() { printf '[harness] %s\n' "$*" >&2; }
die() { printf '[harness] ERROR: %s\n' "$*" >&2; exit 1; }
