"""The envoy role's client settings (found with real Deephaven clients, see
tests/integration/deephaven) as a real Envoy applies them, with the role's own bootstrap."""

from __future__ import annotations

import pytest
import requests
from dhops_testkit import ENVOY_MAIN, ENVOY_OLD, HOST, Backends, Daemon, Envoy, wait_for

NO_LIMIT_WARNING = "no configured limit to the number of allowed active downstream connections"


@pytest.fixture
def stack(tmp_path):
    """start(**role_vars) -> a running Envoy (role bootstrap) in front of a stand-in."""
    backends = Backends()
    daemon = Daemon(tmp_path / "dhxds", backends.start("web_api_service")).start()
    started: list[Envoy] = []

    def start(version: str = ENVOY_MAIN, **role_vars) -> Envoy:
        envoy = Envoy(version, tmp_path, daemon.xds_port, **role_vars)
        started.append(envoy)
        envoy.start()
        wait_for(lambda: envoy.backend_of("/") == "web_api_service", 30, "the default route")
        return envoy

    yield start
    for envoy in started:
        envoy.stop()
    daemon.stop()
    backends.close()


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_the_downstream_connection_limit_silences_envoys_warning(stack, version):
    assert NO_LIMIT_WARNING not in stack(version).log()
    assert NO_LIMIT_WARNING in stack(version, envoy_max_downstream_connections=0).log()


def test_request_headers_up_to_the_configured_size_pass(stack):
    # 80 KiB in all (more than Envoy's default of 60), in fields the stand-in accepts (< 8 KiB).
    header = {f"x-large-{i}": "a" * 7000 for i in range(12)}
    assert stack().get("/", headers=header).status_code == 200
    assert stack(envoy_max_request_headers_kb=60).get("/", headers=header).status_code == 431


@pytest.mark.parametrize("keep", [True, False])
def test_worker_cluster_stats_can_be_dropped(tmp_path, keep):
    """envoy_worker_cluster_stats: false drops the per-worker cluster stats, keeps the rest."""
    backends = Backends()
    daemon = Daemon(tmp_path / "dhxds", backends.start("web_api_service")).start()
    envoy = None
    try:
        daemon.put_worker("w1", backends.start("w1"))
        envoy = Envoy(ENVOY_MAIN, tmp_path, daemon.xds_port, envoy_worker_cluster_stats=keep)
        envoy.start()
        wait_for(lambda: envoy.backend_of("/worker/w1/") == "w1", 30, "w1 through Envoy")
        stats = requests.get(f"http://{HOST}:{envoy.admin_port}/stats", timeout=5).text
        assert "cluster.web_api_service.upstream_rq_total" in stats
        assert ("cluster.worker_w1.upstream_rq_total" in stats) is keep
    finally:
        if envoy is not None:
            envoy.stop()
        daemon.stop()
        backends.close()
