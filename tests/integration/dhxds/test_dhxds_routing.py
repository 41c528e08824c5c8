"""What a client sees through a real Envoy fed by dhxds: paths, headers, websockets, gRPC."""

from __future__ import annotations

import grpc
import pytest
from dhops_testkit import ENVOY_MAIN, ENVOY_OLD, GrpcBackend, wait_for
from websockets.sync.client import connect


@pytest.fixture
def grpc_backend():
    server = GrpcBackend("g1")
    yield server
    server.close()


@pytest.mark.parametrize(
    ("version", "mode"),
    [(ENVOY_MAIN, "ads"), (ENVOY_MAIN, "separate"), (ENVOY_OLD, "ads"), (ENVOY_OLD, "separate")],
)
def test_workers_headers_default_and_websocket(backends, daemon, start_envoy, version, mode):
    for name in ("w1", "w10"):
        daemon.put_worker(name, backends.start(name))
    daemon.put_worker("raw", backends.start("raw"), strip_prefix=False, envoy_prefix="/custom/raw")
    envoy = start_envoy(version, mode)
    wait_for(lambda: envoy.backend_of("/worker/raw/x") == "raw", 60, "routes for all workers")

    # Path routes strip the prefix; w1 never catches w10 (or w100).
    w1 = envoy.get("/worker/w1/jsapi/a.js?x=1").json()
    assert (w1["backend"], w1["path"]) == ("w1", "/jsapi/a.js?x=1")
    w10 = envoy.get("/worker/w10/ide/").json()
    assert (w10["backend"], w10["path"]) == ("w10", "/ide/")
    bare = envoy.get("/worker/w1").json()
    assert (bare["backend"], bare["path"]) == ("w1", "/")
    assert envoy.backend_of("/worker/w100/x") == "web_api_service"
    assert envoy.backend_of("/worker/w1x/y") == "web_api_service"
    # Prefix stripping is per worker.
    assert envoy.get("/worker/raw/keep/me").json()["path"] == "/worker/raw/keep/me"

    # The envoy-prefix header routes whatever the path, and the path stays as sent.
    by_header = envoy.get(
        "/io.deephaven.proto.backplane.grpc.SessionService/x",
        headers={"envoy-prefix": "/worker/w10"},
    ).json()
    assert by_header["backend"] == "w10"
    assert by_header["path"] == "/io.deephaven.proto.backplane.grpc.SessionService/x"
    assert envoy.backend_of("/", headers={"envoy-prefix": "/custom/raw"}) == "raw"
    assert envoy.backend_of("/", headers={"envoy-prefix": "/worker/nope"}) == "web_api_service"

    # Everything else goes to the web_api_service.
    for path in ("/", "/iriside/", "/worker", "/worker/", "/workers/w1"):
        assert envoy.backend_of(path) == "web_api_service", path

    # A websocket upgrade passes through the worker route (HTTP/1.1 upstream).
    with connect(f"ws://127.0.0.1:{envoy.listen_port}/worker/w1/socket") as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "w1:hello"
    with connect(f"ws://127.0.0.1:{envoy.listen_port}/ws") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "web_api_service:hi"


@pytest.mark.parametrize("mode", ["ads", "separate"])
def test_grpc_reaches_worker_by_envoy_prefix_header(daemon, start_envoy, grpc_backend, mode):
    """gRPC (HTTP/2 end to end) through the default upstream protocol, routed by header."""
    daemon.put_worker("g1", grpc_backend.port)
    envoy = start_envoy(ENVOY_MAIN, mode)
    wait_for(lambda: envoy.backend_of("/worker/g1/") is None, 60, "a route to g1 (not JSON)")
    with grpc.insecure_channel(f"127.0.0.1:{envoy.listen_port}") as channel:
        say = channel.unary_unary("/test.Echo/Say")
        reply = say(b"ping", metadata=[("envoy-prefix", "/worker/g1")], timeout=10)
    assert reply == b"g1:ping"


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_grpc_to_an_unknown_envoy_prefix_gets_a_clear_unavailable(daemon, start_envoy, version):
    """A gRPC call whose envoy-prefix names no (routable) worker fails at once with
    UNAVAILABLE and a message naming the prefix, not with whatever web_api_service answers."""
    envoy = start_envoy(version, "ads")
    wait_for(lambda: envoy.backend_of("/") == "web_api_service", 60, "the default route")
    with grpc.insecure_channel(f"127.0.0.1:{envoy.listen_port}") as channel:
        say = channel.unary_unary("/test.Echo/Say")
        with pytest.raises(grpc.RpcError) as failed:
            say(b"ping", metadata=[("envoy-prefix", "/worker/nope")], timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.value.details() == (
        "no worker is registered (or routable yet) for envoy-prefix /worker/nope"
    )
    # Plain HTTP with that header still goes to web_api_service (the routing contract).
    assert envoy.backend_of("/x", headers={"envoy-prefix": "/worker/nope"}) == "web_api_service"
