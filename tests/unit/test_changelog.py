"""CHANGELOG.rst is what antsibull-changelog generates from changelogs/changelog.yaml.

Release process (docs/design.md, "Releasing"): fragments in changelogs/fragments/, then
`antsibull-changelog release` (version from galaxy.yml) writes both files."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_changelog_rst_is_generated_from_changelog_yaml(tmp_path):
    shutil.copy(ROOT / "galaxy.yml", tmp_path)
    shutil.copytree(ROOT / "changelogs", tmp_path / "changelogs")
    result = subprocess.run(
        ["antsibull-changelog", "generate"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    expected = (tmp_path / "CHANGELOG.rst").read_text()
    assert (ROOT / "CHANGELOG.rst").read_text() == expected, (
        "CHANGELOG.rst is out of date: run `antsibull-changelog generate`"
    )


def test_fragments_lint():
    result = subprocess.run(
        ["antsibull-changelog", "lint"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
