"""The registry database through the real daemon: the JSON state file of older releases is
imported on the first start (a bad one is a clear message, nothing imported); kill -9 in the
middle of a stream of registrations loses nothing acknowledged; `dhxds state export|import`
round-trips, also while the daemon runs; a damaged database is a clear message."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from dhops_testkit import HOST, Daemon, run_dhxds, wait_for

W1 = {"id": "w1", "host": HOST, "port": 9001}


def listed(daemon: Daemon) -> dict[str, int]:
    return {w["id"]: w["port"] for w in daemon.call("GET", "/v1/workers").json()["workers"]}


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
def test_a_bad_json_state_file_is_a_clear_message(tmp_path, web_api_port, workers, message):
    daemon = Daemon(tmp_path, web_api_port)
    daemon.state_path.parent.mkdir(parents=True)
    daemon.state_path.write_text(json.dumps({"format": "dhxds-workers/1", "workers": workers}))
    result = run_dhxds("serve", "--config", str(daemon.config_path), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"state file {daemon.state_path}" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not daemon.db_path.exists() and daemon.state_path.exists()


def test_the_json_state_file_is_imported_on_the_first_start(tmp_path, web_api_port):
    daemon = Daemon(tmp_path, web_api_port)
    daemon.state_path.parent.mkdir(parents=True)
    w2 = {**W1, "id": "w2", "port": 9002, "envoy_prefix": "/custom"}
    daemon.state_path.write_text(json.dumps({"format": "dhxds-workers/1", "workers": [W1, w2]}))
    daemon.start()
    try:
        assert listed(daemon) == {"w1": 9001, "w2": 9002}
        assert "IMPORTED 2 worker(s) from the JSON state file" in daemon.log()
        assert requests.get(f"{daemon.api}/healthz", timeout=5).json()["status"] == "ok"
        daemon.put_worker("w3", 9003)
    finally:
        daemon.stop()
    assert not daemon.state_path.exists()
    assert daemon.state_path.with_name("workers.json.imported").exists()
    daemon.start()  # the second start reads the database only
    try:
        assert listed(daemon) == {"w1": 9001, "w2": 9002, "w3": 9003}
        assert daemon.log().count("IMPORTED") == 1
    finally:
        daemon.stop()


def test_kill9_during_a_stream_of_registrations_loses_nothing_acknowledged(daemon):
    acknowledged: list[str] = []
    stop = threading.Event()

    def register():
        for i in range(100000):
            if stop.is_set():
                return
            try:
                resp = daemon.call("PUT", f"/v1/workers/w{i}", {"host": HOST, "port": 1 + i})
            except requests.RequestException:
                return  # the daemon is gone
            if resp.status_code != 201:
                return
            acknowledged.append(f"w{i}")

    writer = threading.Thread(target=register)
    writer.start()
    wait_for(lambda: len(acknowledged) >= 60, 60, "60 acknowledged registrations")
    daemon.kill9()
    stop.set()
    writer.join(30)
    assert len(acknowledged) >= 60
    _revision, stored = daemon.stored()
    assert set(acknowledged) <= set(stored)
    daemon.start()
    assert set(acknowledged) <= set(listed(daemon))
    assert requests.get(f"{daemon.api}/healthz", timeout=5).json()["status"] == "ok"


def test_state_export_and_import_round_trip_while_the_daemon_runs(tmp_path, daemon):
    config = str(daemon.config_path)
    daemon.put_worker("w1", 9001)
    daemon.put_worker("w2", 9002)
    exported = run_dhxds("state", "export", "--config", config)
    assert exported.returncode == 0, exported.stderr
    backup = tmp_path / "backup.json"
    backup.write_text(exported.stdout)
    assert [w["id"] for w in json.loads(exported.stdout)["workers"]] == ["w1", "w2"]

    assert daemon.call("DELETE", "/v1/workers/w1").status_code == 204
    daemon.put_worker("w3", 9003)
    imported = run_dhxds("state", "import", "--config", config, str(backup))
    assert imported.returncode == 0, imported.stderr
    assert "1 added, 0 replaced, 1 removed" in imported.stdout
    # The running daemon follows the database's change log.
    wait_for(lambda: listed(daemon) == {"w1": 9001, "w2": 9002}, 10, "the import to be served")
    again = run_dhxds("state", "export", "--config", config)
    assert again.stdout == exported.stdout

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "dhxds-workers/1", "workers": [W1, W1]}))
    refused = run_dhxds("state", "import", "--config", config, str(bad))
    assert refused.returncode == 1
    assert f"state file {bad}, worker #1: duplicate id w1" in refused.stderr
    assert listed(daemon) == {"w1": 9001, "w2": 9002}


def test_a_damaged_database_is_a_clear_message(tmp_path, web_api_port):
    daemon = Daemon(tmp_path, web_api_port)
    daemon.db_path.parent.mkdir(parents=True)
    daemon.db_path.write_bytes(b"not a database\n" * 1000)
    result = run_dhxds("serve", "--config", str(daemon.config_path), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"registry database {daemon.db_path}" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
