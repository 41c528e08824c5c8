"""Helpers to run the collection's modules and role for real (`ansible`, `ansible-playbook`
subprocesses) and a real `dhxds serve` on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
TOKEN = "module-test-token"
ROOT = Path(__file__).resolve().parents[3]


def ansible_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".cache" / "collections"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / ".ansible-tmp"),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
    )
    return env


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name


class Outcome:
    """What a user sees from one ansible run: exit code, per-task results, recap."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.rc = proc.returncode
        self.stderr = proc.stderr
        try:
            self.data = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(
                f"ansible printed no JSON:\n{proc.stdout}\n{proc.stderr}"
            ) from None

    def results(self, host: str = "localhost") -> list[dict]:
        return [
            t["hosts"][host] for p in self.data["plays"] for t in p["tasks"] if host in t["hosts"]
        ]

    def task(self, name: str, host: str = "localhost") -> dict:
        for play in self.data["plays"]:
            for t in play["tasks"]:
                if t["task"]["name"].split(" : ")[-1] == name and host in t["hosts"]:
                    return t["hosts"][host]
        raise KeyError(name)

    @property
    def result(self) -> dict:
        return self.results()[-1]

    def stats(self, host: str = "localhost") -> dict:
        return self.data["stats"][host]


def ansible_module(
    tmp_path: Path, module: str, args: dict, check: bool = False, diff: bool = False
) -> Outcome:
    """`ansible localhost -m dhops.envoy.<module> -a <json>`, the way a user runs it."""
    cmd = [
        tool("ansible"),
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        "-m",
        f"dhops.envoy.{module}",
        "-a",
        json.dumps(args),
    ]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=120, check=False
    )
    return Outcome(proc)


def ansible_playbook(tmp_path: Path, playbook: Path, inventory: Path, *extra: str) -> Outcome:
    cmd = [tool("ansible-playbook"), "-i", str(inventory), str(playbook), *extra]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=300, check=False
    )
    return Outcome(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Dhxds:
    """A real `dhxds serve` subprocess; `api()` talks to it directly to check what it holds."""

    def __init__(self, workdir: Path, web_api_port: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.xds_port = free_port()
        self.url = f"http://{HOST}:{self.api_port}"
        self.token_file = workdir / "api-token"
        self.token_file.write_text(TOKEN + "\n")
        self.config = workdir / "dhxds.yml"
        self.config.write_text(
            "xds:\n"
            f"  listen: {HOST}:{self.xds_port}\n"
            "api:\n"
            f"  listen: {HOST}:{self.api_port}\n"
            f"  token_file: {self.token_file}\n"
            "state:\n"
            f"  path: {workdir / 'state' / 'workers.json'}\n"
            "route_config_name: rds_config\n"
            "web_api_service:\n"
            f"  host: {HOST}\n"
            f"  port: {web_api_port or free_port()}\n"
        )
        self.log = workdir / "dhxds.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Dhxds:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [tool("dhxds"), "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dhxds exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                if self.api("GET", "/healthz", token=None)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"dhxds did not become healthy: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, method: str, path: str, body=None, token: str | None = TOKEN):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def worker(self, worker_id: str):
        status, body = self.api("GET", f"/v1/workers/{worker_id}")
        return body if status == 200 else None


def standin_dhconfig(workdir: Path, files: dict[str, str]) -> tuple[Path, Path, Path]:
    """A stand-in `dhconfig` (see dhconfig_standin.py) whose server holds `files`.

    Returns (store dir, call log, executable path).
    """
    store = workdir / "store"
    store.mkdir(parents=True)
    for name, text in files.items():
        (store / name).write_text(text)
    log = workdir / "dhconfig-calls.log"
    log.write_text("")
    executable = workdir / "bin" / "dhconfig"
    executable.parent.mkdir()
    standin = Path(__file__).with_name("dhconfig_standin.py")
    executable.write_text(
        f'#!/bin/sh\nexec {sys.executable} {standin} --store {store} --log {log} "$@"\n'
    )
    os.chmod(executable, 0o700)
    return store, log, executable


def dhconfig_imports(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("properties import")]
