"""One declared support range: meta/runtime.yml, every role's meta and the ansible-core
versions CI tests with (requirements-oldest.txt: the oldest, requirements-dev.txt: the newest)."""

from __future__ import annotations

import pathlib
import re

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _requires_ansible() -> SpecifierSet:
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    return SpecifierSet(runtime["requires_ansible"])


def _lower_bound(spec: SpecifierSet) -> Version:
    (lower,) = [s for s in spec if s.operator == ">="]
    return Version(lower.version)


def _pin(requirements: str, package: str) -> Version:
    text = (ROOT / requirements).read_text()
    match = re.search(rf"^{re.escape(package)}==(\S+)", text, re.MULTILINE)
    assert match, f"{requirements} pins no {package}"
    return Version(match.group(1))


def test_roles_declare_the_collections_minimum():
    lower = _lower_bound(_requires_ansible())
    for meta in sorted(ROOT.glob("roles/*/meta/main.yml")):
        declared = yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"]
        assert Version(str(declared)).release[:2] == lower.release[:2], (
            f"{meta.relative_to(ROOT)}: min_ansible_version {declared} but meta/runtime.yml "
            f"requires_ansible {_requires_ansible()}"
        )


def test_ci_tests_the_oldest_and_the_newest_ansible_core():
    spec = _requires_ansible()
    oldest = _pin("requirements-oldest.txt", "ansible-core")
    newest = _pin("requirements-dev.txt", "ansible-core")
    assert oldest in spec and newest in spec
    # The oldest venv runs the lowest supported minor release (its newest patch).
    assert oldest.release[:2] == _lower_bound(spec).release[:2]
    assert newest > oldest
