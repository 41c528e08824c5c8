#!/usr/bin/env bash
# ansible-test sanity on this checkout, without docker images and without
# ci-files.testing.ansible.com (neither is reachable here; PyPI is):
#   scripts/harness/sanity.sh [ansible-test sanity options, e.g. --test pylint]
# Runs with the ansible-test of the venv first on PATH (env.sh: .venv; the oldest supported
# ansible-core: PATH="$PWD/.venv-oldest/bin:$PATH"), on Python 3.11, in the virtual
# environments ansible-test builds itself for each test (pinned by ansible-test, from PyPI).
#
# Two things make that work offline:
# - ansible-test bootstraps pip into each of its venvs with a get-pip script it downloads from
#   ci-files.testing.ansible.com and keeps in ~/.ansible/test/cache/get_pip_<version>.py (its
#   error message says to place the script there by hand). We place an equivalent: the same
#   pip release as a wheel from PyPI, installing the same packages.
# - ansible-test needs the collection under ansible_collections/dhops/envoy and resolves the
#   working directory through symlinks, so it is pointed at the link from env.sh with
#   ANSIBLE_TEST_CONTENT_ROOT.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

python="$(command -v python3)"
content="$DHOPS_REPO_ROOT/.cache/collections/ansible_collections/dhops/envoy"
[ -e "$content" ] || "$DHOPS_REPO_ROOT/scripts/harness/collection-link.sh"

# The pip version this ansible-test bootstraps into its venvs.
pip_version="$("$python" - <<'PY'
import pathlib, re
import ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", src.read_text()).group(1))
PY
)"
wheels="$DHOPS_CACHE/pip"
wheel="$wheels/pip-$pip_version-py3-none-any.whl"
get_pip="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$wheel" ]; then
  log "downloading pip $pip_version for ansible-test's virtual environments"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "pip==$pip_version" \
    || die "could not download pip==$pip_version"
fi
if ! grep -qsF "$wheel" "$get_pip"; then
  mkdir -p "$(dirname "$get_pip")"
  cat >"$get_pip" <<EOF
# Written by dhops.envoy scripts/harness/sanity.sh: stands in for get-pip-$pip_version.py from
# ci-files.testing.ansible.com (not reachable). Like get-pip, it runs pip from its own wheel to
# install the requested packages (ansible-test asks for pip==$pip_version) into this Python.
import sys

sys.path.insert(0, "$wheel")
from pip._internal.cli.main import main  # noqa: E402

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", *args]))
EOF
fi

export ANSIBLE_TEST_CONTENT_ROOT="$content"
cd "$content"
exec ansible-test sanity --python 3.11 --color no "$@"
