"""The churn defects of issue 9, replayed against the real daemon: raw xDS streams where the
defect is about the protocol, a real Envoy where it is about what a client sees."""

from __future__ import annotations

import copy
import json
import signal
import time

import pytest
import yaml
from dhops_testkit import (
    CDS_TYPE,
    ENVOY_MAIN,
    ENVOY_OLD,
    RDS_TYPE,
    AckingAds,
    Envoy,
    XdsClient,
    open_ads,
    route_clusters,
    wait_for,
)

RDS_V3 = "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes"
RDS_V2 = "/envoy.api.v2.RouteDiscoveryService/StreamRoutes"
RDS_TYPE_V2 = "type.googleapis.com/envoy.api.v2.RouteConfiguration"


def test_routes_follow_a_burst_instead_of_starving(daemon, backends):
    """Defect 1: 60 registrations 15 ms apart, ACKs 40 ms after each response. Routes keep
    arriving during the burst (before: not one until the burst ended)."""
    port = backends.start("burst")
    envoy = AckingAds(daemon, "burst-node", delay=0.040)
    try:
        wait_for(lambda: "web_api_service" in envoy.routed, 10, "the first route configuration")
        put_at: dict[str, float] = {}
        for i in range(60):
            put_at[f"worker_b{i}"] = time.monotonic()
            daemon.put_worker(f"b{i}", port)
            time.sleep(0.015)
        last_put = time.monotonic()
        wait_for(lambda: put_at.keys() <= envoy.routed.keys(), 30, "every burst route")
        during = [c for c in put_at if envoy.routed[c] < last_put]
        assert len(during) >= 30, f"only {len(during)} of 60 routes arrived during the burst"
    finally:
        envoy.close()


def test_a_silent_old_stream_does_not_hold_back_the_new_one(daemon, backends):
    """Defect 2: node N's old ADS stream stays open and silent (a dead peer); N's new stream
    gets a new worker's route as soon as it ACKs the worker's cluster."""
    old = open_ads(daemon, "node-n")
    assert old.recv(10).type_url == CDS_TYPE  # received, never ACKed: silent from here on
    new = open_ads(daemon, "node-n")
    try:
        cds = new.recv(10)
        new.ack(cds)
        routes = new.recv(10)
        new.ack(routes, resource_names=["rds_config"])
        daemon.put_worker("w2", backends.start("w2"))
        cds = new.recv(10)
        assert cds.type_url == CDS_TYPE
        new.ack(cds)
        routes = new.recv(10)  # before: never, the old stream had to ACK the cluster too
        assert "worker_w2" in route_clusters(routes)
    finally:
        new.close()
        old.close()


@pytest.mark.parametrize("path,type_url", [(RDS_V3, RDS_TYPE), (RDS_V2, RDS_TYPE_V2)])
def test_an_rds_only_subscriber_gets_the_route_configuration(daemon, backends, path, type_url):
    """Defect 3: a node that takes no clusters from dhxds still gets its routes, the
    web_api_service default route included."""
    daemon.put_worker("w1", backends.start("w1"))
    client = XdsClient(daemon.xds_port, path)
    try:
        client.send(
            node={"id": "rds-only", "cluster": "front"},
            type_url=type_url,
            resource_names=["rds_config"],
        )
        resp = client.recv(6)  # the CDS grace is 2 s (before: 10 s, then nothing at all)
        assert resp.type_url == type_url and len(resp.resources) == 1
        client.ack(resp, resource_names=["rds_config"])
        assert client.nothing_within(1)  # ACKed: nothing is resent
    finally:
        client.close()


def rds_only_envoy(tmp_path, daemon, web_api_port: int, version: str) -> Envoy:
    """An Envoy whose clusters are static (web_api_service among them) and whose routes come
    from dhxds over RDS: the separate-streams bootstrap without its CDS subscription."""
    envoy = Envoy(version, tmp_path, daemon.xds_port, "separate")
    bootstrap = yaml.safe_load(envoy.config_path.read_text())
    del bootstrap["dynamic_resources"]["cds_config"]
    [xds] = bootstrap["static_resources"]["clusters"]
    web_api = copy.deepcopy(xds)
    web_api["name"] = web_api["load_assignment"]["cluster_name"] = "web_api_service"
    web_api.pop("typed_extension_protocol_options", None)
    [locality] = web_api["load_assignment"]["endpoints"]
    locality["lb_endpoints"] = locality["lb_endpoints"][:1]
    socket = locality["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    socket["port_value"] = web_api_port
    bootstrap["static_resources"]["clusters"].append(web_api)
    envoy.config_path.write_text(json.dumps(bootstrap))  # JSON is YAML
    return envoy


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_an_rds_only_envoy_routes_through_its_static_clusters(
    tmp_path, daemon, backends, web_api_port, version
):
    """The same through a real Envoy: the default route reaches web_api_service."""
    daemon.put_worker("w1", backends.start("w1"))
    envoy = rds_only_envoy(tmp_path, daemon, web_api_port, version).start()
    try:
        wait_for(lambda: envoy.backend_of("/anything") == "web_api_service", 30, "default route")
    finally:
        envoy.stop()


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_workers_registered_by_name_never_answer_503(start_envoy, daemon, backends, version):
    """Defect 4: a worker registered by host name is routable without a 503 on the way
    (dhxds resolves it: a STATIC cluster is ready when ACKed); a name that does not resolve
    breaks nothing else and shows in /metrics."""
    daemon.put_worker("w1", backends.start("w1"))
    envoy = start_envoy(version, "ads")
    wait_for(lambda: envoy.backend_of("/worker/w1/") == "w1", 60, "w1")

    resp = daemon.call("PUT", "/v1/workers/bad", {"host": "nx-worker.invalid", "port": 9})
    assert resp.status_code == 201
    resp = daemon.call(
        "PUT", "/v1/workers/byname", {"host": "localhost", "port": backends.start("byname")}
    )
    assert resp.status_code == 201
    answers = envoy.answers_until("/worker/byname/x", until="byname")
    assert set(answers) <= {"web_api_service", "byname"}, answers

    assert envoy.backend_of("/worker/w1/") == "w1"
    assert envoy.backend_of("/worker/bad/x") == "web_api_service"
    assert "worker_bad" not in envoy.clusters()
    metrics = daemon.call("GET", "/metrics").text
    assert 'dhxds_worker_unresolved{host="nx-worker.invalid",worker="bad"} 1.0' in metrics
    assert 'worker="byname"' not in metrics
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_a_burst_through_real_envoy_never_misroutes(start_envoy, daemon, backends, version):
    """Defect 1 through Envoy: 40 registrations 15 ms apart while requests flow; every worker
    becomes routable, and no request on the way sees a 503 or another worker."""
    envoy = start_envoy(version, "ads")
    ports = {f"b{i}": backends.start(f"b{i}") for i in range(40)}
    seen: dict[str, set] = {name: set() for name in ports}
    for name, port in ports.items():
        daemon.put_worker(name, port)
        for probe in list(ports)[: list(ports).index(name) + 1][-3:]:
            resp = envoy.get(f"/worker/{probe}/x")
            seen[probe].add(resp.json()["backend"] if resp.status_code == 200 else resp.status_code)
        time.sleep(0.015)
    for name in ports:
        wait_for(lambda n=name: envoy.backend_of(f"/worker/{n}/x") == n, 30, f"{name} routable")
        assert seen[name] <= {"web_api_service", name}, (name, seen[name])
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_a_frozen_envoy_does_not_hold_back_its_replacement(tmp_path, daemon, backends, version):
    """Defect 2 through Envoy: the old Envoy of node N is frozen (SIGSTOP: its connection
    stays open and silent, like a dead peer); the new Envoy of N gets a new worker, and
    wait=routable answers 201 without waiting for the frozen one."""
    old = Envoy(version, tmp_path, daemon.xds_port, "ads", envoy_node_id="node-n").start()
    new = None
    try:
        old.proc.send_signal(signal.SIGSTOP)
        new = Envoy(version, tmp_path, daemon.xds_port, "ads", envoy_node_id="node-n").start()
        resp = daemon.call(
            "PUT",
            "/v1/workers/w2?wait=routable&timeout=10",
            {"host": "127.0.0.1", "port": backends.start("w2")},
        )
        assert resp.status_code == 201, resp.text
        assert new.backend_of("/worker/w2/x") == "w2"
    finally:
        old.proc.send_signal(signal.SIGCONT)
        old.stop()
        if new is not None:
            new.stop()
