"""What the converged host looks like to a user: Envoy 1.40.0 upgraded from 1.36.4, serving."""

import re

from conftest import ADMIN, LISTENER, admin_json, http_status


def test_service_runs_as_the_envoy_user(host):
    service = host.service("envoy")
    assert service.is_running, host.run("journalctl -u envoy -n 30 --no-pager").stdout
    assert service.is_enabled
    users = host.check_output("ps -o user= -C envoy").split()
    assert users == ["envoy"]


def test_unit_is_hardened_and_runs_the_seed_command_line(host):
    props = host.service("envoy").systemd_properties
    assert props["User"] == "envoy"
    assert props["Restart"] == "on-failure"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes"
    assert props["CapabilityBoundingSet"] == "cap_net_bind_service"
    assert props["AmbientCapabilities"] == "cap_net_bind_service"
    assert not props.get("ExecReload")  # Envoy ignores SIGHUP: no fake reload
    start = props["ExecStart"]
    assert "path=/opt/envoy/current/bin/envoy" in start
    assert "--config-path /etc/envoy/config.yaml" in start
    assert "--log-path /var/log/deephaven/envoy.log" in start


def test_unit_exposure_is_at_most_2_5_while_serving(host):
    assert http_status(host, f"{LISTENER}/healthz", "-k") == "200"
    out = host.check_output("systemd-analyze security --no-pager envoy.service")
    level = float(re.search(r"Overall exposure level for envoy.service: ([0-9.]+)", out).group(1))
    assert level <= 2.5, out
    props = host.service("envoy").systemd_properties
    assert props["PrivateDevices"] == "yes"
    assert props["SystemCallArchitectures"] == "native"
    assert props["RestrictNamespaces"] == "yes"
    assert props["UMask"] == "0027"


def test_active_config_validates_as_the_envoy_user(host):
    # As envoy, so a key envoy cannot read would fail here too.
    result = host.run(
        "runuser -u envoy -- /opt/envoy/current/bin/envoy --mode validate "
        "--config-path /etc/envoy/config.yaml"
    )
    assert result.rc == 0, result.stderr
    assert "OK" in result.stdout + result.stderr


def test_listener_answers_over_tls_with_the_deployed_certificate(host):
    # --cacert: the self-signed certificate verifies for localhost (no -k).
    url = LISTENER.replace("127.0.0.1", "localhost") + "/healthz"
    assert http_status(host, url, "--cacert /etc/envoy/tls/cert.pem") == "200"
    assert host.check_output(f"curl -sk --http2 -o /dev/null -w '%{{http_version}}' {url}") == "2"


def test_unknown_route_is_answered_by_envoy(host):
    # No dhxds in this scenario: RDS is empty, Envoy itself answers 404.
    assert http_status(host, f"{LISTENER}/worker/w1/", "-k") == "404"
    # Envoy flushes access logs every 10 s by default; wait for the line, do not time it.
    found = host.run(
        "for i in $(seq 30); do grep -q 'GET /worker/w1/' /var/log/envoy/access.log && exit 0;"
        " sleep 1; done; exit 1"
    )
    assert found.rc == 0, host.file("/var/log/envoy/access.log").content_string


def test_health_check_filter_drains_and_recovers(host):
    try:
        host.check_output(f"curl -sf -X POST {ADMIN}/healthcheck/fail")
        assert http_status(host, f"{LISTENER}/healthz", "-k") == "503"
    finally:
        host.check_output(f"curl -sf -X POST {ADMIN}/healthcheck/ok")
    assert http_status(host, f"{LISTENER}/healthz", "-k") == "200"


def test_http_listener_redirects_to_https(host):
    out = host.check_output(
        "curl -s -o /dev/null -w '%{http_code} %{redirect_url}' http://127.0.0.1:9080/ide/"
    )
    assert out == "301 https://127.0.0.1:9443/ide/"


def test_admin_listens_on_loopback_only(host):
    sockets = host.check_output("ss -ltnH 'sport = :9001'").splitlines()
    local = {line.split()[3] for line in sockets}
    assert local == {"127.0.0.1:9001"}
    listener = {
        line.split()[3] for line in host.check_output("ss -ltnH 'sport = :9443'").splitlines()
    }
    assert listener == {"0.0.0.0:9443"}


def test_key_and_config_file_modes(host):
    key = host.file("/etc/envoy/tls/key.pem")
    assert (key.user, key.group, key.mode) == ("root", "envoy", 0o640)
    cert = host.file("/etc/envoy/tls/cert.pem")
    assert (cert.user, cert.group, cert.mode) == ("root", "envoy", 0o644)
    # Active and previous: symlinks to the activated versions, like /opt/envoy/current.
    for link, version in (("config.yaml", "1.40.0"), ("config.yaml.previous", "1.36.4")):
        target = host.file(f"/etc/envoy/{link}").linked_to
        assert target.startswith(f"/etc/envoy/versions/config-{version}-"), (link, target)
        f = host.file(target)
        assert (f.user, f.group, f.mode) == ("root", "envoy", 0o640), target
    for path in ("/etc/envoy", "/etc/envoy/versions"):
        conf_dir = host.file(path)
        assert (conf_dir.user, conf_dir.group, conf_dir.mode) == ("root", "envoy", 0o750), path


def test_logs_belong_to_envoy_and_rotate(host):
    for path in ("/var/log/deephaven/envoy.log", "/var/log/envoy/access.log"):
        log = host.file(path)
        assert (log.user, log.mode) == ("envoy", 0o640), path
    assert host.file("/var/log/deephaven/envoy.log").size > 0
    assert host.run("logrotate -d /etc/logrotate.d/envoy").rc == 0


def test_version_change_installed_side_by_side_and_switched(host):
    for version in ("1.36.4", "1.40.0"):
        binary = host.file(f"/opt/envoy/{version}/bin/envoy")
        assert binary.is_file and binary.mode == 0o755
    current = host.file("/opt/envoy/current")
    assert current.is_symlink and current.linked_to == "/opt/envoy/1.40.0"
    assert host.file("/usr/local/bin/envoy").linked_to == "/opt/envoy/1.40.0/bin/envoy"
    assert host.file("/etc/envoy/.active-version").content_string.strip() == "1.40.0"
    assert host.file("/etc/envoy/.previous-version").content_string.strip() == "1.36.4"
    assert "/1.40.0/" in admin_json(host, "/server_info")["version"]
