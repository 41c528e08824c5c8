#!/usr/bin/env bash
# Lint every shell script of the repository with shellcheck: files named *.sh and files whose first
# line is a sh/bash shebang (scripts/test, scripts/bootstrap, ...), tracked or new.
# Settings (sourced files are followed) are in .shellcheckrc at the repository root.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$DHOPS_REPO_ROOT"
command -v shellcheck >/dev/null \
  || die "shellcheck is missing: apt-get install shellcheck (scripts/bootstrap installs it)"

files=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  case "$f" in
    *.sh) files+=("$f") ;;
    *) head -n 1 "$f" 2>/dev/null | grep -qE '^#!(/usr)?/bin/(env )?(ba)?sh\b' && files+=("$f") ;;
  esac
done < <(git ls-files -z --cached --others --exclude-standard)
log "shellcheck $(shellcheck --version | sed -n 's/^version: //p') on ${#files[@]} files"
shellcheck "${files[@]}"
