"""Shared fixtures: the front door (Envoy's TLS listener on the host network) and the daemon."""

import json
import os
import pathlib
import subprocess
import time

import pytest
import requests
import testinfra

FRONT_DOOR = "https://127.0.0.1:8443"
XDS_API = "http://127.0.0.1:8125"
ENVOY_CERT = "/etc/envoy/tls/cert.pem"
TOKEN_FILE = "/etc/dhxds/api-token"


@pytest.fixture(scope="session")
def envoy_host():
    return testinfra.get_host("docker://dh-envoy")


@pytest.fixture(scope="session")
def xds_host():
    return testinfra.get_host("docker://dh-xds")


@pytest.fixture(scope="session")
def webapi_host():
    return testinfra.get_host("docker://dh-webapi")


@pytest.fixture(scope="session")
def envoy_ca(envoy_host, tmp_path_factory) -> str:
    """Envoy's self-signed certificate, so clients verify TLS instead of switching it off."""
    path = tmp_path_factory.mktemp("tls") / "envoy.pem"
    path.write_text(envoy_host.file(ENVOY_CERT).content_string)
    return str(path)


@pytest.fixture(scope="session")
def front_door(envoy_ca):
    """GET through Envoy; returns (status, parsed JSON body or raw text)."""

    def get(path: str, headers: dict | None = None, method: str = "GET"):
        response = requests.request(
            method, FRONT_DOOR + path, headers=headers or {}, verify=envoy_ca, timeout=10
        )
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    return get


@pytest.fixture(scope="session")
def api_token(xds_host) -> str:
    return xds_host.file(TOKEN_FILE).content_string.strip()


def reached(front_door, path: str, headers: dict | None = None) -> str | None:
    """Name of the backend that answered `path` through Envoy (None if no stand-in did)."""
    status, body = front_door(path, headers)
    return body.get("server") if status == 200 and isinstance(body, dict) else None


def wait_for_backend(front_door, path: str, expected: str, attempts: int = 40) -> str | None:
    """Poll until `path` reaches `expected` (routes arrive over xDS, asynchronously)."""
    seen = None
    for _attempt in range(attempts):
        seen = reached(front_door, path)
        if seen == expected:
            break
        time.sleep(0.5)
    return seen


def envoy_identity(envoy_host) -> dict:
    """What would change if Envoy were restarted or reconfigured."""
    return {
        "pid": envoy_host.run("systemctl show -p MainPID --value envoy").stdout.strip(),
        "config": envoy_host.run("sha256sum /etc/envoy/config.yaml").stdout.split()[0],
    }


def run_module(module: str, args: dict) -> dict:
    """Run a collection module ad hoc on the controller, as an operator would; its result."""
    command = ["ansible", "localhost", "-c", "local", "-m", module, "-a", json.dumps(args)]
    env = {**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    try:
        return json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        return {"failed": True, "msg": done.stdout + done.stderr}


EXPECTED_DIR = pathlib.Path(__file__).parent / "expected"
