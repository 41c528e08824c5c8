"""The roles' checks for an HA inventory (several dhxds replicas), read from the inventory
alone (connection local, nothing deployed): a multi-host `xds` group needs the etcd registry,
Envoys in front of several replicas need ADS, and the etcd settings default to group `etcd`."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
INVENTORY = """
all:
  vars:
    ansible_connection: local
    xds_web_api_service_host: 10.0.0.9
    envoy_tls_enabled: false
  children:
    etcd:
      hosts:
        ha-1.example: {dhops_address: 10.0.0.11}
        ha-2.example: {dhops_address: 10.0.0.12}
        ha-3.example: {dhops_address: "fd00::13", etcd_client_port: 2479}
    xds:
      hosts:
        ha-1.example:
        ha-2.example:
    envoy:
      hosts:
        ha-1.example:
        ha-2.example:
"""
PLAY = """
- name: The xds role's checks, then the daemon's state settings
  hosts: xds
  gather_facts: false
  tasks:
    - name: Preflight
      ansible.builtin.include_role:
        name: dhops.envoy.xds
        tasks_from: preflight
        public: true
    - name: Show the state settings
      ansible.builtin.debug:
        msg: "STATE {{ _xds_config.state | to_json | b64encode }} END"
      run_once: true

- name: The envoy role's checks
  hosts: envoy
  gather_facts: false
  tasks:
    - name: Preflight
      ansible.builtin.include_role:
        name: dhops.envoy.envoy
        tasks_from: preflight
"""


def run(tmp_path, **extra) -> tuple[int, str]:
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    (tmp_path / "play.yml").write_text(PLAY)
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    variables = json.dumps({"xds_state_backend": "etcd", **extra})
    done = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(tmp_path / "inventory.yml"),
            str(tmp_path / "play.yml"),
            "-e",
            variables,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_replicas_on_etcd_pass_and_the_endpoints_come_from_group_etcd(tmp_path):
    rc, output = run(tmp_path)
    assert rc == 0, output
    state = json.loads(base64.b64decode(output.split("STATE ", 1)[1].split(" END", 1)[0]))
    assert state == {
        "backend": "etcd",
        "etcd": {
            "endpoints": [
                "http://10.0.0.11:2379",
                "http://10.0.0.12:2379",
                "http://[fd00::13]:2479",
            ],
            "prefix": "/dhxds/",
        },
    }


def test_two_replicas_without_etcd_are_refused_with_the_fix(tmp_path):
    rc, output = run(tmp_path, xds_state_backend="sqlite")
    assert rc != 0
    assert "2 dhxds hosts (ha-1.example, ha-2.example) need a shared registry" in output
    assert "Set xds_state_backend=etcd" in output


def test_envoys_in_front_of_two_replicas_must_use_ads(tmp_path):
    rc, output = run(tmp_path, envoy_xds_use_ads=False)
    assert rc != 0
    assert "envoy_xds_use_ads=false with 2 dhxds hosts (10.0.0.11, 10.0.0.12)" in output
    assert "separate CDS and RDS streams may reach different replicas" in output


def test_half_given_tls_settings_are_refused(tmp_path):
    rc, output = run(tmp_path, xds_etcd_cert_file="files/dhxds.pem")
    assert rc != 0 and "xds_etcd_cert_file and xds_etcd_key_file go together" in output
    rc, output = run(tmp_path, xds_tls_cert_file="files/server.pem")
    assert rc != 0 and "xds_tls_cert_file, xds_tls_key_file and xds_tls_client_ca_file go" in output
    rc, output = run(tmp_path, envoy_xds_tls_ca_file="files/ca.pem")
    assert rc != 0 and "envoy_xds_tls_ca_file, envoy_xds_tls_cert_file and" in output
