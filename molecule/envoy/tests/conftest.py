"""Helpers for the envoy scenario: run the role the way a user does, read Envoy's admin API."""

import json
import os
import pathlib
import subprocess

import pytest

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
ADMIN = "http://127.0.0.1:9001"
LISTENER = "https://127.0.0.1:9443"


def _inventory() -> str:
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not ephemeral:
        pytest.fail("run through `molecule test -s envoy` (MOLECULE_EPHEMERAL_DIRECTORY unset)")
    return str(pathlib.Path(ephemeral) / "inventory")


@pytest.fixture(scope="session")
def run_role():
    """ansible-playbook of role.yml against the scenario's host; returns the CompletedProcess."""

    def run(entry_point="main", extra_vars=None, *args):
        variables = {"envoy_role_test_entry_point": entry_point, **(extra_vars or {})}
        cmd = ["ansible-playbook", "-i", _inventory(), str(SCENARIO / "role.yml")]
        cmd += ["-e", json.dumps(variables), *args]
        env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)

    return run


def admin_json(host, path):
    return json.loads(host.check_output(f"curl -sf {ADMIN}{path}"))


def envoy_pid(host):
    return host.check_output("systemctl show -p MainPID --value envoy")


def http_status(host, url, *curl_args):
    args = " ".join(curl_args)
    return host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {args} {url}")
