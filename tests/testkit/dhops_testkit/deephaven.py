"""Real Deephaven Community Core workers (PyPI deephaven-server, Java 17) and the real
pydeephaven client, for the `deephaven` test stage and `scripts/demo --deephaven`.

Workers are embedded servers on 127.0.0.1 (anonymous auth, small heap), started in parallel,
each publishing a table `whoami` that names it, and stopped by their PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .base import HOST, ROOT, free_port, stop_process

PREREQUISITES = ROOT / "scripts" / "harness" / "deephaven.sh"
READY_TIMEOUT = 240  # a worker is usually ready in 10-30 s; 2 cores shared with others


def ensure_prerequisites() -> None:
    """Java >= 17 and the pinned wheels, installed by scripts/harness/deephaven.sh when missing.

    Raises RuntimeError with the script's explanation when they cannot be installed."""
    proc = subprocess.run(
        ["bash", str(PREREQUISITES)],
        env={**os.environ, "DHOPS_VENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "WARNING" not in ln]
        raise RuntimeError(
            "Deephaven prerequisites missing and not installable:\n" + "\n".join(lines[-20:])
        )


class DeephavenWorker:
    """`python -m dhops_testkit.deephaven_worker` as a subprocess."""

    def __init__(self, name: str, workdir: Path, heap: str = "512m", port: int | None = None):
        self.name = name
        self.port = port or free_port()
        self.workdir = workdir / f"deephaven-{name}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "worker.log"
        self.heap = heap
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_after: float | None = None

    def start(self, detach: bool = False) -> DeephavenWorker:
        """Start without waiting (see wait_ready), so several JVMs boot in parallel.
        detach: in its own session, so it outlives the caller (the demo)."""
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dhops_testkit.deephaven_worker",
                    "--name",
                    self.name,
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--workdir",
                    str(self.workdir),
                    "--heap",
                    self.heap,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=detach,
            )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> DeephavenWorker:
        assert self.proc is not None, "start() first"
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Deephaven worker {self.name} exited with {self.proc.returncode}:\n"
                    + self.log()
                )
            if f"READY {self.name}" in self.log_path.read_text(errors="replace"):
                self.ready_after = time.monotonic() - self.started_at
                return self
            time.sleep(0.5)
        raise AssertionError(
            f"Deephaven worker {self.name} not ready within {timeout}s:\n" + self.log()
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def start_workers(names: list[str], workdir: Path, heap: str = "512m") -> list[DeephavenWorker]:
    """Boot all JVMs at once and wait for every one; on failure stop them all."""
    workers = [DeephavenWorker(name, workdir, heap) for name in names]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


def session(port: int, ca: Path | None = None, envoy_prefix: str | None = None, **kw):
    """A pydeephaven Session to 127.0.0.1:port (TLS when `ca` is given), routed by Envoy with
    the `envoy-prefix` header as Deephaven clients send it."""
    from pydeephaven import Session

    headers = {b"envoy-prefix": envoy_prefix.encode()} if envoy_prefix else None
    return Session(
        host=HOST,
        port=port,
        auth_type="Anonymous",
        use_tls=ca is not None,
        tls_root_certs=ca.read_bytes() if ca else None,
        extra_headers=headers,
        **kw,
    )


def whoami(sess) -> str:
    """Which worker answered: the `whoami` table every test worker publishes."""
    return sess.open_table("whoami").to_arrow().to_pydict()["Worker"][0]
