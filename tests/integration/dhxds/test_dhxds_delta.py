"""Incremental (delta) xDS through real Envoy 1.36 and 1.40 (the envoy role's bootstrap with
envoy_xds_delta: true), and at the protocol level with a raw delta client for NACKs and
initial_resource_versions."""

from __future__ import annotations

import pytest
from dhops_testkit import CDS_TYPE, ENVOY_MAIN, ENVOY_OLD, HOST, XdsClient, wait_for

DELTA_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
@pytest.mark.parametrize("ads", [True, False])
def test_delta_add_replace_remove_through_envoy(start_envoy, daemon, backends, version, ads):
    daemon.put_worker("w1", backends.start("w1"))
    envoy = start_envoy(version, "ads" if ads else "separate", envoy_xds_delta=True)
    wait_for(lambda: envoy.backend_of("/worker/w1/") == "w1", 60, "w1 over delta xDS")
    transports = {n["transport"] for n in daemon.call("GET", "/v1/nodes").json()["nodes"]}
    assert transports == {"delta"}

    resp = daemon.call(
        "PUT",
        "/v1/workers/w2?wait=routable&timeout=10",
        {"host": HOST, "port": backends.start("w2")},
    )
    assert resp.status_code == 201, resp.text
    assert envoy.backend_of("/worker/w2/x") == "w2"

    daemon.put_worker("w2", backends.start("w2b"))
    answers = envoy.answers_until("/worker/w2/x", until="w2b")
    assert set(answers) <= {"w2", "w2b"}, answers

    assert daemon.call("DELETE", "/v1/workers/w2").status_code == 204
    answers = envoy.answers_until("/worker/w2/x", until="web_api_service")
    assert set(answers) <= {"w2b", "web_api_service"}, answers
    wait_for(lambda: "worker_w2" not in envoy.clusters(), 30, "w2's cluster removed")
    assert envoy.backend_of("/worker/w1/") == "w1"
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_delta_envoy_reconnects_to_a_restarted_daemon_without_a_gap(
    start_envoy, daemon, backends, version
):
    """kill -9 of dhxds: Envoy keeps routing; on reconnect it states what it holds
    (initial_resource_versions) and gets only the difference."""
    daemon.put_worker("w1", backends.start("w1"))
    envoy = start_envoy(version, "ads", envoy_xds_delta=True)
    wait_for(lambda: envoy.backend_of("/worker/w1/") == "w1", 60, "w1")
    daemon.kill9()
    assert envoy.backend_of("/worker/w1/") == "w1"
    daemon.start()
    wait_for(envoy.connected, 60, "Envoy reconnected")
    daemon.put_worker("w2", backends.start("w2"))
    wait_for(lambda: envoy.backend_of("/worker/w2/") == "w2", 30, "w2 after the restart")
    assert envoy.backend_of("/worker/w1/") == "w1"
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0


def _min_clusters(count: int):
    """A bootstrap edit: Envoy's minimum-clusters validator on the ADS source rejects (NACKs)
    a CDS update that leaves fewer than `count` clusters."""

    def edit(config: dict) -> None:
        config["dynamic_resources"]["ads_config"]["config_validators"] = [
            {
                "name": "envoy.config.validators.minimum_clusters_validator",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.config.validators."
                    "minimum_clusters.v3.MinimumClustersValidator",
                    "min_clusters_num": count,
                },
            }
        ]

    return edit


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_delta_nack_from_a_real_envoy_keeps_its_state_and_the_next_change_recovers(
    start_envoy, daemon, backends, version
):
    for name in ("w1", "w2"):
        daemon.put_worker(name, backends.start(name))
    # web_api_service, w1 and w2 (CDS clusters): a removal goes below 3.
    envoy = start_envoy(version, "ads", edit=_min_clusters(3), envoy_xds_delta=True)
    wait_for(lambda: envoy.backend_of("/worker/w2/") == "w2", 60, "w2 over delta xDS")

    assert daemon.call("DELETE", "/v1/workers/w2").status_code == 204

    def nack():
        return next(n["nack"] for n in daemon.call("GET", "/v1/nodes").json()["nodes"])

    seen = wait_for(nack, 30, "the NACK in /v1/nodes")
    assert "below configured minimum" in seen["message"], seen
    assert envoy.stat("cluster_manager.cds.update_rejected") >= 1
    assert "worker_w2" in envoy.clusters()  # Envoy kept its last good state
    assert envoy.backend_of("/worker/w2/") == "web_api_service"  # its route went first
    assert envoy.backend_of("/worker/w1/") == "w1"

    # A registration makes a new version, diffed against what Envoy ACKed: w2's removal
    # and w3 go together, and the count stays at the minimum, so it is ACKed.
    daemon.put_worker("w3", backends.start("w3"))
    wait_for(lambda: envoy.backend_of("/worker/w3/") == "w3", 30, "w3 after the NACK")
    wait_for(lambda: nack() is None, 30, "the NACK cleared")
    wait_for(lambda: "worker_w2" not in envoy.clusters(), 30, "w2 removed with w3's update")


def _delta_client(daemon, **fields) -> XdsClient:
    client = XdsClient(daemon.xds_port, DELTA_ADS, delta=True)
    client.send(node={"id": "raw-delta", "cluster": "front"}, type_url=CDS_TYPE, **fields)
    return client


def test_delta_initial_versions_and_nack_at_the_protocol_level(daemon, backends):
    daemon.put_worker("w1", backends.start("w1"))
    daemon.put_worker("w2", backends.start("w2"))
    client = _delta_client(daemon, resource_names_subscribe=["*"])
    try:
        first = client.recv(10)
        held = {r.name: r.version for r in first.resources}
        assert set(held) == {"web_api_service", "worker_w1", "worker_w2"}
        client.send(type_url=CDS_TYPE, response_nonce=first.nonce)
        daemon.put_worker("w3", backends.start("w3"))
        change = client.recv(10)
        assert [r.name for r in change.resources] == ["worker_w3"]
        # Reject it: nothing is resent; the next change is diffed against what was ACKed.
        client.send(
            type_url=CDS_TYPE,
            response_nonce=change.nonce,
            error_detail={"code": 3, "message": "rejected by test"},
        )
        assert client.nothing_within(1)
        assert daemon.call("DELETE", "/v1/workers/w1").status_code == 204
        after = client.recv(10)
        assert [r.name for r in after.resources] == ["worker_w3"]
        assert list(after.removed_resources) == ["worker_w1"]
    finally:
        client.close()

    # A reconnect that states what it holds gets only what differs.
    held.pop("worker_w1")
    again = _delta_client(daemon, resource_names_subscribe=["*"], initial_resource_versions=held)
    try:
        resp = again.recv(10)
        assert [r.name for r in resp.resources] == ["worker_w3"]
        assert list(resp.removed_resources) == []
    finally:
        again.close()
