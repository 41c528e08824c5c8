#!/usr/bin/env bash
# Fill $DHOPS_CACHE/wheelhouse/ with dhxds and its runtime dependencies as wheels for the
# targets (CPython 3.11, manylinux x86_64), plus the build backend, so the xds role can
# install and build offline: containers here cannot reach the package index.
# Reused when present: dependencies are keyed by dhxds' dependency list and the pins in
# requirements-dev.txt; the dhxds wheel alone is rebuilt when the daemon's source changes.
# Also fills $DHOPS_CACHE/standin-wheels/ with the pure-Python HTTP/2 stack the molecule
# stand-in backends use to speak cleartext HTTP/2 (molecule/resources/standin).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

src="$DHOPS_REPO_ROOT/dhxds"
out="${1:-$DHOPS_CACHE/wheelhouse}"
python="${PYTHON:-$DHOPS_REPO_ROOT/.venv/bin/python}"
[ -f "$src/pyproject.toml" ] || die "no $src/pyproject.toml: the dhxds source is missing"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Target platform: Debian 12 ships CPython 3.11 and glibc 2.36.
target=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311
        --platform manylinux_2_36_x86_64 --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

# dhxds' declared dependencies (with its extras: the xds role installs dhxds[etcd] in etcd
# mode), and the repo's pins as constraints (extras cannot constrain).
"$python" - "$src/pyproject.toml" >"$work/requirements.txt" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
extras = [d for deps in project["project"].get("optional-dependencies", {}).values() for d in deps]
print("\n".join(project["project"]["dependencies"] + extras + project["build-system"]["requires"]))
PY
grep -v '\[' "$DHOPS_REPO_ROOT/requirements-dev.txt" | sed 's/#.*//' | grep . >"$work/constraints.txt"

deps_key="$(cat "$work/requirements.txt" "$work/constraints.txt" <(echo "${target[*]}") | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.deps-key" 2>/dev/null)" = "$deps_key" ]; then
  log "dependency wheels up to date ($deps_key), reused"
else
  log "downloading dependency wheels for cp311 manylinux x86_64"
  "$python" -m pip download --disable-pip-version-check "${target[@]}" \
    -r "$work/requirements.txt" -c "$work/constraints.txt" -d "$work/deps" >"$work/pip.log" 2>&1 \
    || { tail -20 "$work/pip.log" >&2; die "pip download of dhxds' dependencies failed"; }
  find "$out" -maxdepth 1 -name '*.whl' ! -name 'dhxds-*' -delete
  mv "$work"/deps/*.whl "$out"/
  echo "$deps_key" >"$out/.deps-key"
fi

# The daemon's own wheel, keyed by its source (pyproject + src/, not tests or build debris).
src_key="$(cd "$src" && find . -type f ! -path './tests/*' ! -path './build/*' \
  ! -path '*/__pycache__/*' ! -path '*.egg-info/*' | LC_ALL=C sort | xargs sha256sum \
  | sha256sum | cut -c1-16)"
if [ "$(cat "$out/.dhxds-key" 2>/dev/null)" = "$src_key" ] && ls "$out"/dhxds-*.whl >/dev/null 2>&1; then
  log "dhxds wheel up to date ($src_key), reused"
else
  log "building the dhxds wheel from $src"
  # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
  cp -r "$src" "$work/src"
  rm -rf "$work/src/build" "$work/src/tests"
  SOURCE_DATE_EPOCH=315532800 "$python" -m pip wheel --quiet --disable-pip-version-check \
    --no-deps --find-links "$out" -w "$work/dist" "$work/src" >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log" >&2; die "building the dhxds wheel failed"; }
  rm -f "$out"/dhxds-*.whl
  mv "$work"/dist/dhxds-*.whl "$out"/
  echo "$src_key" >"$out/.dhxds-key"
fi
standin_out="$DHOPS_CACHE/standin-wheels"
standin_pins=(h2==4.4.1 hpack==4.2.0 hyperframe==6.1.0)
if [ "$(cat "$standin_out/.key" 2>/dev/null)" != "${standin_pins[*]}" ]; then
  log "downloading the stand-ins' HTTP/2 wheels"
  rm -rf "$standin_out" && mkdir -p "$standin_out"
  "$python" -m pip download --disable-pip-version-check --only-binary=:all: --no-deps \
    -d "$standin_out" "${standin_pins[@]}" >"$work/standin.log" 2>&1 \
    || { tail -20 "$work/standin.log" >&2; die "pip download of ${standin_pins[*]} failed"; }
  echo "${standin_pins[*]}" >"$standin_out/.key"
fi
log "wheelhouse ready: $out ($(find "$out" -maxdepth 1 -name '*.whl' | wc -l) wheels)"
