"""Fixtures for the upgrade scenario: the fleet as a user sees it, the playbook run, the load.

The tests run playbooks/upgrade.yml exactly as an operator would (ansible-playbook against the
molecule inventory) while load_client.py sends requests through the three Envoy listeners.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import requests
import testinfra
import yaml

HOSTS = ["upg-envoy-1", "upg-envoy-2", "upg-envoy-3"]
LISTENERS = {"upg-envoy-1": 7441, "upg-envoy-2": 7442, "upg-envoy-3": 7443}
ADMINS = {"upg-envoy-1": 7001, "upg-envoy-2": 7002, "upg-envoy-3": 7003}
REPO = pathlib.Path(os.environ.get("DHOPS_REPO_ROOT") or pathlib.Path(__file__).parents[3])
PLAYBOOK = REPO / "playbooks" / "upgrade.yml"
LOAD_CLIENT = pathlib.Path(__file__).with_name("load_client.py")
CACHE = pathlib.Path(
    os.environ.get("DHOPS_CACHE") or pathlib.Path.home() / ".cache" / "dhops-envoy"
)
# The load balancer's routes: path -> the stand-in that must answer it (see molecule.yml).
ROUTES = ["/=web_api_service", "/worker/w1/=w1"]


class Fleet:
    """The three Envoy hosts, seen from the controller (host network) and through docker."""

    def __init__(self):
        self.hosts = {name: testinfra.get_host(f"docker://{name}") for name in HOSTS}

    def admin(self, name: str, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{ADMINS[name]}{path}", timeout=5)

    def version(self, name: str) -> str:
        return self.admin(name, "/server_info").json()["version"].split("/")[1]

    def versions(self) -> dict[str, str]:
        return {name: self.version(name) for name in HOSTS}

    def main_pids(self) -> dict[str, str]:
        """Envoy's process id per host: unchanged means not restarted."""
        return {
            name: host.check_output("systemctl show --property=MainPID --value envoy")
            for name, host in self.hosts.items()
        }

    def config_sums(self) -> dict[str, str]:
        return {
            name: host.check_output("sha256sum /etc/envoy/config.yaml").split()[0]
            for name, host in self.hosts.items()
        }

    def health(self, name: str) -> int:
        """What a load balancer's health check sees on the listener."""
        url = f"https://127.0.0.1:{LISTENERS[name]}/healthz"
        return requests.get(url, timeout=5, verify=False).status_code  # noqa: S501 - self-signed


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
def upgrade(tmp_path):
    """Run upgrade.yml: upgrade(version, host_vars=None, extra_hosts=None, args=()).

    host_vars/extra_hosts go into an extra inventory file layered over molecule's.
    Returns (CompletedProcess, summary dict or None).
    """

    def run(version, host_vars=None, extra_hosts=None, args=()):
        inventories = ["-i", os.environ["MOLECULE_INVENTORY_FILE"]]
        if host_vars or extra_hosts:
            extra = {"envoy": {"hosts": {**(extra_hosts or {}), **(host_vars or {})}}}
            path = tmp_path / "extra-inventory.yml"
            path.write_text(yaml.safe_dump({"all": {"children": extra}}))
            inventories += ["-i", str(path)]
        summary = tmp_path / "summary.json"
        summary.unlink(missing_ok=True)
        command = [
            "ansible-playbook",
            *inventories,
            str(PLAYBOOK),
            "-e",
            f"envoy_version={version}",
            "-e",
            f"upgrade_summary_path={summary}",
            "-e",
            "upgrade_lb_grace_seconds=2",
            *args,
        ]
        env = dict(os.environ)
        cfg = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
        if (cfg / "ansible.cfg").exists():
            env["ANSIBLE_CONFIG"] = str(cfg / "ansible.cfg")
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        took = time.monotonic() - started
        print(f"$ {' '.join(command)}\n-> rc={result.returncode} in {took:.0f} s")
        print("\n".join(result.stdout.splitlines()[-60:]))
        print(result.stderr[-3000:], file=sys.stderr)
        return result, (json.loads(summary.read_text()) if summary.exists() else None)

    return run


@pytest.fixture
def load(tmp_path):
    """Context manager: the load client runs inside it; yields a dict filled with its counts."""
    started = []

    @contextmanager
    def running():
        counts_file = tmp_path / "load-counts.json"
        command = [sys.executable, str(LOAD_CLIENT), "--counts-file", str(counts_file)]
        for port in LISTENERS.values():
            command += ["--target", f"127.0.0.1:{port}"]
        for route in ROUTES:
            command += ["--route", route]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        started.append(process)
        _wait_until_flowing(counts_file, process)
        counts = {}
        try:
            yield counts
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
            counts.update(json.loads(counts_file.read_text()))
            print(
                f"load client: sent={counts['sent']} ok={counts['ok']} failed={counts['failed']} "
                f"retried_after_refused={counts['retried_refused']} targets={counts['targets']}"
            )
            for failure in counts["failures"]:
                print(f"  failed request: {failure}")

    yield running
    for process in started:  # never leave the client behind, even when a test broke
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_until_flowing(counts_file: pathlib.Path, process: subprocess.Popen) -> None:
    """Until every host is in the client's rotation and requests succeed (bounded)."""
    for _attempt in range(300):
        assert process.poll() is None, "the load client exited early"
        if counts_file.exists():
            counts = json.loads(counts_file.read_text())
            if counts["ok"] >= 20 and all(t["up"] for t in counts["targets"].values()):
                return
        time.sleep(0.1)
    raise AssertionError(f"the load client never saw the whole fleet serving: {counts_file}")


def broken_binary(directory: pathlib.Path, version: str, validate_with: str | None) -> str:
    """A controller-side 'Envoy <version>' that reports the version but cannot serve.

    validate_with=None: it also fails `--mode validate` (a broken build caught by the stage).
    validate_with=PATH: validation runs the real binary at PATH on the host, so the stage
    passes and only starting it fails (caught by the gate, which must roll back).
    """
    directory.mkdir(parents=True, exist_ok=True)
    validate = f'  *" validate "*) exec {validate_with} "$@" ;;\n' if validate_with else ""
    script = (
        "#!/bin/sh\n"
        f"# Test double for a broken Envoy {version} build (molecule/upgrade).\n"
        'case " $* " in\n'
        f'  *" --version "*) echo "envoy version: 0/{version}/Clean/RELEASE"; exit 0 ;;\n'
        f"{validate}"
        "esac\n"
        'echo "[critical] simulated broken Envoy build: cannot start" >&2\n'
        "exit 1\n"
    )
    path = directory / "envoy"
    path.write_text(script)
    path.chmod(0o755)
    digest = subprocess.run(
        ["sha256sum", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    (directory / "envoy.sha256").write_text(f"{digest}  envoy\n")
    return str(path)
