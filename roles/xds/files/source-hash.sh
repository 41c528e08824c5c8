#!/usr/bin/env bash
# Print one sha256 over the dhxds source tree (what goes into the wheel), so the role rebuilds
# and reinstalls only when the daemon's source changed:  source-hash.sh SOURCE
set -euo pipefail
cd "$1"
find . -type f ! -path './tests/*' ! -path './build/*' ! -path '*/__pycache__/*' \
  ! -path '*.egg-info/*' ! -path '*/.*' -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
