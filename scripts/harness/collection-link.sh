#!/usr/bin/env bash
# Expose this checkout as ansible_collections/dhops/envoy (see env.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
link="$DHOPS_REPO_ROOT/.cache/collections/ansible_collections/dhops/envoy"
mkdir -p "$(dirname "$link")"
[ "$(readlink "$link" 2>/dev/null)" = "$DHOPS_REPO_ROOT" ] || ln -sfn "$DHOPS_REPO_ROOT" "$link"
