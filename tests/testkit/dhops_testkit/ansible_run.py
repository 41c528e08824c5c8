"""Run the collection's modules and roles for real (`ansible`, `ansible-playbook`
subprocesses), and a stand-in `dhconfig` for the property module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .base import ROOT, tool


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


def _ansible_on_localhost() -> list[str]:
    """`ansible localhost` over the local connection, with this venv's Python."""
    return [
        tool("ansible"),
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
    ]


def ansible_module(
    tmp_path: Path, module: str, args: dict, check: bool = False, diff: bool = False
) -> Outcome:
    """`ansible localhost -m dhops.envoy.<module> -a <json>`, the way a user runs it."""
    cmd = [
        *_ansible_on_localhost(),
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


def ansible_template(tmp_path: Path, src: Path, dest: Path, variables: dict) -> Outcome:
    """`ansible localhost -m ansible.builtin.template` with `variables` as extra vars."""
    extra = tmp_path / "template-vars.json"
    extra.write_text(json.dumps(variables))
    cmd = [
        *_ansible_on_localhost(),
        "-e",
        f"@{extra}",
        "-m",
        "ansible.builtin.template",
        "-a",
        json.dumps({"src": str(src), "dest": str(dest)}),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=ansible_env(tmp_path), timeout=120, check=False
    )
    return Outcome(proc)


_ENVOY_PREFLIGHT = """
- name: The envoy role's preflight
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Preflight
      ansible.builtin.include_role:
        name: dhops.envoy.envoy
        tasks_from: preflight
        public: true
    - name: Show the pin
      ansible.builtin.debug:
        msg: "pin={{ _envoy_package_pin }}"
"""


def envoy_preflight(tmp_path: Path, os_family: str, **variables) -> tuple[int, str]:
    """The envoy role's preflight on the controller, with the platform's facts given; its
    exit code and output (it prints the package pin it chose)."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(_ENVOY_PREFLIGHT)
    extra = {
        "ansible_facts": {"os_family": os_family, "distribution_major_version": "9"},
        "envoy_install_method": "package",
        "envoy_xds_hosts": ["127.0.0.1"],
        "envoy_tls_enabled": False,
        **variables,
    }
    done = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(extra)],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        },
        check=False,
    )
    return done.returncode, done.stdout + done.stderr
