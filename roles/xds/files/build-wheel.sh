#!/usr/bin/env bash
# Build the dhxds wheel on the controller:  build-wheel.sh PYTHON SOURCE OUTDIR [PIP ARGS...]
# Builds from a copy (the source may be read-only in an installed collection, and an in-tree
# build leaves build/ behind) with fixed timestamps, so the same source gives the same bytes.
# Prints the wheel's path.
set -euo pipefail
python="$1" source="$2" out="$3"
shift 3
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$source" "$work/src"
rm -rf "$work/src/build" "$work/src/tests" "$work"/src/src/*.egg-info
SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel --quiet --disable-pip-version-check \
  --no-deps --wheel-dir "$work/dist" "$@" "$work/src" >"$work/log" 2>&1 \
  || { cat "$work/log" >&2; echo "building the dhxds wheel from $source failed" >&2; exit 1; }
mkdir -p "$out"
wheel="$(ls "$work"/dist/dhxds-*.whl)"
cp "$wheel" "$out/"
echo "$out/$(basename "$wheel")"
