"""playbooks/inventory/example.yml works with both playbooks: it parses, and the upgrade's
requirements (the health_check filter it drains hosts through) accept its Envoy hosts, as the
README says. The hosts are example names: the requirements are read from the inventory
without contacting them (connection local)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "playbooks" / "inventory" / "example.yml"
PLAY = """
- name: The upgrade's requirements for every Envoy host of the example inventory
  hosts: envoy
  gather_facts: false
  tasks:
    - name: Requirements
      ansible.builtin.include_role:
        name: dhops.envoy.upgrade
        tasks_from: requirements
"""


def ansible_playbook(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    return subprocess.run(
        ["ansible-playbook", "-i", str(INVENTORY), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("playbook", ["site.yml", "upgrade.yml"])
def test_example_inventory_parses_with_the_playbooks(playbook):
    done = ansible_playbook("--syntax-check", str(ROOT / "playbooks" / playbook))
    assert done.returncode == 0, done.stdout + done.stderr


def run_requirements(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    play = tmp_path / "requirements.yml"
    play.write_text(PLAY)
    local = ["-e", "ansible_connection=local", "-e", "ansible_become=false"]
    return ansible_playbook(str(play), *local, *extra)


def test_upgrade_requirements_accept_the_example_inventory(tmp_path):
    done = run_requirements(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "envoy-1.example.com" in output and "envoy-2.example.com" in output
    assert "failed=0" in output


def test_upgrade_requirements_refuse_a_host_without_the_health_check(tmp_path):
    done = run_requirements(tmp_path, "-e", "envoy_health_check_enabled=false")
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0, output
    assert "envoy_health_check_enabled is false on envoy-1.example.com" in output
    # ... unless the operator accepts failed requests
    accepted = run_requirements(
        tmp_path,
        "-e",
        "envoy_health_check_enabled=false",
        "-e",
        "upgrade_require_health_check=false",
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
