"""The package method ends with a pinned, held Envoy, and a rollback reinstalls the exact
package version string recorded at activation (1.36.4-1), not envoy_version (1.36.4, which
would match the newer revision 1.36.4-2 in the repository)."""

import json
import os
import pathlib
import subprocess

import pytest

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
ADMIN = "http://127.0.0.1:6001"


def run_role(entry_point="main", extra_vars=None):
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not ephemeral:
        pytest.fail("run through `molecule test -s package`")
    variables = {"envoy_role_test_entry_point": entry_point, **(extra_vars or {})}
    cmd = ["ansible-playbook", "-i", f"{ephemeral}/inventory", str(SCENARIO / "role.yml")]
    cmd += ["-e", json.dumps(variables)]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def installed(host) -> tuple[str, str]:
    """(version string, selection status) of the envoy package."""
    out = host.check_output("dpkg-query --show --showformat='${Version} ${Status}' envoy")
    version, _sep, status = out.partition(" ")
    return version, status


def running_version(host) -> str:
    return json.loads(host.check_output(f"curl -sf {ADMIN}/server_info"))["version"]


def recorded(host, name) -> str:
    return host.file(f"/etc/envoy/.{name}-package-version").content_string.strip()


def test_converged_package_is_held_at_the_exact_version(host):
    assert installed(host) == ("1.36.4-1", "hold ok installed")
    assert host.check_output("apt-mark showhold").split() == ["envoy"]
    assert recorded(host, "active") == "1.36.4-1"
    assert "/1.36.4/" in running_version(host)
    assert "path=/usr/bin/envoy " in host.service("envoy").systemd_properties["ExecStart"]


def test_upgrade_then_rollback_reinstalls_the_recorded_string(host):
    upgraded = run_role("main", {"envoy_version": "1.40.0", "envoy_package_version": "1.40.0"})
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    # X.Y.Z picks any revision of that upstream version; the exact string is what gets recorded.
    assert installed(host) == ("1.40.0-1", "hold ok installed")
    assert (recorded(host, "active"), recorded(host, "previous")) == ("1.40.0-1", "1.36.4-1")
    assert "/1.40.0/" in running_version(host)

    rolled_back = run_role("rollback", {"envoy_version": "1.40.0"})
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    assert installed(host) == ("1.36.4-1", "hold ok installed")  # not 1.36.4-2
    assert (recorded(host, "active"), recorded(host, "previous")) == ("1.36.4-1", "1.40.0-1")
    assert "/1.36.4/" in running_version(host)
    assert host.file("/etc/envoy/.active-version").content_string.strip() == "1.36.4"
