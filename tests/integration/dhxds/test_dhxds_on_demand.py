"""On-demand worker clusters (envoy_xds_on_demand: ODCDS over delta ADS) through real Envoy 1.36
and 1.40: a fixed route table, worker clusters fetched when a request names them."""

from __future__ import annotations

import time

import grpc
import pytest
from dhops_testkit import ENVOY_MAIN, ENVOY_OLD, GrpcBackend, wait_for

ON_DEMAND = {"envoy_xds_delta": True, "envoy_xds_on_demand": True}


@pytest.fixture(params=[ENVOY_MAIN, ENVOY_OLD])
def envoy(request, start_envoy):
    envoy = start_envoy(request.param, "ads", **ON_DEMAND)
    wait_for(lambda: envoy.backend_of("/") == "web_api_service", 60, "the fixed routes")
    return envoy


def test_a_worker_is_fetched_by_the_first_request_that_names_it(daemon, backends, envoy):
    daemon.put_worker("w1", backends.start("w1"))
    daemon.put_worker("w10", backends.start("w10"))
    assert envoy.clusters() & {"worker_w1", "worker_w10"} == set()  # nothing unasked

    w1 = envoy.get("/worker/w1/jsapi/a.js?x=1").json()
    assert (w1["backend"], w1["path"]) == ("w1", "/jsapi/a.js?x=1")
    assert envoy.get("/worker/w1").json()["path"] == "/"
    by_header = envoy.get("/grpc.Service/Call", headers={"envoy-prefix": "/worker/w10"}).json()
    assert (by_header["backend"], by_header["path"]) == ("w10", "/grpc.Service/Call")
    assert {"worker_w1", "worker_w10"} <= envoy.clusters()
    for path in ("/", "/iriside/", "/worker", "/worker/", "/workers/w1"):
        assert envoy.backend_of(path) == "web_api_service", path
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0


def test_replace_and_remove_reach_an_envoy_that_holds_the_worker(daemon, backends, envoy):
    daemon.put_worker("w1", backends.start("w1"))
    assert envoy.backend_of("/worker/w1/x") == "w1"
    daemon.put_worker("w1", backends.start("w1b"))
    answers = envoy.answers_until("/worker/w1/x", until="w1b", timeout=30)
    assert set(answers) <= {"w1", "w1b"}, answers
    assert daemon.call("DELETE", "/v1/workers/w1").status_code == 204
    # Envoy never asks for a name twice: the cluster stays, empty, and requests fail fast.
    answers = envoy.answers_until("/worker/w1/x", until=503, timeout=30)
    assert set(answers) <= {"w1b", 503}, answers
    assert "worker_w1" in envoy.clusters()
    daemon.put_worker("w1", backends.start("w1c"))
    answers = envoy.answers_until("/worker/w1/x", until="w1c", timeout=30)
    assert set(answers) <= {503, "w1c"}, answers


def test_an_unknown_worker_waits_for_the_grace_then_fails_fast(daemon, backends, envoy):
    t0 = time.monotonic()
    resp = envoy.get("/worker/nope/x")
    waited = time.monotonic() - t0
    assert resp.status_code == 503
    assert waited >= 0.9, waited  # dhxds' grace for a registration in flight (1 s)
    t0 = time.monotonic()
    assert envoy.get("/worker/nope/y").status_code == 503
    assert time.monotonic() - t0 < 0.9  # the empty cluster answers at once now
    assert envoy.backend_of("/x", headers={"envoy-prefix": "/worker/other"}) is None
    # Registered later, it is pushed to this Envoy, which asked for it once.
    daemon.put_worker("nope", backends.start("nope"))
    wait_for(lambda: envoy.backend_of("/worker/nope/x") == "nope", 30, "nope routed")


def test_a_registration_during_the_wait_answers_the_waiting_request(daemon, backends, envoy):
    import threading

    port = backends.start("late")
    timer = threading.Timer(0.3, daemon.put_worker, ("late", port))
    timer.start()
    try:
        assert envoy.backend_of("/worker/late/x") == "late"
    finally:
        timer.join()


def test_grpc_to_an_unknown_worker_gets_unavailable(daemon, envoy):
    with grpc.insecure_channel(f"127.0.0.1:{envoy.listen_port}") as channel:
        say = channel.unary_unary("/test.Echo/Say")
        with pytest.raises(grpc.RpcError) as failed:
            say(b"ping", metadata=[("envoy-prefix", "/worker/nope")], timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_reaches_a_worker_fetched_on_demand(daemon, envoy):
    server = GrpcBackend("g1")
    try:
        daemon.put_worker("g1", server.port)
        with grpc.insecure_channel(f"127.0.0.1:{envoy.listen_port}") as channel:
            say = channel.unary_unary("/test.Echo/Say")
            reply = say(b"ping", metadata=[("envoy-prefix", "/worker/g1")], timeout=10)
        assert reply == b"g1:ping"
    finally:
        server.close()


def test_explicit_workers_keep_their_own_routes(daemon, backends, envoy):
    """A worker with its own envoy_prefix or without prefix stripping is sent unasked, with
    routes of its own ahead of the fixed ones."""
    daemon.put_worker("raw", backends.start("raw"), strip_prefix=False, envoy_prefix="/custom/raw")
    kept = "/worker/raw/keep/me"
    wait_for(lambda: envoy.get(kept).json()["path"] == kept, 30, "the explicit worker's routes")
    assert "worker_raw" in envoy.clusters()  # sent unasked: its own routes name it
    assert envoy.backend_of("/", headers={"envoy-prefix": "/custom/raw"}) == "raw"


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_reconnect_states_the_on_demand_clusters_and_keeps_routing(
    daemon, backends, start_envoy, version
):
    """kill -9 of dhxds: Envoy keeps its on-demand clusters and, reconnected, still gets
    changes of the workers it asked for."""
    envoy = start_envoy(version, "ads", **ON_DEMAND)
    daemon.put_worker("w1", backends.start("w1"))
    wait_for(lambda: envoy.backend_of("/worker/w1/") == "w1", 60, "w1 on demand")
    daemon.kill9()
    assert envoy.backend_of("/worker/w1/") == "w1"
    daemon.start()
    wait_for(envoy.connected, 60, "Envoy reconnected")
    daemon.put_worker("w1", backends.start("w1b"))
    wait_for(lambda: envoy.backend_of("/worker/w1/") == "w1b", 30, "w1's change after restart")
    nodes = daemon.call("GET", "/v1/nodes").json()["nodes"]
    assert [n["transport"] for n in nodes] == ["delta"]
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0
