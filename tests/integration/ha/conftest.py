"""The fault table of issue 11 with real processes: a 3-member etcd cluster (Debian's
etcd-server), two dhxds replicas with `state.backend: etcd` sharing one prefix, two real
Envoys (1.40 and 1.36) running the envoy role's bootstrap with ADS and both replicas in the
`xds_service` cluster, stand-in workers and web_api_service, and a load generator sending
requests through both Envoys during every fault. Its own CI stage (`scripts/test` stage
`faults`):

    pytest tests/integration/ha -p no:cacheprovider -ra

A plain `pytest tests` leaves this directory to that stage: it is collected only when named on
the command line (or with DHOPS_FAULTS=1). One control plane per module; every test starts by
bringing every process back (`Plane.ensure_up`), so each fault starts from a whole plane.
Figures go to reports/faults.json and reports/faults.md (`python -m dhops_testkit.ha
reports/faults.json` prints the table for docs/benchmarks/).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dhops_testkit import ENVOY_MAIN, ENVOY_OLD, ROOT, Backends
from dhops_testkit.collection import collected_only_when_named
from dhops_testkit.etcd import EtcdCluster, etcd_binary
from dhops_testkit.ha import (
    BASE_WORKERS,
    PATHS,
    REPLICA_HOSTS,
    FaultReport,
    LoadGen,
    Plane,
    Replica,
    ha_envoy,
    shared_free_port,
)

HERE = Path(__file__).resolve().parent


pytest_ignore_collect = collected_only_when_named(HERE, "DHOPS_FAULTS")


@pytest.fixture(scope="session")
def fault_report():
    report = FaultReport()
    yield report
    if report.faults:
        report.write(ROOT / "reports" / "faults.json", ROOT / "reports" / "faults.md")


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    if etcd_binary() is None:
        pytest.fail("etcd is not installed (scripts/bootstrap installs etcd-server)")
    workdir = tmp_path_factory.mktemp("ha")
    started: list = []
    backends = Backends()
    try:
        etcd = EtcdCluster(workdir / "etcd").start()
        started.append(etcd)
        web_api_port = backends.start("web_api_service")
        xds_port = shared_free_port()
        replicas = [
            Replica(name, workdir / name, host, xds_port, web_api_port, etcd)
            for name, host in zip(("a", "b"), REPLICA_HOSTS, strict=True)
        ]
        for replica in replicas:
            replica.spawn()
            started.append(replica)
        for replica in replicas:
            replica.wait_healthy()
        envoys = {v: ha_envoy(v, workdir, xds_port) for v in (ENVOY_MAIN, ENVOY_OLD)}
        started.extend(envoys.values())
        load = LoadGen(envoys, PATHS)
        plane = Plane(etcd, replicas, envoys, backends, load)
        for i, worker_id in enumerate(BASE_WORKERS):
            plane.register(replicas[i % 2], worker_id, wait=False)
        for envoy in envoys.values():
            envoy.start()
        plane.ensure_up()
        load.start()
        started.insert(0, load)
        yield plane
    finally:
        for item in started:
            item.stop()
        backends.close()
