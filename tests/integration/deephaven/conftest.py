"""Real Deephaven Community Core workers (PyPI deephaven-server, Java 17) behind dhxds and a
real Envoy running the envoy role's bootstrap with TLS on, driven with the real pydeephaven
client. Its own CI stage (`scripts/test` stage `deephaven`):

    scripts/harness/deephaven.sh && pytest tests/integration/deephaven

A plain `pytest tests` leaves this directory to that stage: it is collected only when named on
the command line (or with DHOPS_DEEPHAVEN=1). Missing Java or wheels FAIL the tests (with the
reason), they are never skipped. The workers (3 JVMs, 512 MiB heap each) start in parallel once
per session and are stopped by their PID.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from dhops_testkit import ENVOY_MAIN, HOST, TOKEN, Backends, Daemon, Envoy, run_dhxds, wait_for
from dhops_testkit.ansible_run import ansible_module
from dhops_testkit.collection import collected_only_when_named
from dhops_testkit.deephaven import DeephavenWorker, ensure_prerequisites, start_workers
from dhops_testkit.tls import self_signed_certificate

HERE = Path(__file__).resolve().parent
# w1 and w10: ids where one is a prefix of the other; w3 joins while others stream, then is
# removed and stopped (the last test).
WORKERS = ["w1", "w10", "w3"]
TIMINGS: dict[str, float] = {}


pytest_ignore_collect = collected_only_when_named(HERE, "DHOPS_DEEPHAVEN")


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_line(
            "deephaven timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items())
        )


@pytest.fixture(scope="session")
def workers(tmp_path_factory) -> dict[str, DeephavenWorker]:
    started = time.monotonic()
    try:
        ensure_prerequisites()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    TIMINGS["prerequisites"] = time.monotonic() - started
    started = time.monotonic()
    running = start_workers(WORKERS, tmp_path_factory.mktemp("deephaven"))
    TIMINGS[f"{len(WORKERS)} workers ready (parallel)"] = time.monotonic() - started
    yield {w.name: w for w in running}
    for worker in running:
        worker.stop()


@dataclass
class Stack:
    envoy: Envoy
    daemon: Daemon
    ca: Path
    workers: dict[str, DeephavenWorker]

    def routable(self, worker_id: str) -> bool:
        return self.envoy.get(f"/worker/{worker_id}/jsapi/dh-core.js").status_code == 200


@pytest.fixture(scope="session")
def stack(workers, tmp_path_factory) -> Stack:
    workdir = tmp_path_factory.mktemp("stack")
    backends = Backends()
    daemon = envoy = None
    try:
        web_api_port = backends.start("web_api_service")
        daemon = Daemon(workdir / "dhxds", web_api_port).start()
        cert, key = self_signed_certificate(workdir)
        envoy = Envoy(ENVOY_MAIN, workdir, daemon.xds_port, tls=(cert, key)).start()
        # w1 through the xds_worker module, w10 through the CLI (w3: the API, in a test).
        module = ansible_module(
            workdir,
            "xds_worker",
            {
                "api_url": daemon.api,
                "token": TOKEN,
                "id": "w1",
                "host": HOST,
                "port": workers["w1"].port,
            },
        )
        assert module.rc == 0 and module.result["changed"] is True, module.result
        cli = run_dhxds(
            "workers",
            "add",
            "w10",
            "--host",
            HOST,
            "--port",
            str(workers["w10"].port),
            "--config",
            str(daemon.config_path),
        )
        assert cli.returncode == 0, cli.stderr
        stack = Stack(envoy, daemon, cert, workers)
        for worker_id in ("w1", "w10"):
            wait_for(lambda w=worker_id: stack.routable(w), 30, f"{worker_id} routable", 0.2)
        yield stack
    finally:
        if envoy is not None:
            envoy.stop()
        if daemon is not None:
            daemon.stop()
        backends.close()
