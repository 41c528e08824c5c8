"""A worker registered with the xds_worker module becomes routable without touching Envoy,
and the registry survives a daemon restart and a reinstall (upgrade) by the xds role."""

import os
import pathlib
import subprocess

import pytest
import requests
from conftest import XDS_API, envoy_identity, reached, run_module, wait_for_backend

W3 = {"id": "w3", "host": "127.0.0.1", "port": 18103}


@pytest.fixture
def w3_registered(api_token):
    args = {"api_url": XDS_API, "token": api_token, **W3}
    result = run_module("dhops.envoy.xds_worker", {**args, "state": "present"})
    yield result
    removed = run_module("dhops.envoy.xds_worker", {**args, "state": "absent"})
    assert not removed.get("failed"), removed


def test_added_worker_becomes_routable_without_touching_envoy(envoy_host, front_door, api_token):
    before = envoy_identity(envoy_host)
    assert reached(front_door, "/worker/w3/x") == "web_api_service"
    args = {"api_url": XDS_API, "token": api_token, **W3}

    added = run_module("dhops.envoy.xds_worker", {**args, "state": "present"})
    try:
        assert not added.get("failed"), added
        assert added["changed"] is True
        again = run_module("dhops.envoy.xds_worker", {**args, "state": "present"})
        assert again["changed"] is False, again
        assert wait_for_backend(front_door, "/worker/w3/x", "w3") == "w3"
        assert reached(front_door, "/worker/w1/x") == "w1"
        assert envoy_identity(envoy_host) == before
    finally:
        removed = run_module("dhops.envoy.xds_worker", {**args, "state": "absent"})
    assert removed["changed"] is True, removed
    assert wait_for_backend(front_door, "/worker/w3/x", "web_api_service") == "web_api_service"


def test_registry_survives_a_daemon_restart(xds_host, front_door, api_token, w3_registered):
    assert not w3_registered.get("failed"), w3_registered
    assert wait_for_backend(front_door, "/worker/w3/", "w3") == "w3"
    export = (
        "runuser -u dhxds -- /opt/dhxds/venv/bin/dhxds state export --config /etc/dhxds/config.yml"
    )
    assert '"w3"' in xds_host.check_output(export)
    assert xds_host.run("systemctl restart dhxds").rc == 0
    headers = {"Authorization": f"Bearer {api_token}"}
    listed = requests.get(f"{XDS_API}/v1/workers/w3", headers=headers, timeout=10)
    assert listed.status_code == 200
    assert listed.json()["port"] == 18103
    assert wait_for_backend(front_door, "/worker/w3/", "w3") == "w3"
    assert reached(front_door, "/worker/w10/") == "w10"


def test_unreachable_api_fails_clearly(api_token):
    result = run_module(
        "dhops.envoy.xds_worker",
        {"api_url": "http://127.0.0.1:18109", "token": api_token, **W3, "state": "present"},
    )
    assert result.get("failed") is True
    assert "127.0.0.1:18109" in result["msg"]


def test_registry_survives_a_reinstall_by_the_role(xds_host, front_door, api_token, w3_registered):
    """Forget which source is installed, so the role reinstalls dhxds exactly as it does when
    the daemon's source changed (an upgrade), and restarts it."""
    assert not w3_registered.get("failed"), w3_registered
    pid_before = xds_host.run("systemctl show -p MainPID --value dhxds").stdout.strip()
    assert xds_host.run("rm /opt/dhxds/installed-source.sha256").rc == 0
    site = pathlib.Path(__file__).resolve().parents[3] / "playbooks" / "site.yml"

    run = subprocess.run(
        [
            "ansible-playbook",
            str(site),
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "--limit",
            "dh-xds",
        ],
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 0, run.stdout[-3000:]
    assert "RUNNING HANDLER [dhops.envoy.xds : Restart dhxds]" in run.stdout
    assert xds_host.run("systemctl show -p MainPID --value dhxds").stdout.strip() != pid_before
    assert xds_host.file("/opt/dhxds/installed-source.sha256").exists
    headers = {"Authorization": f"Bearer {api_token}"}
    kept = requests.get(f"{XDS_API}/v1/workers/w3", headers=headers, timeout=10)
    assert kept.status_code == 200, kept.text
    assert wait_for_backend(front_door, "/worker/w3/", "w3") == "w3"
