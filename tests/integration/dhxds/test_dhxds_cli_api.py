"""The CLI and the HTTP API against a running daemon: good input works, bad input is refused
with a clear message, the registry is unchanged and the daemon stays up."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from dhops_testkit import HOST, run_dhxds


def _cli(daemon, *args: str) -> subprocess.CompletedProcess:
    return run_dhxds("workers", *args, "--config", str(daemon.config_path), timeout=30)


def test_cli_add_list_get_remove(daemon):
    added = _cli(
        daemon, "add", "w1", "--host", HOST, "--port", "9001", "--upstream-protocol", "http2"
    )
    assert added.returncode == 0, added.stderr
    assert "registered w1 -> 127.0.0.1:9001 (/worker/w1)" in added.stdout
    listed = _cli(daemon, "list")
    assert listed.returncode == 0
    assert "w1" in listed.stdout and "127.0.0.1:9001" in listed.stdout and "http2" in listed.stdout
    shown = _cli(daemon, "get", "w1")
    assert '"upstream_protocol": "http2"' in shown.stdout
    assert _cli(daemon, "remove", "w1").returncode == 0
    assert daemon.call("GET", "/v1/workers").json() == {"workers": []}


def test_cli_reports_api_errors(daemon):
    bad = _cli(daemon, "add", "bad id", "--host", HOST, "--port", "9001")
    assert bad.returncode == 1
    assert "worker id 'bad id' is invalid" in bad.stderr
    missing = _cli(daemon, "remove", "ghost")
    assert missing.returncode == 1
    assert "worker ghost is not registered" in missing.stderr
    wrong = subprocess.run(
        [
            sys.executable,
            "-m",
            "dhxds",
            "workers",
            "list",
            "--api-url",
            daemon.api,
            "--token-file",
            "/nonexistent/token",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert wrong.returncode == 2
    assert "cannot read api.token_file /nonexistent/token" in wrong.stderr


BAD_REQUESTS = [
    ("PUT", "/v1/workers/a%2Fb", {"host": HOST, "port": 1}, 400, "'a/b' is invalid"),
    ("PUT", "/v1/workers/a/b", {"host": HOST, "port": 1}, 400, "must not contain '/'"),
    ("PUT", "/v1/workers/a..b", {"host": HOST, "port": 1}, 400, "without '..'"),
    ("PUT", "/v1/workers/a%20b", {"host": HOST, "port": 1}, 400, "is invalid"),
    ("PUT", "/v1/workers/", {"host": HOST, "port": 1}, 400, "must not be empty"),
    ("PUT", "/v1/workers/" + "a" * 129, {"host": HOST, "port": 1}, 400, "the limit is 128"),
    ("PUT", "/v1/workers/%C3%A9", {"host": HOST, "port": 1}, 400, "must be ASCII"),
    ("PUT", "/v1/workers/w", {"host": HOST, "port": 0}, 400, "outside 1-65535"),
    ("PUT", "/v1/workers/w", {"host": HOST, "port": 65536}, 400, "outside 1-65535"),
    ("PUT", "/v1/workers/w", {"host": HOST}, 400, "missing required field(s) in worker: port"),
    ("PUT", "/v1/workers/w", {"host": HOST, "port": 1, "colour": "red"}, 400, "unknown field"),
    ("PUT", "/v1/workers/w", b"{not json", 400, "not valid JSON"),
    ("PUT", "/v1/workers/w", b"[1, 2]", 400, "must be a JSON object"),
    ("DELETE", "/v1/workers/ghost", None, 404, "not registered"),
    ("PUT", "/v1/workers/w%0A", {"host": HOST, "port": 1}, 400, "is invalid"),
    ("PUT", "/v1/workers/w", {"host": HOST, "port": 1, "envoy_prefix": "/w\n"}, 400, "envoy_"),
    ("PUT", "/v1/workers/w", b"[" * 30000 + b"]" * 30000, 400, "nested too deeply"),
    ("PUT", "/v1/workers/w", b'{"host": "h", "port": ' + b"7" * 5000 + b"}", 400, "valid JSON"),
    ("PUT", "/v1/workers/w", {"host": "0.0.0.0", "port": 1}, 400, "unspecified address"),
    ("PUT", "/v1/workers/w", {"host": "::", "port": 1}, 400, "unspecified address"),
    ("PUT", "/v1/workers/w", {"host": "fe80::1%eth0", "port": 1}, 400, "has a zone"),
    ("PUT", "/v1/workers/w", {"host": "224.0.0.1", "port": 1}, 400, "multicast"),
    ("PUT", "/v1/workers/w?wait=routable&timeout=99", {"host": HOST, "port": 1}, 400, "timeout"),
]


def test_bad_requests_change_nothing(daemon):
    """One daemon takes every bad request in turn (the unit tests cover more cases)."""
    daemon.put_worker("keep", 9000)
    before = daemon.stored()
    for method, path, body, status, message in BAD_REQUESTS:
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        resp = requests.request(
            method,
            daemon.api + path,
            headers={"Authorization": "Bearer integration-test-token"},
            timeout=10,
            **kwargs,
        )
        assert resp.status_code == status, (path, resp.text)
        assert resp.headers["Content-Type"].startswith("application/json"), (path, resp.text)
        assert message in resp.json()["error"], (path, resp.text)
        assert daemon.stored() == before
        assert [w["id"] for w in daemon.call("GET", "/v1/workers").json()["workers"]] == ["keep"]
        assert requests.get(daemon.api + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_401(daemon, token):
    resp = daemon.call("PUT", "/v1/workers/w1", {"host": HOST, "port": 1}, token=token)
    assert resp.status_code == 401
    assert "token" in resp.json()["error"]
    assert daemon.call("GET", "/v1/workers").json() == {"workers": []}
    assert daemon.call("GET", "/metrics", token=token).status_code == 401
    assert "dhxds_workers 0.0" in daemon.call("GET", "/metrics").text


def test_wait_routable_nodes_and_openapi(daemon):
    """No Envoy is connected: nothing to wait for, so wait=routable answers 201 at once."""
    resp = daemon.call("PUT", "/v1/workers/w1?wait=routable&timeout=5", {"host": HOST, "port": 1})
    assert resp.status_code == 201, resp.text
    assert resp.json()["id"] == "w1"
    resp = daemon.call("GET", "/v1/workers/w1?wait=routable&timeout=1")
    assert resp.status_code == 200 and resp.json()["id"] == "w1"
    assert daemon.call("GET", "/v1/nodes").json() == {"nodes": []}
    assert daemon.call("GET", "/v1/nodes", token=None).status_code == 401
    document = requests.get(daemon.api + "/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.") and "/v1/nodes" in document["paths"]


def test_cli_add_wait_and_nodes(daemon):
    added = _cli(daemon, "add", "w1", "--host", HOST, "--port", "9001", "--wait", "--timeout", "3")
    assert added.returncode == 0, added.stderr
    assert "w1 is routable on every connected Envoy" in added.stdout
    nodes = _cli_nodes(daemon)
    assert nodes.returncode == 0, nodes.stderr
    assert nodes.stdout.startswith("NODE")
    bad = _cli(daemon, "add", "w2", "--host", HOST, "--port", "1", "--wait", "--timeout", "61")
    assert bad.returncode == 2 and "--timeout must be from 0 to 60" in bad.stderr


def _cli_nodes(daemon, *args: str) -> subprocess.CompletedProcess:
    return run_dhxds("nodes", *args, "--config", str(daemon.config_path), timeout=30)
