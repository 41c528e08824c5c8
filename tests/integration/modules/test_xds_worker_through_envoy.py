"""End to end: a worker registered by dhops.envoy.xds_worker is reachable through a real Envoy
fed by a real dhxds, and gone again after state=absent."""

import time
import urllib.error
import urllib.request

import pytest
from dhops_testkit import ENVOY_MAIN, HOST, TOKEN, Daemon, Envoy, text_backend


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return f"error {exc}"


def wait_for_body(url, expected, timeout=30):
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        body = fetch(url)
        if body == expected:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {expected!r}; last answer {body!r}")


@pytest.fixture
def stack(tmp_path):
    """dhxds + a real Envoy running the envoy role's bootstrap (CDS and RDS over ADS)."""
    web, worker = text_backend("web"), text_backend("w1")
    daemon = Daemon(tmp_path / "dhxds", web_api_port=web.server_address[1]).start()
    envoy = Envoy(ENVOY_MAIN, tmp_path, daemon.xds_port)
    try:
        envoy.start()
        wait_for_body(f"{envoy.url}/", "web /")
        yield daemon, envoy.url, worker.server_address[1]
    finally:
        envoy.stop()
        daemon.stop()
        web.shutdown()
        worker.shutdown()


def test_registered_worker_is_routed_by_envoy_and_removed_again(run_module, stack):
    daemon, envoy_url, worker_port = stack
    args = {"api_url": daemon.url, "token": TOKEN, "id": "w1", "host": HOST, "port": worker_port}
    assert run_module("xds_worker", args).result["changed"] is True
    wait_for_body(f"{envoy_url}/worker/w1/hello", "w1 /hello")  # prefix stripped
    assert fetch(f"{envoy_url}/other") == "web /other"

    removed = run_module("xds_worker", {**args, "state": "absent"})
    assert removed.result["changed"] is True
    wait_for_body(f"{envoy_url}/worker/w1/hello", "web /worker/w1/hello")
