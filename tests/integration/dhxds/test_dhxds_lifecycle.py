"""The daemon as systemd runs it: readiness notification, SIGTERM, and refusing bad state."""

from __future__ import annotations

import socket

from dhops_testkit import Daemon, run_dhxds


def test_notify_ready_and_graceful_sigterm(tmp_path, web_api_port):
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        daemon = Daemon(tmp_path, web_api_port).start(env={"NOTIFY_SOCKET": str(notify_path)})
        try:
            ready = notify.recv(4096).decode()
            assert ready.startswith("READY=1")
            assert "STATUS=serving 0 worker(s)" in ready
        finally:
            code = daemon.stop()  # SIGTERM
        assert notify.recv(4096) == b"STOPPING=1"
    assert code == 0
    log = daemon.log()
    assert "dhxds serving: xDS on" in log and "shutting down" in log and "stopped" in log


def test_corrupt_state_file_stops_startup_and_is_left_alone(tmp_path, web_api_port):
    daemon = Daemon(tmp_path, web_api_port)
    daemon.state_path.parent.mkdir(parents=True)
    daemon.state_path.write_text('{"format": "dhxds-workers/1", "workers": [{"id": "x"}]}')
    result = run_dhxds("serve", "--config", str(daemon.config_path))
    assert result.returncode == 1
    assert "worker #0: missing required field(s) in worker: host, port" in result.stderr
    assert daemon.state_path.read_text().startswith('{"format": "dhxds-workers/1"')
    assert not daemon.db_path.exists()  # nothing imported: the next start tries again


def test_bad_config_is_explained(tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text("xds: {listen: nowhere}\n")
    for args in (["serve", "--config", str(config)], ["serve", "--check", "--config", str(config)]):
        result = run_dhxds(*args)
        assert result.returncode == 2
        assert "xds.listen must be 'host:port', got 'nowhere'" in result.stderr


def test_port_in_use_is_explained(tmp_path, web_api_port):
    daemon = Daemon(tmp_path, web_api_port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", daemon.api_port))
        taken.listen()
        result = run_dhxds("serve", "--config", str(daemon.config_path))
    assert result.returncode == 1
    assert f"cannot listen for the API on 127.0.0.1:{daemon.api_port}" in result.stderr
    assert "Traceback" not in result.stderr
