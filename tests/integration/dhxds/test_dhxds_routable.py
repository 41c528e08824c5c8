"""wait=routable and /v1/nodes through real Envoys: an answer of 200/201 means the worker is
reachable through every connected Envoy at once; a disconnected-but-open stream is reported."""

from __future__ import annotations

import pytest
from dhops_testkit import ENVOY_MAIN, ENVOY_OLD, HOST, open_ads, wait_for

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


@pytest.mark.parametrize("mode", ["ads", "separate"])
def test_routable_answer_means_reachable_now(backends, daemon, start_envoy, mode):
    envoys = [start_envoy(ENVOY_MAIN, mode), start_envoy(ENVOY_OLD, mode)]
    for n in range(1, 6):
        port = backends.start(f"w{n}")
        resp = daemon.call(
            "PUT", f"/v1/workers/w{n}?wait=routable&timeout=10", {"host": HOST, "port": port}
        )
        assert resp.status_code == 201, resp.text
        for envoy in envoys:  # no polling: routable means routable
            assert envoy.backend_of(f"/worker/w{n}/x") == f"w{n}"
    nodes = daemon.call("GET", "/v1/nodes").json()["nodes"]
    ids = {node["id"] for node in nodes}
    assert ids == {f"test-envoy-{envoy.listen_port}" for envoy in envoys}
    for node in nodes:
        assert node["api"] == "v3" and node["nack"] is None
        assert node["connected_since"].endswith("Z")
        assert node["transport"] in ({"ads"} if mode == "ads" else {"cds", "rds"})
    acked = {}
    for node in nodes:
        acked.update(node["acked"])
    assert CLUSTER in acked and ROUTES in acked


def test_a_stopped_envoy_is_no_longer_waited_for(backends, daemon, start_envoy):
    first = start_envoy(ENVOY_MAIN)
    second = start_envoy(ENVOY_MAIN)
    second.stop()
    port = backends.start("w1")
    resp = daemon.call(
        "PUT", "/v1/workers/w1?wait=routable&timeout=10", {"host": HOST, "port": port}
    )
    assert resp.status_code == 201, resp.text
    assert first.backend_of("/worker/w1/") == "w1"


def test_a_node_that_does_not_ack_is_reported_pending(backends, daemon):
    """An Envoy that stops ACKing: the registration is stored, the answer is 202 naming it."""
    silent = open_ads(daemon, "silent-envoy")
    try:
        assert silent.recv(10).type_url == CLUSTER  # received, never ACKed
        resp = daemon.call(
            "PUT",
            "/v1/workers/w1?wait=routable&timeout=1",
            {"host": HOST, "port": backends.start("w1")},
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["pending"] == ["silent-envoy"]
        assert daemon.call("GET", "/v1/workers/w1").status_code == 200
    finally:
        silent.close()


def test_a_nack_shows_in_nodes_and_metrics(daemon):
    client = open_ads(daemon, "picky-envoy")
    try:
        cds = client.recv(10)
        client.send(
            version_info="",
            response_nonce=cds.nonce,
            type_url=CLUSTER,
            error_detail={"code": 3, "message": "cluster rejected by test"},
        )
        nack = wait_for(
            lambda: next(n["nack"] for n in daemon.call("GET", "/v1/nodes").json()["nodes"]),
            10,
            "the NACK in /v1/nodes",
        )
        assert nack == {"version": cds.version_info, "message": "cluster rejected by test"}
        assert (
            'dhxds_nacks_total{transport="v3",type="cds"} 1.0'
            in daemon.call("GET", "/metrics").text
        )
    finally:
        client.close()
