"""Config loading: defaults, the contract keys, and clear errors."""

from __future__ import annotations

import pytest
from dhxds.config import Config, ConfigError, load_config, parse_config, read_token


def test_defaults_match_the_contract():
    config = parse_config({})
    assert config == Config()
    assert (config.xds_listen, config.api_listen) == ("127.0.0.1:8124", "127.0.0.1:8125")
    assert config.route_config_name == "rds_config"
    assert (config.web_api_service.host, config.web_api_service.port) == ("127.0.0.1", 8123)
    assert (config.state_path, config.state_backend) == ("/var/lib/dhxds/workers.db", "sqlite")


def test_full_config(tmp_path):
    path = tmp_path / "dhxds.yml"
    path.write_text(
        """
xds: {listen: "0.0.0.0:9124"}
api: {listen: "[::1]:9125", token_file: /run/token, metrics_require_token: false}
state: {path: /tmp/w.json, backend: sqlite}
route_config_name: routes
web_api_service: {host: dh.example, port: 8443, tls: true}
static_workers:
  - {id: s1, host: 10.0.0.5, port: 24000}
log_level: debug
"""
    )
    config = load_config(path)
    assert config.xds_listen == "0.0.0.0:9124" and config.api_listen == "[::1]:9125"
    assert config.web_api_service.tls and config.log_level == "DEBUG"
    assert [(w.id, w.static) for w in config.static_workers] == [("s1", True)]
    assert config.metrics_require_token is False
    assert config.state_path == "/tmp/w.json"  # the registry is /tmp/w.db, w.json is imported


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"xds": {"lisen": "x"}}, "unknown key\\(s\\) in xds: lisen"),
        ({"colour": 1}, "unknown key\\(s\\): colour"),
        ({"xds": {"listen": "8124"}}, "must be 'host:port'"),
        ({"api": {"listen": "127.0.0.1:99999"}}, "outside 1-65535"),
        ({"web_api_service": {"host": "h"}}, "web_api_service: missing required field"),
        ({"static_workers": [{"id": "a/b", "host": "h", "port": 1}]}, "static_workers\\[0\\]"),
        (
            {"static_workers": [{"id": "a", "host": "h", "port": 1}] * 2},
            "duplicate id a",
        ),
        ({"log_level": "loud"}, "log_level must be one of"),
        ({"state": "x"}, "state must be a mapping"),
        ({"state": {"backend": "file"}}, "state.backend must be one of sqlite, etcd, not 'file'"),
        ([1], "must be a YAML mapping"),
    ],
)
def test_bad_config_is_explained(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("xds: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_token(str(empty))
    empty.write_text("s3cret\n")
    assert read_token(str(empty)) == "s3cret"


TLS = {"cert_file": "/c.pem", "key_file": "/k.pem", "client_ca_file": "/ca.pem"}


def test_xds_tls_keys():
    config = parse_config({"xds": {"listen": "0.0.0.0:8124", "tls": TLS}})
    assert config.xds_tls is not None and config.xds_tls.client_ca_file == "/ca.pem"
    assert parse_config({}).xds_tls is None


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"cert_file": "/c", "key_file": "/k"}, "xds.tls needs client_ca_file: .*mutual TLS"),
        ({}, "xds.tls needs cert_file, key_file, client_ca_file"),
        ("on", "xds.tls must be a mapping"),
        ({**TLS, "verify": False}, "unknown key\\(s\\) in xds.tls: verify"),
        ({**TLS, "key_file": ""}, "xds.tls.key_file must be a non-empty string"),
    ],
)
def test_bad_xds_tls_is_one_clear_line(tls, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_config({"xds": {"tls": tls}})
    assert "\n" not in str(info.value)


def test_xds_tls_files_are_checked(tmp_path):
    from dhxds.config import check_files, xds_tls_files

    token = tmp_path / "token"
    token.write_text("t\n")
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    files = {k: tmp_path / k for k in TLS}
    for path in files.values():
        path.write_text(pem)
    config = parse_config(
        {
            "api": {"token_file": str(token)},
            "xds": {"tls": {k: str(v) for k, v in files.items()}},
        }
    )
    check_files(config)
    assert xds_tls_files(config.xds_tls)[0] == pem.encode()
    files["client_ca_file"].write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"xds.tls.client_ca_file .* is not a PEM file"):
        check_files(config)
    files["client_ca_file"].unlink()
    with pytest.raises(ConfigError, match=r"cannot read xds.tls.client_ca_file .*client_ca_file"):
        check_files(config)


def test_etcd_tls_files_are_checked_too(tmp_path):
    from dhxds.config import check_files

    token = tmp_path / "token"
    token.write_text("t\n")
    config = parse_config(
        {
            "api": {"token_file": str(token)},
            "state": {
                "backend": "etcd",
                "etcd": {"endpoints": ["https://127.0.0.1:2379"], "ca_file": str(tmp_path / "ca")},
            },
        }
    )
    with pytest.raises(ConfigError, match=r"^cannot read state\.etcd\.ca_file .*/ca: No such"):
        check_files(config)
