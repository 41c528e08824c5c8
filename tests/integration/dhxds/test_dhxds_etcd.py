"""Two dhxds replicas on one real 3-member etcd cluster (Debian's etcd-server), each feeding
its own real Envoy: the same content-hash versions on both, a registration through replica A
routable through replica B's Envoy, and the etcd faults of issue 11 (one member killed, all
members down and back). Figures are printed (pytest -s) for the issue's closing note."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from dhops_testkit import CDS_TYPE, ENVOY_MAIN, RDS_TYPE, Daemon, Envoy, open_ads
from dhops_testkit.base import wait_for
from dhops_testkit.etcd import EtcdCluster, require_etcd

require_etcd(allow_module_level=True)


@pytest.fixture
def etcd(tmp_path):
    cluster = EtcdCluster(tmp_path / "etcd").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def replicas(tmp_path, etcd, web_api_port):
    state = {"backend": "etcd", "etcd": {"endpoints": etcd.endpoints, "prefix": "/it/"}}
    started = []
    for name in ("a", "b"):
        daemon = Daemon(tmp_path / name, web_api_port, extra={"state": state})
        started.append(daemon)
        daemon.start()
    yield started
    for daemon in started:
        daemon.stop()


@pytest.fixture
def envoys(tmp_path, replicas):
    started = [Envoy(ENVOY_MAIN, tmp_path, d.xds_port, "ads") for d in replicas]
    for envoy in started:
        envoy.start()
    yield started
    for envoy in started:
        envoy.stop()


def acked(daemon) -> dict[str, str]:
    nodes = daemon.call("GET", "/v1/nodes").json()["nodes"]
    assert len(nodes) == 1, nodes
    return nodes[0]["acked"]


def same_versions(a, b) -> dict[str, str] | None:
    va, vb = acked(a), acked(b)
    return va if va and va == vb and len(va) == 2 else None


def pushes(daemon) -> float:
    """dhxds_pushes_total over all labels: every response sent to any Envoy."""
    text = daemon.call("GET", "/metrics").text
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("dhxds_pushes_total{")
    )


def health(daemon) -> dict:
    return daemon.call("GET", "/healthz", token=None).json()


def test_two_replicas_serve_the_same_versions_and_routes(replicas, envoys, backends):
    a, b = replicas
    envoy_a, envoy_b = envoys
    start = time.monotonic()
    for i in range(5):
        writer = a if i % 2 == 0 else b
        writer.put_worker(f"w{i}", backends.start(f"w{i}"))
    for i in range(5):
        wait_for(lambda i=i: envoy_b.backend_of(f"/worker/w{i}/") == f"w{i}", 20, f"w{i} via B")
        wait_for(lambda i=i: envoy_a.backend_of(f"/worker/w{i}/") == f"w{i}", 20, f"w{i} via A")
    versions = wait_for(lambda: same_versions(a, b), 20, "the same acked versions on A and B")
    print(f"\n5 workers through A/B routable on both Envoys in {time.monotonic() - start:.2f}s")
    print(f"acked versions on both replicas: {versions}")
    assert a.call("GET", "/v1/workers").json() == b.call("GET", "/v1/workers").json()
    # A delete through B is gone through A's Envoy.
    assert b.call("DELETE", "/v1/workers/w0").status_code == 204
    wait_for(lambda: envoy_a.backend_of("/worker/w0/") == "web_api_service", 20, "w0 gone via A")
    wait_for(lambda: same_versions(a, b), 20, "the same versions after the delete")
    # The envoy_prefix guard holds across replicas.
    resp = b.call(
        "PUT", "/v1/workers/x", {"host": "127.0.0.1", "port": 1, "envoy_prefix": "/worker/w1"}
    )
    assert resp.status_code == 409 and "w1" in resp.json()["error"]


def test_etcd_faults_one_member_then_all(etcd, replicas, envoys, backends):
    a, b = replicas
    envoy_b = envoys[1]
    a.put_worker("w1", backends.start("w1"))
    wait_for(lambda: envoy_b.backend_of("/worker/w1/") == "w1", 20, "w1 via B")
    acknowledged = {"w1"}

    # One member (of 3) killed: registrations keep working through both replicas.
    etcd.kill9(0)
    start, failed = time.monotonic(), 0
    for i in range(10):
        writer = a if i % 2 == 0 else b
        resp = writer.call(
            "PUT", f"/v1/workers/m{i}", {"host": "127.0.0.1", "port": backends.start(f"m{i}")}
        )
        if resp.status_code in (200, 201):
            acknowledged.add(f"m{i}")
        else:
            failed += 1
    print(f"\none member down: 10 registrations, {failed} failed, {time.monotonic() - start:.2f}s")
    assert failed == 0
    wait_for(lambda: envoy_b.backend_of("/worker/m8/") == "m8", 20, "m8 via B")
    etcd.restart(0)

    # All members down: Envoys keep serving, healthz degraded, writes 503 with a clear error.
    etcd.kill9_all()
    down = time.monotonic()
    wait_for(lambda: health(a).get("status") == "degraded", 20, "A degraded")
    wait_for(lambda: health(b).get("status") == "degraded", 20, "B degraded")
    print(f"all members down: both replicas degraded after {time.monotonic() - down:.2f}s")
    print(f"healthz: {health(a)}")
    resp = a.call("PUT", "/v1/workers/lost", {"host": "127.0.0.1", "port": 1})
    assert resp.status_code == 503, resp.text
    assert "registry is unavailable" in resp.json()["error"], resp.text
    assert b.call("DELETE", "/v1/workers/w1").status_code == 503
    sent = failed = 0
    until = time.monotonic() + 5
    while time.monotonic() < until:
        for worker_id in ("w1", "m0", "m9"):
            sent += 1
            failed += envoy_b.backend_of(f"/worker/{worker_id}/") != worker_id
    print(f"all members down: {sent} requests through Envoy B in 5s, {failed} failed")
    assert failed == 0
    assert envoy_b.connected()  # dhxds kept serving xDS

    # Members back: writes work again, both replicas converge, nothing acknowledged is lost.
    pushes_before = {d.api: pushes(d) for d in (a, b)}
    back = time.monotonic()
    etcd.restart_all()

    def writable() -> bool:
        resp = b.call(
            "PUT", "/v1/workers/after", {"host": "127.0.0.1", "port": backends.start("after")}
        )
        return resp.status_code in (200, 201)

    # Healthy again without any write (the re-established watch says so).
    wait_for(lambda: health(a).get("status") == "ok", 30, "A healthy again")
    wait_for(lambda: health(b).get("status") == "ok", 30, "B healthy again")
    healthy = time.monotonic() - back
    # The resync changed nothing, so nothing was pushed: no flap (no empty or partial set).
    assert {d.api: pushes(d) for d in (a, b)} == pushes_before
    wait_for(writable, 60, "a write through B after etcd is back", interval=0.5)
    acknowledged.add("after")
    wait_for(lambda: envoy_b.backend_of("/worker/after/") == "after", 20, "after via B")
    print(
        f"members back: both healthy after {healthy:.2f}s, "
        f"writable after {time.monotonic() - back:.2f}s"
    )
    for daemon in (a, b):
        ids = {w["id"] for w in daemon.call("GET", "/v1/workers").json()["workers"]}
        assert ids == acknowledged, (ids, acknowledged)
    wait_for(lambda: same_versions(a, b), 20, "the same versions on A and B")


def test_a_replica_started_before_etcd_serves_nothing_until_its_first_load(tmp_path, web_api_port):
    """No xDS and no API before the first successful load; the daemon waits (and logs why)
    instead of exiting, and serves as soon as etcd answers."""
    etcd = EtcdCluster(tmp_path / "etcd")
    state = {"backend": "etcd", "etcd": {"endpoints": etcd.endpoints}}
    daemon = Daemon(tmp_path / "a", web_api_port, extra={"state": state})
    log = daemon.log_path.open("ab")
    daemon.proc = subprocess.Popen(
        [sys.executable, "-m", "dhxds", "serve", "--config", str(daemon.config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "registry not reachable yet" in daemon.log(), 30, "the waiting log")
        assert daemon.proc.poll() is None
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", daemon.xds_port)) != 0  # no xDS yet
        started = time.monotonic()
        etcd.start()
        wait_for(daemon._healthy, 30, "dhxds healthy once etcd is up")
        print(f"\nserving {time.monotonic() - started:.2f}s after etcd was started")
        daemon.put_worker("w1", 9)
    finally:
        daemon.stop()
        etcd.stop()


def test_a_leased_worker_disappears_by_itself_on_every_replica(replicas, envoys, backends):
    """Worker leases: a registration with ttl that nobody renews goes away by itself (etcd
    expires the lease, both replicas see the delete in their watch, Envoys lose the route)."""
    a, b = replicas
    envoy_a, envoy_b = envoys
    body = {"host": "127.0.0.1", "port": backends.start("lease"), "ttl": 3}
    resp = a.call("PUT", "/v1/workers/lease", body)
    assert resp.status_code == 201 and resp.json()["ttl"] == 3, resp.text
    b.put_worker("stays", backends.start("stays"))
    wait_for(lambda: envoy_b.backend_of("/worker/lease/") == "lease", 20, "lease via B")
    # Renewed through the other replica (a repeated PUT).
    assert b.call("PUT", "/v1/workers/lease", body).status_code in (200, 201)
    assert b.worker("lease")["ttl"] == 3
    lapsed = time.monotonic()
    for envoy in (envoy_a, envoy_b):
        wait_for(
            lambda envoy=envoy: envoy.backend_of("/worker/lease/") == "web_api_service",
            30,
            "the lapsed worker's route gone",
        )
    print(f"\nttl 3 s: gone from both Envoys {time.monotonic() - lapsed:.2f}s after the last PUT")
    for daemon in (a, b):
        assert daemon.worker("lease") is None and daemon.worker("stays") is not None
        assert health(daemon)["status"] == "ok"
    assert envoy_b.backend_of("/worker/stays/") == "stays"
    wait_for(lambda: same_versions(a, b), 20, "the same versions on A and B")


def xds_versions(daemon, node: str) -> dict[str, str]:
    """The CDS and RDS versions a fresh ADS client gets from `daemon` (content hashes)."""
    client = open_ads(daemon, node)
    try:
        versions = {}
        while len(versions) < 2:
            resp = client.recv(timeout=20)
            versions[resp.type_url] = resp.version_info
            # ACK: routes follow only once the clusters are ACKed (make-before-break).
            client.ack(resp, resource_names=["rds_config"] if resp.type_url == RDS_TYPE else [])
        return versions
    finally:
        client.close()


def test_replicas_with_different_config_files_serve_the_shared_config(
    tmp_path, etcd, backends, web_api_port
):
    """web_api_service and static workers are stored in etcd: the replica that starts last
    publishes its file's version (WARNING naming the difference) and every replica serves
    it, so both compute the same versions."""
    state = {"backend": "etcd", "etcd": {"endpoints": etcd.endpoints, "prefix": "/cfg/"}}
    other_web = backends.start("other_web")
    a = Daemon(
        tmp_path / "a",
        web_api_port,
        extra={"state": state, "static_workers": [{"id": "s1", "host": "127.0.0.1", "port": 7001}]},
    )
    b = Daemon(
        tmp_path / "b",
        other_web,
        extra={
            "state": state,
            "static_workers": [
                {"id": "s1", "host": "127.0.0.1", "port": 7002},
                {"id": "s2", "host": "127.0.0.1", "port": 7003},
            ],
        },
    )
    try:
        a.start()
        a.put_worker("w1", backends.start("w1"))
        assert {w["id"] for w in a.call("GET", "/v1/workers").json()["workers"]} == {"s1", "w1"}
        b.start()
        assert "differs from the shared config" in b.log()
        assert "static workers added: s2; static workers changed: s1" in b.log()
        wait_for(
            lambda: a.call("GET", "/v1/workers").json() == b.call("GET", "/v1/workers").json(),
            20,
            "the same workers on A and B",
        )
        workers = {w["id"]: w for w in a.call("GET", "/v1/workers").json()["workers"]}
        assert set(workers) == {"s1", "s2", "w1"}
        assert workers["s1"]["port"] == 7002 and workers["s2"]["static"]
        assert "published by another replica" in a.log()
        versions_a = xds_versions(a, "probe-a")
        versions_b = xds_versions(b, "probe-b")
        assert versions_a == versions_b and set(versions_a) == {CDS_TYPE, RDS_TYPE}
        print(f"\nthe same versions from both replicas: {versions_a}")
        # A is restarted with its own (older) file: it publishes it again (last writer wins)
        # and B follows; the versions agree again.
        a.stop()
        a.start()
        wait_for(
            lambda: (
                {w["id"] for w in b.call("GET", "/v1/workers").json()["workers"]} == {"s1", "w1"}
            ),
            20,
            "B serving A's file again",
        )
        assert xds_versions(a, "probe-a2") == xds_versions(b, "probe-b2") != versions_a
    finally:
        a.stop()
        b.stop()
