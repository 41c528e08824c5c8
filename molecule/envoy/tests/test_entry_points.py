"""The role's entry points and failure paths, run with ansible-playbook as a user would.

Every test leaves the host as converge left it: Envoy 1.40.0 active, 1.36.4 previous.
"""

import datetime

import pytest
from conftest import LISTENER, admin_json, envoy_pid, http_status
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def config_checksum(host):
    return host.file("/etc/envoy/config.yaml").sha256sum


def test_check_mode_shows_the_diff_and_changes_nothing(host, run_role):
    checksum = config_checksum(host)
    result = run_role("main", {"envoy_node_cluster": "renamed-cluster"}, "--check", "--diff")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '+  cluster: "renamed-cluster"' in result.stdout
    assert '-  cluster: "deephaven-envoy"' in result.stdout
    assert config_checksum(host) == checksum


def test_broken_config_fails_the_play_and_envoy_keeps_serving(host, run_role):
    pid, checksum = envoy_pid(host), config_checksum(host)
    result = run_role("main", {"envoy_access_log_format": "%NOT_A_FIELD%"})
    output = " ".join((result.stdout + result.stderr).split())  # ansible-core 2.16 wraps
    assert result.returncode != 0, output
    assert "envoy --mode validate (Envoy 1.40.0) rejected the configuration" in output
    assert "Not supported field in StreamInfo: NOT_A_FIELD" in output
    # Nothing reached the active configuration; the same process keeps serving.
    assert config_checksum(host) == checksum
    assert "NOT_A_FIELD" not in host.file("/etc/envoy/config.yaml").content_string
    assert not host.file("/etc/envoy/staged/config-1.40.0.yaml").exists
    assert envoy_pid(host) == pid
    assert http_status(host, f"{LISTENER}/healthz", "-k") == "200"


def _pem_pair(tmp_path, name, not_after_days, other_key=False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now + datetime.timedelta(days=not_after_days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    if other_key:
        key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {
        "envoy_tls_self_signed": False,
        "envoy_tls_cert_src": str(cert_path),
        "envoy_tls_key_src": str(key_path),
    }


@pytest.mark.parametrize(
    ("case", "days", "other_key", "message"),
    [
        ("mismatched", 30, True, "does not belong to the certificate"),
        ("expired", -1, False, "expired on"),
    ],
)
def test_bad_certificate_is_refused_before_anything_changes(
    host, run_role, tmp_path, case, days, other_key, message
):
    key_before = host.file("/etc/envoy/tls/key.pem").sha256sum
    result = run_role("main", _pem_pair(tmp_path, case, days, other_key))
    output = " ".join((result.stdout + result.stderr).split())  # ansible-core 2.16 wraps
    assert result.returncode != 0, output
    assert message in output
    assert "nothing was deployed" in output
    # no_log: the key material never shows up in the output
    assert "PRIVATE KEY" not in output
    assert host.file("/etc/envoy/tls/key.pem").sha256sum == key_before


def test_stage_activate_rollback_for_the_upgrade_playbook(host, run_role):
    pid = envoy_pid(host)
    old = {"envoy_version": "1.36.4"}

    staged = run_role("stage", old)
    assert staged.returncode == 0, staged.stdout + staged.stderr
    # stage touched nothing that runs
    assert envoy_pid(host) == pid
    assert host.file("/opt/envoy/current").linked_to == "/opt/envoy/1.40.0"
    assert host.file("/etc/envoy/staged/config-1.36.4.yaml").exists

    activated = run_role("activate", old)
    assert activated.returncode == 0, activated.stdout + activated.stderr
    assert "/1.36.4/" in admin_json(host, "/server_info")["version"]
    assert host.file("/opt/envoy/current").linked_to == "/opt/envoy/1.36.4"
    assert host.file("/etc/envoy/.previous-version").content_string.strip() == "1.40.0"
    assert "/versions/config-1.36.4-" in host.file("/etc/envoy/config.yaml").linked_to
    assert "/versions/config-1.40.0-" in host.file("/etc/envoy/config.yaml.previous").linked_to
    assert http_status(host, f"{LISTENER}/healthz", "-k") == "200"

    rolled_back = run_role("rollback")
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    assert "/1.40.0/" in admin_json(host, "/server_info")["version"]
    assert host.file("/opt/envoy/current").linked_to == "/opt/envoy/1.40.0"
    assert host.file("/etc/envoy/.active-version").content_string.strip() == "1.40.0"
    assert host.file("/etc/envoy/.previous-version").content_string.strip() == "1.36.4"
    assert "/versions/config-1.40.0-" in host.file("/etc/envoy/config.yaml").linked_to
    assert "/versions/config-1.36.4-" in host.file("/etc/envoy/config.yaml.previous").linked_to
    assert len(host.file("/etc/envoy/versions").listdir()) == 2
    assert http_status(host, f"{LISTENER}/healthz", "-k") == "200"


def test_old_layout_of_regular_config_files_converts_without_a_restart(host, run_role):
    """Release 0.1.0 kept config.yaml and config.yaml.previous as regular files."""
    pid, checksum = envoy_pid(host), config_checksum(host)
    links = {}
    for name in ("config.yaml", "config.yaml.previous"):
        path = f"/etc/envoy/{name}"
        links[name] = host.file(path).linked_to
        host.check_output(f"cp --remove-destination {links[name]} {path}")
    host.check_output("rm -r /etc/envoy/versions")
    assert not host.file("/etc/envoy/config.yaml").is_symlink

    converged = run_role("main")
    assert converged.returncode == 0, converged.stdout + converged.stderr
    for name, target in links.items():
        assert host.file(f"/etc/envoy/{name}").linked_to == target, name
    assert config_checksum(host) == checksum
    assert envoy_pid(host) == pid

    again = run_role("main")  # converted once: the next run changes nothing
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout, again.stdout


def serves_the_deployed_certificate(host) -> bool:
    """Does Envoy present the certificate now on disk? (curl verifies against exactly it.)"""
    url = LISTENER.replace("127.0.0.1", "localhost") + "/healthz"
    result = host.run(f"curl -s -o /dev/null --cacert /etc/envoy/tls/cert.pem {url}")
    return result.rc == 0


def test_tls_change_is_not_lost_when_the_run_fails_after_the_copy(host, run_role, tmp_path):
    marker = "/etc/envoy/.restart-pending"
    pid = envoy_pid(host)
    renewed = _pem_pair(tmp_path, "renewed", 30)
    try:
        # The new pair is copied, then validation fails: the run stops before any restart.
        failed = run_role("main", {**renewed, "envoy_access_log_format": "%NOT_A_FIELD%"})
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output
        assert "rejected the configuration" in output
        assert envoy_pid(host) == pid
        assert not serves_the_deployed_certificate(host)  # still the old pair in memory
        assert host.file(marker).exists  # the pending restart is kept on the host

        # The next run changes no file, yet restarts Envoy for the pair it did not pick up.
        fixed = run_role("main", renewed)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert envoy_pid(host) != pid
        assert serves_the_deployed_certificate(host)
        assert not host.file(marker).exists
    finally:
        restored = run_role("main")  # the scenario's self-signed pair again
        assert restored.returncode == 0, restored.stdout + restored.stderr
    assert serves_the_deployed_certificate(host)
    assert not host.file(marker).exists
