"""No secret in the daemon's logs or in `ansible-playbook -vvv --diff` output.

The daemon runs with a known token (and, where dhxds has `xds.tls`, a known TLS private key)
at log level DEBUG; it is called with the token, with wrong tokens that resemble it, with
malformed Authorization headers, and through the CLI; its whole log must show none of them.

Ansible runs the collection's secret-carrying tasks for real on localhost (local connection,
everything in a temporary directory), at -vvv with --diff: the xds_worker module with its
`token`, the xds role's API token tasks (read the kept token, choose it, write it) and the
envoy role's private key tasks (the controller-side key check, the key deployment). The
role tasks are read from the roles' own task files by name, so the test runs exactly what the
roles run (no_log included). The output must show neither the token (nor its base64 form, as
slurp returns it) nor any line of the private key.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from dhops_testkit import HOST, ROOT, Daemon, free_port, run_dhxds, tool
from dhops_testkit.ansible_run import ansible_env
from dhops_testkit.tls import self_signed_certificate

from dhxds import config as dhxds_config


def _secret_token() -> str:
    return "s3cret-" + secrets.token_hex(16)


def _forms(secret: str) -> list[str]:
    """The secret and the encodings a leak would show it in."""
    raw = secret.encode()
    forms = [secret, base64.b64encode(raw).decode(), base64.b64encode(raw + b"\n").decode()]
    return [*forms, json.dumps(secret)[1:-1]]


def _key_lines(key_path: Path) -> list[str]:
    """The base64 lines of a PEM private key (each one is key material)."""
    return [
        line
        for line in key_path.read_text().splitlines()
        if line and not line.startswith("-----") and len(line) >= 16
    ]


def _leaks(text: str, secrets_: list[str]) -> list[str]:
    return [s for s in secrets_ if s in text]


# --- the daemon ----------------------------------------------------------------------------
def _with_xds_tls(daemon: Daemon, workdir: Path) -> list[str]:
    """Turn on xds.tls when this dhxds has it; the key lines that must not be logged."""
    if "tls" not in (dhxds_config.SCHEMA.get("xds") or set()):
        return []
    cert, key = self_signed_certificate(workdir)
    config = json.loads(daemon.config_path.read_text())
    config["xds"]["tls"] = {
        "cert_file": str(cert),
        "key_file": str(key),
        "client_ca_file": str(cert),
    }
    daemon.config_path.write_text(json.dumps(config))
    return _key_lines(key)


def test_daemon_logs_show_no_token_or_key(tmp_path):
    token = _secret_token()
    wrong = [token + "x", "x" + token, token[:-1], token.upper()]
    daemon = Daemon(tmp_path / "dhxds")
    daemon.token_file.write_text(token + "\n")
    key_lines = _with_xds_tls(daemon, tmp_path)
    daemon.start()
    try:
        api = daemon.api
        ok = daemon.call("PUT", "/v1/workers/w1", {"host": HOST, "port": 9001}, token=token)
        assert ok.status_code == 201, ok.text
        assert daemon.call("GET", "/v1/workers", token=token).status_code == 200
        assert daemon.call("GET", "/metrics", token=token).status_code == 200
        assert (
            daemon.call("PUT", "/v1/workers/bad id", {"host": HOST}, token=token).status_code == 400
        )
        for value in wrong:
            assert daemon.call("GET", "/v1/workers", token=value).status_code == 401
        for header in (f"Basic {token}", f"Token {token}", token, f"Bearer {token}x extra"):
            resp = requests.get(f"{api}/v1/workers", headers={"Authorization": header}, timeout=10)
            assert resp.status_code == 401
            assert not _leaks(resp.text, [token]), resp.text
        unknown_query = requests.get(
            f"{api}/v1/workers/w1?token={token}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert unknown_query.status_code == 400 and token not in unknown_query.text
        cli = run_dhxds("workers", "list", "--config", str(daemon.config_path), timeout=30)
        assert cli.returncode == 0 and "w1" in cli.stdout, cli.stderr
        wrong_file = tmp_path / "wrong-token"
        wrong_file.write_text(wrong[0] + "\n")
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "dhxds",
                "workers",
                "list",
                "--api-url",
                api,
                "--token-file",
                str(wrong_file),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert refused.returncode != 0
        assert not _leaks(refused.stdout + refused.stderr, _forms(wrong[0])), refused.stderr
        assert not _leaks(cli.stdout + cli.stderr, _forms(token))
    finally:
        daemon.stop()
    check = run_dhxds("serve", "--check", "--config", str(daemon.config_path), timeout=60)
    log = daemon.log_path.read_text(errors="replace")
    assert "rejected API request with a wrong token" in log  # the failures were logged
    secrets_ = [f for value in [token, *wrong] for f in _forms(value)] + key_lines
    assert not _leaks(log, secrets_), "the daemon's log shows a secret"
    assert not _leaks(check.stdout + check.stderr, secrets_), check.stdout + check.stderr


# --- ansible -------------------------------------------------------------------------------
def _role_tasks(role: str, tasks_file: str, names: list[str]) -> list[dict]:
    """The named tasks (or blocks) of a role's task file, as the role has them, without
    `notify` (the handlers restart services this test does not run)."""
    tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / tasks_file).read_text())
    picked = []
    for name in names:
        task = next((t for t in tasks if t.get("name") == name), None)
        assert task is not None, f"roles/{role}/tasks/{tasks_file} has no task {name!r}"
        task = dict(task)
        task.pop("notify", None)
        picked.append(task)
    return picked


def _playbook(tmp_path: Path, name: str, variables: dict, tasks: list[dict]) -> Path:
    play = {
        "name": name,
        "hosts": "localhost",
        "gather_facts": False,
        "vars": variables,
        "tasks": tasks,
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return path


def _vvv(tmp_path: Path, playbook: Path, *extra: str) -> subprocess.CompletedProcess:
    """ansible-playbook -vvv --diff on localhost (local connection), the default callback:
    what an operator sees and what CI logs keep."""
    env = ansible_env(tmp_path)
    env["ANSIBLE_STDOUT_CALLBACK"] = "default"
    cmd = [
        tool("ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-vvv",
        "--diff",
        str(playbook),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def _assert_clean(run: subprocess.CompletedProcess, secrets_: list[str]) -> None:
    output = run.stdout + run.stderr
    leaked = _leaks(output, secrets_)
    lines = [line for line in output.splitlines() if any(s in line for s in leaked)]
    assert not leaked, "ansible -vvv output shows a secret:\n" + "\n".join(lines[:10])


@pytest.fixture
def dhxds_with_token(tmp_path):
    token = _secret_token()
    daemon = Daemon(tmp_path / "dhxds")
    daemon.token_file.write_text(token + "\n")
    daemon.start()
    yield daemon, token
    daemon.stop()


def test_xds_worker_token_is_not_in_vvv_output(tmp_path, dhxds_with_token):
    daemon, token = dhxds_with_token
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    worker = {"api_url": daemon.api, "id": "w1", "host": HOST, "port": 9001}
    closed = f"http://{HOST}:{free_port()}"
    tasks = [
        {"name": "Register", "dhops.envoy.xds_worker": {**worker, "token": token}},
        {"name": "Unchanged", "dhops.envoy.xds_worker": {**worker, "token": token}},
        {"name": "Token file", "dhops.envoy.xds_worker": {**worker, "token_file": str(token_file)}},
        {
            "name": "Wrong token",
            "dhops.envoy.xds_worker": {**worker, "token": token + "x", "port": 9002},
            "register": "wrong",
            "failed_when": "wrong is not failed",
        },
        {
            "name": "Nothing listening",
            "dhops.envoy.xds_worker": {**worker, "api_url": closed, "token": token},
            "register": "closed",
            "failed_when": "closed is not failed",
        },
        {"name": "Remove", "dhops.envoy.xds_worker": {**worker, "token": token, "state": "absent"}},
    ]
    run = _vvv(tmp_path, _playbook(tmp_path, "xds-worker", {}, tasks))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "changed=2" in run.stdout  # registered and removed: the tasks really ran
    _assert_clean(run, _forms(token) + _forms(token + "x"))


def test_xds_role_token_tasks_are_not_in_vvv_output(tmp_path):
    token = _secret_token()
    token_file = tmp_path / "etc" / "api-token"
    token_file.parent.mkdir()
    names = ["Read the API token kept on the target", "Choose the API token", "Write the API token"]
    tasks = _role_tasks("xds", "configure.yml", names)
    variables = {"_xds_token_file": str(token_file), "xds_user": "root", "xds_group": "root"}
    given = _vvv(
        tmp_path,
        _playbook(tmp_path, "token-given", variables, tasks),
        "-e",
        f"xds_api_token={token}",
    )
    assert given.returncode == 0, given.stdout[-3000:] + given.stderr[-2000:]
    assert token_file.read_text() == token + "\n"
    _assert_clean(given, _forms(token))
    # No token given: the one kept on the target is read back (slurp: base64) and kept.
    kept = _vvv(
        tmp_path, _playbook(tmp_path, "token-kept", variables, tasks), "-e", "xds_api_token=''"
    )
    assert kept.returncode == 0, kept.stdout[-3000:] + kept.stderr[-2000:]
    assert token_file.read_text() == token + "\n"
    _assert_clean(kept, _forms(token))
    # A new token replaces it: the old and the new one stay out of the output.
    new = _secret_token()
    rotated = _vvv(
        tmp_path, _playbook(tmp_path, "token-new", variables, tasks), "-e", f"xds_api_token={new}"
    )
    assert rotated.returncode == 0 and token_file.read_text() == new + "\n"
    _assert_clean(rotated, _forms(token) + _forms(new))


def test_envoy_role_key_tasks_are_not_in_vvv_output(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    dest = tmp_path / "deployed"
    dest.mkdir()
    tasks = _role_tasks(
        "envoy",
        "preflight.yml",
        ["Preflight | Check the given certificate and key on the controller"],
    ) + _role_tasks(
        "envoy", "tls.yml", ["TLS | Deploy the certificate", "TLS | Deploy the private key"]
    )
    variables = {
        "envoy_tls_enabled": True,
        "envoy_tls_self_signed": False,
        "envoy_tls_cert_src": str(cert),
        "envoy_tls_key_src": str(key),
        "envoy_tls_cert_path": str(dest / "envoy.pem"),
        "envoy_tls_key_path": str(dest / "envoy.key"),
        "envoy_system_group": "root",
    }
    run = _vvv(tmp_path, _playbook(tmp_path, "envoy-key", variables, tasks))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert (dest / "envoy.key").read_bytes() == key.read_bytes()  # deployed for real
    _assert_clean(run, _key_lines(key))
