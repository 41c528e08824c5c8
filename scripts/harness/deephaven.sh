#!/usr/bin/env bash
# Real Deephaven Community Core for the `deephaven` test stage and `scripts/demo --deephaven`:
# a Java runtime >= 17 (Debian's openjdk-17-jre-headless, installed when missing) and the
# pinned deephaven-server + pydeephaven wheels in .venv
# (tests/integration/deephaven/requirements.txt). Exits non-zero, saying why, when either
# cannot be installed - the stage then fails, it never passes without Deephaven.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$DHOPS_REPO_ROOT"
requirements=tests/integration/deephaven/requirements.txt
venv="${DHOPS_VENV:-.venv}"   # the tests pass the environment they run in

java_major() {  # the feature version of `java` on PATH (0 when there is none)
  command -v java >/dev/null || { echo 0; return; }
  java -XshowSettings:properties -version 2>&1 \
    | awk -F'= ' '/java.specification.version/ {split($2, v, "."); print (v[1] == 1 ? v[2] : v[1]); exit}'
}

ensure_java() {
  local major
  major="$(java_major)"
  if [ "${major:-0}" -ge 17 ]; then
    log "java $major: $(command -v java)"
    return
  fi
  log "no Java >= 17 (found: ${major:-none}); apt-get install openjdk-17-jre-headless"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; } \
    || die "cannot install Java 17 (apt-get install openjdk-17-jre-headless failed); Deephaven needs it"
  major="$(java_major)"
  [ "${major:-0}" -ge 17 ] || die "openjdk-17-jre-headless installed, but \`java\` is not Java >= 17 (found ${major:-none})"
  log "java $major installed"
}

ensure_wheels() {
  local stamp="$venv/.deephaven.sha256"
  [ -x "$venv/bin/python" ] || die "$venv is missing: run scripts/bootstrap first"
  if sha256sum --quiet -c "$stamp" >/dev/null 2>&1 \
    && "$venv/bin/python" -c 'import deephaven_server, pydeephaven' 2>/dev/null; then
    log "deephaven wheels: up to date"
    return
  fi
  log "pip install -r $requirements into $venv (deephaven-server, pydeephaven; ~600 MB)"
  "$venv/bin/python" -m pip install -q -r requirements-dev.txt -r "$requirements" \
    || die "cannot install the Deephaven wheels ($requirements)"
  "$venv/bin/python" -c 'import deephaven_server, pydeephaven' \
    || die "the Deephaven wheels installed but do not import"
  sha256sum requirements-dev.txt "$requirements" >"$stamp"
}

started=$SECONDS
ensure_java
ensure_wheels
log "deephaven prerequisites: $((SECONDS - started)) s"
