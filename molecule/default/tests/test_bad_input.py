"""Bad input fails clearly and changes nothing: an inventory without an xds host, and a
malformed property file (caught by site.yml's dry run before any host is touched)."""

import os
import pathlib
import subprocess

import pytest
import yaml
from conftest import envoy_identity

SITE = pathlib.Path(__file__).resolve().parents[3] / "playbooks" / "site.yml"
BROKEN = "/root/broken-iris-environment.prop"
BROKEN_TEXT = "[service.name=web_api_service] {\n    Webapi.server.port=8123\n"


def site(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-playbook", str(SITE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"},
        check=False,
    )


def dhxds_pid(xds_host) -> str:
    return xds_host.run("systemctl show -p MainPID --value dhxds").stdout.strip()


def test_inventory_without_xds_host_fails_before_changing_anything(tmp_path, envoy_host, xds_host):
    docker = {"ansible_connection": "community.docker.docker"}
    inventory = tmp_path / "no-xds.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "envoy": {"hosts": {"dh-envoy": docker}},
                "web_api_service": {"hosts": {"dh-webapi": docker}},
            }
        )
    )
    before = envoy_identity(envoy_host), dhxds_pid(xds_host)

    run = site("-i", str(inventory))

    assert run.returncode != 0
    assert "one in group `xds`" in run.stdout + run.stderr, run.stdout + run.stderr
    assert "PLAY [Run Envoy" not in run.stdout
    assert (envoy_identity(envoy_host), dhxds_pid(xds_host)) == before


@pytest.fixture
def broken_property_file(webapi_host):
    webapi_host.run(f"printf %s '{BROKEN_TEXT}' > {BROKEN}")
    yield BROKEN
    webapi_host.run(f"rm -f {BROKEN}*")


def test_malformed_property_file_fails_before_changing_anything(
    broken_property_file, envoy_host, xds_host, webapi_host
):
    before = envoy_identity(envoy_host), dhxds_pid(xds_host)
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]

    run = site("-i", inventory, "-e", f"web_api_service_property_file={broken_property_file}")

    assert run.returncode != 0
    assert "is never closed" in run.stdout + run.stderr, run.stdout + run.stderr
    assert "PLAY [Run the dhxds control plane]" not in run.stdout
    assert webapi_host.file(broken_property_file).content_string == BROKEN_TEXT
    assert webapi_host.run(f"ls {broken_property_file}.*").rc != 0, "no backup of a failed edit"
    assert (envoy_identity(envoy_host), dhxds_pid(xds_host)) == before
