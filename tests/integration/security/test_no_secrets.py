"""No secret in the daemon's logs or in `ansible-playbook -vvv --diff` output.

The daemon runs with a known token (and `xds.tls` with a known private key)
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
    """Turn on xds.tls (mTLS for the xDS listener); the key lines that must not be logged."""
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
    """A play of `tasks` on localhost; `variables` go to NAME.vars.json (passed with -e @),
    as secrets come from inventory or vault: an error that quotes the play shows none."""
    play = {
        "name": name,
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(tmp_path / f"{name}.vars.json")],
        "tasks": tasks,
    }
    (tmp_path / f"{name}.vars.json").write_text(json.dumps(variables))
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


def test_xds_role_secret_tasks_are_not_in_vvv_output(tmp_path):
    """The token (current and previous ones) and the daemon's TLS private key."""
    token, previous = _secret_token(), _secret_token()
    etc = tmp_path / "etc"
    etc.mkdir()
    token_file = etc / "api-token"
    _cert, key = self_signed_certificate(tmp_path)
    names = [
        "Deploy the TLS private keys",
        "Read the API token kept on the target",
        "Choose the API token",
        "Write the API token(s)",
    ]
    tasks = _role_tasks("xds", "configure.yml", names)
    variables = {
        "_xds_token_file": str(token_file),
        "xds_user": "root",
        "xds_group": "root",
        "xds_api_tokens_previous": [previous],
        "_xds_deployed_tls_files": [
            {"src": str(key), "dest": str(etc / "xds-server.key"), "secret": True}
        ],
    }
    secrets_ = _forms(token) + _forms(previous) + _key_lines(key)
    playbook = _playbook(tmp_path, "token-given", variables, tasks)
    given = _vvv(tmp_path, playbook, "-e", f"xds_api_token={token}")
    assert given.returncode == 0, given.stdout[-3000:] + given.stderr[-2000:]
    assert token_file.read_text() == f"{token}\n{previous}\n"
    assert (etc / "xds-server.key").read_bytes() == key.read_bytes()  # deployed for real
    _assert_clean(given, secrets_)
    # No token given: the first line kept on the target is read back (slurp: base64) and
    # kept, the previous ones after it (the file does not grow).
    kept = _vvv(tmp_path, playbook, "-e", "xds_api_token=''")
    assert kept.returncode == 0, kept.stdout[-3000:] + kept.stderr[-2000:]
    assert token_file.read_text() == f"{token}\n{previous}\n"
    _assert_clean(kept, secrets_)
    # An empty token file on the target: a new token is generated.
    token_file.write_text("")
    fresh = _vvv(tmp_path, playbook, "-e", "xds_api_token=''")
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-2000:]
    generated, kept_previous = token_file.read_text().splitlines()
    assert len(generated) == 40 and kept_previous == previous
    _assert_clean(fresh, [*secrets_, *_forms(generated)])
    # A new token replaces it: the old and the new one stay out of the output.
    new = _secret_token()
    rotated = _vvv(tmp_path, playbook, "-e", f"xds_api_token={new}")
    assert rotated.returncode == 0 and token_file.read_text() == f"{new}\n{previous}\n"
    _assert_clean(rotated, [*secrets_, *_forms(new)])


def test_xds_role_token_check_failure_is_not_in_vvv_output(tmp_path):
    """The preflight check of previous tokens fails on a malformed one without showing it."""
    good, bad = _secret_token(), _secret_token()
    [check] = _role_tasks("xds", "preflight.yml", ["Check the mTLS and token settings"])
    check = {**check, "register": "checked", "ignore_errors": True}
    report = {"name": "Failed as it must", "ansible.builtin.assert": {"that": "checked is failed"}}
    variables = {"_xds_tls_files": [], "xds_api_tokens_previous": [good, f"{bad} x"]}
    run = _vvv(tmp_path, _playbook(tmp_path, "token-check", variables, [check, report]))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    _assert_clean(run, _forms(good) + _forms(bad))


def test_envoy_role_key_tasks_are_not_in_vvv_output(tmp_path):
    """The front door's private key (preflight check, deployment) and the xDS client key."""
    cert, key = self_signed_certificate(tmp_path)
    client_dir = tmp_path / "xds-client"
    client_dir.mkdir()
    _client_cert, client_key = self_signed_certificate(client_dir, "envoy-client")
    dest = tmp_path / "deployed"
    (dest / "xds-tls").mkdir(parents=True)
    check = "Preflight | Check the given certificate and key on the controller"
    tasks = (
        _role_tasks("envoy", "preflight.yml", [check])
        + _role_tasks(
            "envoy", "tls.yml", ["TLS | Deploy the certificate", "TLS | Deploy the private key"]
        )
        + _role_tasks("envoy", "xds_tls.yml", ["XDS TLS | Deploy the client key"])
    )
    variables = {
        "envoy_tls_enabled": True,
        "envoy_tls_self_signed": False,
        "envoy_tls_cert_src": str(cert),
        "envoy_tls_key_src": str(key),
        "envoy_tls_cert_path": str(dest / "envoy.pem"),
        "envoy_tls_key_path": str(dest / "envoy.key"),
        "envoy_system_group": "root",
        "envoy_config_dir": str(dest),
        "envoy_xds_tls_key_file": str(client_key),
    }
    run = _vvv(tmp_path, _playbook(tmp_path, "envoy-key", variables, tasks))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert (dest / "envoy.key").read_bytes() == key.read_bytes()  # deployed for real
    assert (dest / "xds-tls" / "key.pem").read_bytes() == client_key.read_bytes()
    _assert_clean(run, _key_lines(key) + _key_lines(client_key))
