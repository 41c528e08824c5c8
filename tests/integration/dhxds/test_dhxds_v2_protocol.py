"""xDS v2 (Envoy 1.12-1.17) at the protocol level: no v2 Envoy runs here, so a raw gRPC client
speaks envoy.api.v2 CDS/RDS/ADS to the same daemon that serves v3."""

from __future__ import annotations

import pytest
from dhops_testkit import XdsClient
from envoy.api.v2 import cluster_pb2, route_pb2
from envoy.api.v2.core import base_pb2
from google.rpc import status_pb2

V2_CLUSTER = "type.googleapis.com/envoy.api.v2.Cluster"
V2_ROUTE = "type.googleapis.com/envoy.api.v2.RouteConfiguration"
CDS_V2 = "/envoy.api.v2.ClusterDiscoveryService/StreamClusters"
RDS_V2 = "/envoy.api.v2.RouteDiscoveryService/StreamRoutes"
ADS_V2 = "/envoy.service.discovery.v2.AggregatedDiscoveryService/StreamAggregatedResources"
NODE = base_pb2.Node(id="envoy-1-12", cluster="front-proxy")


@pytest.fixture
def clients(daemon):
    opened: list[XdsClient] = []

    def open_stream(path: str) -> XdsClient:
        client = XdsClient(daemon.xds_port, path)
        opened.append(client)
        return client

    yield open_stream
    for client in opened:
        client.close()


def _clusters(response) -> dict[str, cluster_pb2.Cluster]:
    assert response.type_url == V2_CLUSTER
    out = {}
    for res in response.resources:
        assert res.type_url == V2_CLUSTER
        cluster = cluster_pb2.Cluster()
        assert res.Unpack(cluster)
        out[cluster.name] = cluster
    return out


def _route(response) -> route_pb2.RouteConfiguration:
    assert response.type_url == V2_ROUTE
    [res] = response.resources
    assert res.type_url == V2_ROUTE
    config = route_pb2.RouteConfiguration()
    assert res.Unpack(config)
    return config


def _metric(daemon, name: str) -> float:
    for line in daemon.call("GET", "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            if line.split(" ")[0] == name or line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_v2_cds_rds_ack_nack_and_ordering(backends, daemon, clients):
    daemon.put_worker("w1", 18001)
    cds = clients(CDS_V2)
    cds.send(node=NODE, type_url=V2_CLUSTER)
    first = cds.recv()
    clusters = _clusters(first)
    assert set(clusters) == {"web_api_service", "worker_w1"}
    w1 = clusters["worker_w1"]
    endpoint = w1.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (endpoint.address, endpoint.port_value) == ("127.0.0.1", 18001)
    assert w1.protocol_selection == cluster_pb2.Cluster.USE_DOWNSTREAM_PROTOCOL
    assert w1.HasField("http2_protocol_options")
    cds.ack(first)

    rds = clients(RDS_V2)
    rds.send(type_url=V2_ROUTE, resource_names=["rds_config"], node=NODE)
    route_resp = rds.recv()
    config = _route(route_resp)
    assert config.name == "rds_config"
    routes = config.virtual_hosts[0].routes
    by_name = {r.name: r for r in routes}
    assert by_name["w1-header"].match.headers[0].exact_match == "/worker/w1"
    assert by_name["w1-prefix"].match.prefix == "/worker/w1/"
    assert by_name["w1-prefix"].route.prefix_rewrite == "/"
    assert by_name["w1-path"].match.path == "/worker/w1"
    assert by_name["w1-prefix"].route.upgrade_configs[0].upgrade_type == "websocket"
    assert by_name["w1-prefix"].route.HasField("max_grpc_timeout")
    assert routes[-1].route.cluster == "web_api_service"
    rds.ack(route_resp, resource_names=["rds_config"])

    # Make-before-break: a new worker's route waits for the ACK of its cluster.
    daemon.put_worker("w2", 18002)
    update = cds.recv()
    assert "worker_w2" in _clusters(update)
    assert rds.nothing_within(0.5), "RDS for w2 was sent before CDS was ACKed"
    cds.ack(update)
    assert "w2-prefix" in {r.name for r in _route(rds.recv()).virtual_hosts[0].routes}

    # NACK: counted, and the rejected version is not sent again; the next change is.
    daemon.put_worker("w3", 18003)
    rejected = cds.recv()
    cds.send(
        version_info=update.version_info,
        response_nonce=rejected.nonce,
        type_url=V2_CLUSTER,
        error_detail=status_pb2.Status(code=3, message="test rejects this version"),
    )
    # A stale nonce is ignored (no answer to it).
    cds.send(version_info=update.version_info, response_nonce=update.nonce, type_url=V2_CLUSTER)
    daemon.put_worker("w4", 18004)
    after_nack = cds.recv()
    assert after_nack.version_info != rejected.version_info
    assert "worker_w4" in _clusters(after_nack)
    nacks = 'dhxds_nacks_total{transport="v2",type="cds"}'
    assert _metric(daemon, nacks) == 1.0


def test_v2_ads_serves_both_types_in_order(daemon, clients):
    daemon.put_worker("w1", 18001)
    ads = clients(ADS_V2)
    ads.send(node=NODE, type_url=V2_CLUSTER)
    cds = ads.recv()
    assert set(_clusters(cds)) == {"web_api_service", "worker_w1"}
    ads.ack(cds)
    ads.send(type_url=V2_ROUTE, resource_names=["rds_config"])
    routes = ads.recv()
    assert {
        r.route.cluster for r in _route(routes).virtual_hosts[0].routes if r.HasField("route")
    } == {
        "worker_w1",
        "web_api_service",
    }
    ads.ack(routes, resource_names=["rds_config"])
    daemon.put_worker("w2", 18002)
    # CDS first; the route follows only after the CDS ACK.
    update = ads.recv()
    assert update.type_url == V2_CLUSTER
    ads.ack(update)
    assert "worker_w2" in {r.route.cluster for r in _route(ads.recv()).virtual_hosts[0].routes}
