"""The envoy role's package method ends with a pinned, held Envoy or fails before installing:
the pin each platform gets, and the clear preflight failures when it cannot be written. Runs
the role's preflight on the controller with the platform's facts given (no package repository
is reachable here)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

PLAYBOOK = """
- name: The envoy role's preflight for the package method
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Preflight
      ansible.builtin.include_role:
        name: dhops.envoy.envoy
        tasks_from: preflight
        public: true
    - name: Show the pin
      ansible.builtin.debug:
        msg: "pin={{ _envoy_package_pin }}"
"""


def preflight(tmp_path: pathlib.Path, os_family: str, **variables) -> tuple[int, str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    extra = {
        "ansible_facts": {"os_family": os_family, "distribution_major_version": "9"},
        "envoy_install_method": "package",
        "envoy_xds_hosts": ["127.0.0.1"],
        "envoy_tls_enabled": False,
        **variables,
    }
    done = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(extra)],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        },
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("os_family", "variables", "pin"),
    [
        ("Debian", {}, "hold"),
        # No repository file of ours to put exclude= into: a dnf versionlock instead.
        ("RedHat", {}, "versionlock"),
        ("RedHat", {"envoy_package_repo_manage": True, "envoy_package_repo_url": "x"}, "exclude"),
        ("RedHat", {"envoy_package_pin": "versionlock"}, "versionlock"),
        ("Debian", {"envoy_package_pin": "none"}, "none"),
    ],
)
def test_every_platform_gets_a_pin_it_can_write(tmp_path, os_family, variables, pin):
    rc, output = preflight(tmp_path, os_family, **variables)
    assert rc == 0, output
    assert f'"msg": "pin={pin}"' in output, output


@pytest.mark.parametrize(
    ("os_family", "variables", "message"),
    [
        # The old silent no-op: exclude= only exists in the repository file the role writes.
        ("RedHat", {"envoy_package_pin": "exclude"}, "needs envoy_package_repo_manage=true"),
        ("RedHat", {"envoy_package_pin": "hold"}, "Allowed here: exclude, versionlock, none"),
        ("Debian", {"envoy_package_pin": "versionlock"}, "Allowed here: hold, none"),
        ("Debian", {"envoy_package_version": ""}, "cannot pin Envoy"),
    ],
)
def test_a_pin_that_cannot_be_written_fails_before_installing(
    tmp_path, os_family, variables, message
):
    rc, output = preflight(tmp_path, os_family, **variables)
    assert rc != 0, output
    assert "Nothing was installed" in output, output
    assert message in " ".join(output.split()), output
