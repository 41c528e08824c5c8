"""What a client sees through Envoy's TLS listener: workers by path and by header, the rest
to web_api_service, websockets through."""

import json
import ssl
import subprocess

from conftest import FRONT_DOOR, reached
from websockets.sync.client import connect


def test_worker_path_reaches_that_worker_with_prefix_stripped(front_door):
    status, body = front_door("/worker/w1/jsapi/app.js?x=1")
    assert status == 200
    assert body["server"] == "w1"
    assert body["path"] == "/jsapi/app.js?x=1"


def test_bare_worker_path_reaches_the_worker(front_door):
    status, body = front_door("/worker/w10")
    assert (status, body["server"]) == (200, "w10")


def test_w10_never_reaches_w1(front_door):
    assert reached(front_door, "/worker/w10/x") == "w10"
    assert reached(front_door, "/worker/w10/") == "w10"
    assert reached(front_door, "/worker/w1/x") == "w1"


def test_envoy_prefix_header_routes_whatever_the_path(front_door):
    grpc_path = "/io.deephaven.proto.backplane.grpc.SessionService/NewSession"
    assert reached(front_door, grpc_path, {"envoy-prefix": "/worker/w10"}) == "w10"
    assert reached(front_door, grpc_path, {"envoy-prefix": "/worker/w1"}) == "w1"


def test_everything_else_reaches_web_api_service(front_door):
    for path in ["/", "/ide/", "/iriside/login", "/worker/w100/x", "/worker/w1x/y", "/workers"]:
        assert reached(front_door, path) == "web_api_service", path


def test_unknown_envoy_prefix_reaches_web_api_service(front_door):
    assert reached(front_door, "/ide/", {"envoy-prefix": "/worker/nope"}) == "web_api_service"


def test_request_headers_reach_the_worker(front_door):
    status, body = front_door("/worker/w1/echo", {"x-dhops-test": "kept"})
    assert status == 200
    assert body["headers"]["x-dhops-test"] == "kept"


def test_websocket_upgrade_passes_to_the_worker(envoy_ca):
    context = ssl.create_default_context(cafile=envoy_ca)
    with connect("wss://127.0.0.1:8443/worker/w1/socket", ssl=context, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "w1: hello"
        ws.send("again")
        assert ws.recv(timeout=10) == "w1: again"


def test_websocket_upgrade_passes_to_web_api_service(envoy_ca):
    context = ssl.create_default_context(cafile=envoy_ca)
    with connect("wss://127.0.0.1:8443/socket", ssl=context, open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "web_api_service: hi"


def curl_http2(envoy_ca: str, path: str, *args: str) -> tuple[str, dict]:
    """An HTTP/2 client (curl negotiates h2 over TLS): (protocol version, JSON body)."""
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2",
            "--cacert",
            envoy_ca,
            "--max-time",
            "10",
            "-w",
            "\n%{http_version}",
            *args,
            FRONT_DOOR + path,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    body, _sep, version = done.stdout.rpartition("\n")
    assert done.returncode == 0, done.stderr
    return version, json.loads(body)


def test_http2_client_reaches_worker_over_http2(envoy_ca):
    version, body = curl_http2(envoy_ca, "/worker/w1/jsapi/x")
    assert version == "2"
    assert (body["server"], body["path"]) == ("w1", "/jsapi/x")
    assert "upgrade" not in body["headers"]


def test_grpc_style_request_routes_by_envoy_prefix_over_http2(envoy_ca):
    path = "/io.deephaven.proto.backplane.grpc.SessionService/NewSession"
    headers = ["-H", "envoy-prefix: /worker/w10", "-H", "content-type: application/grpc"]
    version, body = curl_http2(envoy_ca, path, "-X", "POST", "--data-binary", "x", *headers)
    assert version == "2"
    assert (body["server"], body["method"], body["path"]) == ("w10", "POST", path)


def test_http2_client_reaches_web_api_service(envoy_ca):
    version, body = curl_http2(envoy_ca, "/ide/")
    assert (version, body["server"]) == ("2", "web_api_service")
