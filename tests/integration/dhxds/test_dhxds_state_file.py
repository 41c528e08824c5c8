"""The state file through the real daemon: a bad file is a clear message (no traceback); a
bad file with a last-good copy starts from that copy, loudly, and /healthz says degraded."""

from __future__ import annotations

import json

import pytest
import requests
from dhops_testkit import HOST, Daemon, run_dhxds

W1 = {"id": "w1", "host": HOST, "port": 9001}


@pytest.mark.parametrize(
    ("workers", "message"),
    [
        ({"w1": W1}, "'workers' must be a list, not dict"),
        (
            [W1, {**W1, "id": "w2", "envoy_prefix": "/worker/w1"}],
            "envoy_prefix /worker/w1 is also used by worker w1",
        ),
        ([W1, {**W1, "port": 9002}], "duplicate id w1"),
    ],
)
def test_a_bad_state_file_is_a_clear_message(tmp_path, web_api_port, workers, message):
    daemon = Daemon(tmp_path, web_api_port)
    daemon.state_path.parent.mkdir(parents=True)
    daemon.state_path.write_text(json.dumps({"format": "dhxds-workers/1", "workers": workers}))
    result = run_dhxds("serve", "--config", str(daemon.config_path), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"state file {daemon.state_path}" in result.stderr
    assert message in result.stderr
    assert "there is no last-good copy" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_state_file_starts_from_the_last_good_copy(tmp_path, web_api_port):
    daemon = Daemon(tmp_path, web_api_port).start()
    try:
        daemon.put_worker("w1", 9001)
        assert requests.get(f"{daemon.api}/healthz", timeout=5).json()["status"] == "ok"
    finally:
        daemon.stop()
    last_good = daemon.state_path.with_name("workers.json.last-good")
    assert json.loads(last_good.read_text())["workers"][0]["id"] == "w1"

    daemon.state_path.write_text('{"format": "dhxds-workers/1", "workers": {"w1": {}}}')
    daemon.start()
    try:
        health = requests.get(f"{daemon.api}/healthz", timeout=5).json()
        assert health["status"] == "degraded" and health["workers"] == 1
        assert "'workers' must be a list" in health["reason"]
        assert str(last_good) in health["reason"]
        log = daemon.log()
        assert "ERROR" in log and str(daemon.state_path) in log and str(last_good) in log
        assert [w["id"] for w in daemon.call("GET", "/v1/workers").json()["workers"]] == ["w1"]
        assert "dhxds_state_degraded 1.0" in daemon.call("GET", "/metrics").text
        # The next change rewrites the main file: no longer degraded.
        daemon.put_worker("w2", 9002)
        assert requests.get(f"{daemon.api}/healthz", timeout=5).json()["status"] == "ok"
        stored = json.loads(daemon.state_path.read_text())
        assert [w["id"] for w in stored["workers"]] == ["w1", "w2"]
    finally:
        daemon.stop()
    assert len(list(daemon.state_path.parent.glob("workers.json.bad-*"))) == 1
