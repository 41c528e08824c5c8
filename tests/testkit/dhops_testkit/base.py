"""What every harness part shares: loopback ports, polling, stopping processes by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[3]  # the repository (the kit is installed editable)
CACHE = Path(os.environ.get("DHOPS_CACHE", Path.home() / ".cache" / "dhops-envoy"))
TOKEN = "integration-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll until check() returns a truthy value; raise with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing polled is not up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def tool(name: str) -> str:
    """A console script of this interpreter's environment (the venv), else from PATH."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name


def run_dhxds(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the dhxds CLI to completion, as an operator would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "dhxds", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def missing_prerequisite(reason: str, allow_module_level: bool = False) -> None:
    """A machine prerequisite (a package scripts/bootstrap installs) is missing: under CI that
    is a failure, never a skip; on a developer machine the test is skipped with the reason,
    which names the install command."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason} (scripts/bootstrap installs it)", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)
