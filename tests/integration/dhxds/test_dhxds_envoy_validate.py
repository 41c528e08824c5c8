"""Every shape of resource dhxds builds is accepted by real Envoy (`envoy --mode validate`)."""

from __future__ import annotations

import json
import subprocess

import pytest
from dhops_testkit import ENVOY_MAIN, ENVOY_OLD, envoy_binary
from dhxds.model import Upstream, Worker
from dhxds.resources import RegistryState, build_clusters, build_route_config
from google.protobuf import json_format

WORKERS = [
    {"id": "w1", "host": "127.0.0.1", "port": 10001},
    {"id": "a.b-c_d", "host": "localhost", "port": 10002, "upstream_protocol": "http1"},
    {"id": "h2", "host": "::1", "port": 10003, "upstream_protocol": "http2"},
    {"id": "tls", "host": "worker.example.internal", "port": 443, "tls": True, "tls_sni": "w.ex"},
    {"id": "raw", "host": "127.0.0.2", "port": 10004, "strip_prefix": False},
    {"id": "custom", "host": "127.0.0.3", "port": 10005, "envoy_prefix": "/dh/custom"},
]


def _bootstrap() -> dict:
    state = RegistryState(
        tuple(sorted((Worker.from_dict(w) for w in WORKERS), key=lambda w: w.id)),
        Upstream("127.0.0.1", 8123, tls=True),
        "rds_config",
    )
    clusters = [json_format.MessageToDict(c) for c in build_clusters(state).values()]
    routes = json_format.MessageToDict(build_route_config(state))
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": routes,
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listener = {
        "name": "http",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
    return {"static_resources": {"listeners": [listener], "clusters": clusters}}


@pytest.mark.parametrize("version", [ENVOY_MAIN, ENVOY_OLD])
def test_envoy_accepts_all_resource_shapes(tmp_path, version):
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(_bootstrap()))
    result = subprocess.run(
        [
            str(envoy_binary(version)),
            "--mode",
            "validate",
            "-c",
            str(config),
            "--disable-hot-restart",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout + result.stderr
    # Nothing we send relies on deprecated fields.
    assert "deprecated" not in (result.stdout + result.stderr).lower()
