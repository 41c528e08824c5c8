"""The shared base image boots a working systemd, the thing every scenario needs."""


def test_systemd_is_running(host):
    state = host.run("systemctl is-system-running --wait")
    assert state.stdout.strip() == "running", host.run("systemctl --failed --no-legend").stdout


def test_python_and_venv_present_for_roles(host):
    assert host.run("python3 -c 'import venv, apt, cryptography'").rc == 0


def test_registry_ca_bundle_present(host):
    assert host.file("/etc/ssl/certs/ca-certificates.crt").size > 0
