"""End to end: a worker registered by dhops.envoy.xds_worker is reachable through a real Envoy
fed by a real dhxds, and gone again after state=absent."""

import http.server
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from module_harness import HOST, TOKEN, Dhxds, free_port

ENVOY = (
    Path(os.environ.get("DHOPS_CACHE", Path.home() / ".cache" / "dhops-envoy"))
    / "envoy"
    / "1.40.0"
    / "envoy"
)

TYPES = "type.googleapis.com/envoy.extensions."
HCM = TYPES + "filters.network.http_connection_manager.v3.HttpConnectionManager"
ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}


def address(port):
    return {"socket_address": {"address": HOST, "port_value": port}}


def bootstrap(admin, listen, xds):
    """The shape roles/envoy deploys: CDS and RDS over ADS from dhxds."""
    hcm = {
        "@type": HCM,
        "stat_prefix": "ingress",
        "rds": {"route_config_name": "rds_config", "config_source": ADS_SOURCE},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": TYPES + "filters.http.router.v3.Router"},
            }
        ],
    }
    xds_cluster = {
        "name": "xds_service",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": TYPES + "upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "xds_service",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(xds)}}]}],
        },
    }
    return {
        "node": {"id": "module-test", "cluster": "front-proxy"},
        "admin": {"address": address(admin)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_service"}}],
            },
            "cds_config": ADS_SOURCE,
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": address(listen),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [xds_cluster],
        },
    }


def named_backend(name):
    """A real HTTP server on 127.0.0.1 that answers '<name> <path>'."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{name} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return f"error {exc}"


def wait_for_body(url, expected, timeout=30):
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        body = fetch(url)
        if body == expected:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {expected!r}; last answer {body!r}")


@pytest.fixture
def stack(tmp_path):
    if not ENVOY.is_file():
        pytest.fail(f"Envoy 1.40.0 missing at {ENVOY}: run scripts/harness/envoy-binaries.sh")
    web, worker = named_backend("web"), named_backend("w1")
    daemon = Dhxds(tmp_path / "dhxds", web_api_port=web.server_address[1]).start()
    listen, admin = free_port(), free_port()
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(admin, listen, daemon.xds_port)))
    log = (tmp_path / "envoy.log").open("wb")
    envoy = subprocess.Popen(
        [str(ENVOY), "-c", str(config), "--disable-hot-restart", "--concurrency", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_body(f"http://{HOST}:{listen}/", "web /")
        yield daemon, f"http://{HOST}:{listen}", worker.server_address[1]
    finally:
        envoy.terminate()
        try:
            envoy.wait(15)
        except subprocess.TimeoutExpired:
            envoy.kill()
            envoy.wait()
        log.close()
        daemon.stop()
        web.shutdown()
        worker.shutdown()


def test_registered_worker_is_routed_by_envoy_and_removed_again(run_module, stack):
    daemon, envoy_url, worker_port = stack
    args = {"api_url": daemon.url, "token": TOKEN, "id": "w1", "host": HOST, "port": worker_port}
    assert run_module("xds_worker", args).result["changed"] is True
    wait_for_body(f"{envoy_url}/worker/w1/hello", "w1 /hello")  # prefix stripped
    assert fetch(f"{envoy_url}/other") == "web /other"

    removed = run_module("xds_worker", {**args, "state": "absent"})
    assert removed.result["changed"] is True
    wait_for_body(f"{envoy_url}/worker/w1/hello", "web /worker/w1/hello")
