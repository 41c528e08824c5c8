"""The built tarball is what users install: it must install, ship the daemon's source,
leave test-only content out, and make roles, modules and playbooks work by FQCN."""

import json
import os
import pathlib
import subprocess
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(*cmd, env=None, cwd=None):
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    run("ansible-galaxy", "collection", "build", "--output-path", str(out), str(ROOT))
    (built,) = out.glob("dhops-envoy-*.tar.gz")
    return built


@pytest.fixture(scope="module")
def installed(tarball, tmp_path_factory):
    """Environment that sees only the installed collection, not the checkout."""
    dest = tmp_path_factory.mktemp("collections")
    run("ansible-galaxy", "collection", "install", "--force", "-p", str(dest), str(tarball))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(dest), ANSIBLE_ROLES_PATH=str(dest))
    return dest / "ansible_collections" / "dhops" / "envoy", env


def test_tarball_ships_daemon_source_and_leaves_tests_out(tarball):
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for shipped in (
        "dhxds/pyproject.toml",
        "roles/envoy/tasks/main.yml",
        "roles/xds/tasks/main.yml",
        "plugins/modules/deephaven_property.py",
        "plugins/modules/xds_worker.py",
        "playbooks/site.yml",
        "playbooks/upgrade.yml",
    ):
        assert shipped in names, f"{shipped} missing from {tarball.name}"
    leaked = sorted(n for n in names if n.split("/")[0] in {"tests", "molecule", "scripts", ".ci"})
    assert not leaked, f"test-only content in the tarball: {leaked[:5]}"


def test_modules_documented_by_fqcn(installed):
    env = installed[1]
    for module in ("dhops.envoy.deephaven_property", "dhops.envoy.xds_worker"):
        assert module in run("ansible-doc", "-t", "module", module, env=env)


def test_roles_document_their_arguments(installed):
    env = installed[1]
    for role in ("dhops.envoy.envoy", "dhops.envoy.xds", "dhops.envoy.web_api_service"):
        doc = json.loads(run("ansible-doc", "-t", "role", "--json", role, env=env))
        entry_points = doc[role]["entry_points"]
        assert entry_points["main"]["options"], f"{role} documents no variables"


def test_playbooks_parse_by_fqcn(installed, tmp_path):
    env = installed[1]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n"
        "    envoy: {hosts: {e1: {ansible_connection: local}}}\n"
        "    xds: {hosts: {x1: {ansible_connection: local}}}\n"
        "    web_api_service: {hosts: {w1: {ansible_connection: local}}}\n"
    )
    for playbook in ("dhops.envoy.site", "dhops.envoy.upgrade"):
        run("ansible-playbook", "--syntax-check", "-i", str(inventory), playbook, env=env)


def test_installed_module_edits_a_property_file(installed, tmp_path):
    env = installed[1]
    prop = tmp_path / "iris-environment.prop"
    prop.write_text("# Deephaven\nfoo=bar\n")
    args = f"path={prop} scope=service.name=web_api_service key=envoy.xds.port value=8124"
    run("ansible", "localhost", "-m", "dhops.envoy.deephaven_property", "-a", args, env=env)
    text = prop.read_text()
    assert text.startswith("# Deephaven\nfoo=bar\n")
    assert "[service.name=web_api_service] {" in text and "envoy.xds.port=8124" in text
