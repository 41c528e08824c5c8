"""dhxds on its host: hardened unit, own user, secret token, API on localhost only."""

import requests
from conftest import TOKEN_FILE, XDS_API

testinfra_hosts = ["docker://dh-xds"]


def test_service_running_and_enabled(host):
    service = host.service("dhxds")
    assert service.is_running, host.run("journalctl -u dhxds -n 30 --no-pager").stdout
    assert service.is_enabled


def test_unit_is_hardened(host):
    props = host.service("dhxds").systemd_properties
    assert props["Type"] == "notify"
    assert props["User"] == "dhxds"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["Restart"] == "on-failure"
    assert "/var/lib/dhxds" in props["ReadWritePaths"]
    assert host.process.get(comm="dhxds").user == "dhxds"


def test_token_file_is_secret(host):
    token = host.file(TOKEN_FILE)
    assert (token.user, token.mode) == ("dhxds", 0o600)
    assert len(token.content_string.strip()) >= 32


def test_config_holds_the_contract_keys(host):
    config = host.file("/etc/dhxds/config.yml")
    assert config.mode == 0o640
    text = config.content_string
    for expected in [
        "0.0.0.0:8124",
        "127.0.0.1:8125",
        TOKEN_FILE,
        "/var/lib/dhxds/workers.db",
        "rds_config",
        "8123",
        "upstream_protocol: http1",  # Deephaven's web_api_service speaks HTTP/1.1
    ]:
        assert expected in text


def test_state_dir_belongs_to_the_daemon(host):
    state = host.file("/var/lib/dhxds")
    assert state.is_directory and state.user == "dhxds"


def test_xds_port_open_to_envoy_hosts_api_on_localhost_only(host):
    listening = host.run("ss -Hltn").stdout
    assert "0.0.0.0:8124" in listening or "*:8124" in listening
    assert "127.0.0.1:8125" in listening
    assert "0.0.0.0:8125" not in listening and "*:8125" not in listening


def test_api_requires_the_token(api_token):
    assert requests.get(f"{XDS_API}/v1/workers", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert requests.get(f"{XDS_API}/v1/workers", headers=wrong, timeout=10).status_code == 401
    right = {"Authorization": f"Bearer {api_token}"}
    listed = requests.get(f"{XDS_API}/v1/workers", headers=right, timeout=10).json()["workers"]
    assert {w["id"] for w in listed} >= {"w1", "w10"}
