"""Resource building for v3 and v2: a pure function of registry state."""

from __future__ import annotations

from dhxds.model import Upstream, Worker
from dhxds.resources import RegistryState
from dhxds.snapshot import Snapshot, new_encoders, version_of
from dhxds.xds_types import V2, V3
from envoy.api.v2 import cluster_pb2 as cluster_v2
from envoy.api.v2 import route_pb2 as route_v2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.matcher.v3.http_inputs_pb2 import HttpRequestHeaderMatchInput

from dhxds import resources

# What dhxds' resolver found for worker host names (resolver.py); others stay unresolved.
RESOLVED = (("dh-host.example", ("10.9.9.9", "10.9.9.10")),)


def state(*workers: dict, web=("127.0.0.1", 8123), addresses=RESOLVED) -> RegistryState:
    built = sorted((Worker.from_dict(w) for w in workers), key=lambda w: w.id)
    return RegistryState(tuple(built), Upstream(*web), "rds_config", addresses)


W1 = {"id": "w1", "host": "10.0.0.1", "port": 9001}
W10 = {"id": "w10", "host": "dh-host.example", "port": 9010}


def _protocol(cluster) -> hpo.HttpProtocolOptions:
    opts = hpo.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Unpack(opts)
    return opts


def test_v3_clusters():
    clusters = resources.build_clusters(state(W1, W10, {**W1, "id": "a.b", "tls": True}))
    assert list(clusters) == ["web_api_service", "worker_a.b", "worker_w1", "worker_w10"]
    w1, w10 = clusters["worker_w1"], clusters["worker_w10"]
    # A name dhxds resolved is a STATIC cluster of its addresses: ready when Envoy ACKs it.
    assert w1.type == cluster_pb2.Cluster.STATIC and w10.type == cluster_pb2.Cluster.STATIC
    endpoints = w10.load_assignment.endpoints[0].lb_endpoints
    socks = [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in endpoints
    ]
    assert socks == [("10.9.9.9", 9010), ("10.9.9.10", 9010)]
    assert w10.load_assignment.cluster_name == "worker_w10"
    assert _protocol(w1).HasField("use_downstream_protocol_config")
    assert clusters["worker_a.b"].alt_stat_name == "worker_a_b"
    tls = tls_pb2.UpstreamTlsContext()
    clusters["worker_a.b"].transport_socket.typed_config.Unpack(tls)
    assert tls.sni == "10.0.0.1"
    assert not w1.HasField("transport_socket")


def test_unresolved_worker_names_stay_out_of_envoy_and_web_api_names_stay_dns():
    """A worker whose name dhxds cannot resolve gets neither cluster nor route (its requests
    go to web_api_service); web_api_service exists from the start, so Envoy resolves it."""
    st = state(W1, W10, web=("dh-infra.example", 8123), addresses=())
    for dialect in (V3, V2):
        clusters = resources.build_clusters(st, dialect)
        assert list(clusters) == ["web_api_service", "worker_w1"]
        assert clusters["web_api_service"].type == cluster_pb2.Cluster.STRICT_DNS
        routes = _all_routes(resources.build_route_config(st, dialect).virtual_hosts[0])
        assert {r.route.cluster for r in routes if r.HasField("route")} == {
            "worker_w1",
            "web_api_service",
        }
    snap = Snapshot(st, new_encoders())
    assert snap.unresolved == ("w10",)
    assert set(snap.clusters(V3.cluster_type)) == {"web_api_service", "worker_w1"}


def test_v3_protocol_override():
    clusters = resources.build_clusters(
        state({**W1, "upstream_protocol": "http2"}, {**W10, "upstream_protocol": "http1"})
    )
    h2 = _protocol(clusters["worker_w1"]).explicit_http_config
    h1 = _protocol(clusters["worker_w10"]).explicit_http_config
    assert h2.HasField("http2_protocol_options") and h1.HasField("http_protocol_options")


def _all_routes(vhost) -> list:
    """Every route a virtual host can pick: its ordered list, or the matcher's actions."""
    from dhops_testkit.xds import _matcher_routes

    if "matcher" not in vhost.DESCRIPTOR.fields_by_name:  # v2
        return list(vhost.routes)
    return [*vhost.routes, *_matcher_routes(vhost.matcher)]


def _unpacked(on_match, cls):
    out = cls()
    assert on_match.action.typed_config.Unpack(out)
    return out


def test_v3_routes_are_a_header_map_then_a_path_trie_then_the_fallbacks():
    config = resources.build_route_config(
        state(W1, W10, {**W10, "id": "raw", "strip_prefix": False, "envoy_prefix": "/custom/raw"})
    )
    assert config.name == "rds_config"
    [vhost] = config.virtual_hosts
    assert list(vhost.domains) == ["*"] and not vhost.routes
    tree = vhost.matcher.matcher_tree
    header_input = HttpRequestHeaderMatchInput()
    tree.input.typed_config.Unpack(header_input)
    assert header_input.header_name == "envoy-prefix"
    # gRPC: the envoy-prefix header picks the worker whatever the path; the path stays as sent.
    assert set(tree.exact_match_map.map) == {"/worker/w1", "/worker/w10", "/custom/raw"}
    header = _unpacked(tree.exact_match_map.map["/worker/w10"], rc.Route)
    assert header.name == "w10-header" and header.route.cluster == "worker_w10"
    assert header.match.prefix == "/" and header.route.prefix_rewrite == ""
    # No header match: the path trie; its key has no trailing '/', so the bare path matches.
    paths = vhost.matcher.on_no_match.matcher
    path_input = HttpRequestHeaderMatchInput()
    paths.matcher_tree.input.typed_config.Unpack(path_input)
    assert path_input.header_name == ":path"
    assert set(paths.matcher_tree.prefix_match_map.map) == {
        "/worker/w1",
        "/worker/w10",
        "/worker/raw",
    }
    w1 = _unpacked(paths.matcher_tree.prefix_match_map.map["/worker/w1"], rc.RouteList).routes
    # The worker's own routes, then the fallbacks: /worker/w1x/... lands here when w1x is
    # unknown (longest prefix), matches neither, and gets what the ordered list gave it.
    assert [r.name for r in w1] == ["w1-path", "w1-prefix", "no-worker", "default"]
    assert w1[0].match.path == "/worker/w1" and w1[1].match.prefix == "/worker/w1/"
    assert w1[0].route.prefix_rewrite == "/" and w1[1].route.prefix_rewrite == "/"
    raw = _unpacked(paths.matcher_tree.prefix_match_map.map["/worker/raw"], rc.RouteList)
    assert raw.routes[1].route.prefix_rewrite == ""
    fallbacks = _unpacked(paths.on_no_match, rc.RouteList).routes
    assert [r.name for r in fallbacks] == ["no-worker", "default"]
    # A gRPC call naming no worker gets UNAVAILABLE with a clear message (trailers-only).
    no_worker, default = fallbacks
    assert default.route.cluster == "web_api_service"
    assert no_worker.direct_response.status == 200
    assert [h.name for h in no_worker.match.headers] == ["envoy-prefix", "content-type"]
    added = {h.header.key: h.header.value for h in no_worker.response_headers_to_add}
    assert added["grpc-status"] == "14" and "%REQ(envoy-prefix)%" in added["grpc-message"]
    for route in _all_routes(vhost):
        if not route.HasField("route"):
            continue
        action = route.route
        assert action.timeout.ToSeconds() == 0 and action.HasField("timeout")
        assert action.HasField("idle_timeout") and action.idle_timeout.ToSeconds() == 0
        assert action.max_stream_duration.HasField("grpc_timeout_header_max")
        assert [u.upgrade_type for u in action.upgrade_configs] == ["websocket"]


def test_v3_without_workers_is_the_plain_fallback_list():
    """The matcher's maps may not be empty (Envoy refuses them)."""
    [vhost] = resources.build_route_config(state()).virtual_hosts
    assert not vhost.HasField("matcher")
    assert [r.name for r in vhost.routes] == ["no-worker", "default"]


def test_v2_keeps_the_ordered_list():
    config = resources.build_route_config(
        state(W1, W10, {**W10, "id": "raw", "strip_prefix": False}), V2
    )
    [vhost] = config.virtual_hosts
    names = [r.name for r in vhost.routes]
    assert names[-2:] == ["no-worker", "default"]
    by_name = {r.name: r for r in vhost.routes}
    # Trailing '/' on the prefix + exact bare path: /worker/w1 never matches /worker/w10.
    assert by_name["w1-prefix"].match.prefix == "/worker/w1/"
    assert by_name["w1-path"].match.path == "/worker/w1"
    assert by_name["raw-prefix"].route.prefix_rewrite == ""
    assert by_name["w10-header"].match.headers[0].exact_match == "/worker/w10"


def test_v2_resources_parse_as_v2_with_the_same_routing():
    st = state(W1, {**W10, "upstream_protocol": "http1", "tls": True, "tls_sni": "sni.example"})
    clusters = resources.build_clusters(st, V2)
    w1 = cluster_v2.Cluster.FromString(clusters["worker_w1"].SerializeToString())
    assert w1.protocol_selection == cluster_v2.Cluster.USE_DOWNSTREAM_PROTOCOL
    assert w1.HasField("http2_protocol_options")
    w10 = clusters["worker_w10"]
    assert not w10.HasField("http2_protocol_options")
    assert w10.transport_socket.name == "envoy.transport_sockets.tls"
    assert w10.transport_socket.typed_config.type_url.endswith(
        "envoy.api.v2.auth.UpstreamTlsContext"
    )
    config = route_v2.RouteConfiguration.FromString(
        resources.build_route_config(st, V2).SerializeToString()
    )
    v3_names = {r.name for r in _all_routes(resources.build_route_config(st).virtual_hosts[0])}
    assert {r.name for r in config.virtual_hosts[0].routes} == v3_names
    header = {r.name: r for r in config.virtual_hosts[0].routes}["w1-header"]
    assert header.match.headers[0].exact_match == "/worker/w1"
    assert header.route.HasField("max_grpc_timeout")


def test_encoded_snapshot_equals_plain_build_for_both_versions():
    st = state(W1, W10, {**W1, "id": "z", "strip_prefix": False})
    snap = Snapshot(st, new_encoders())
    for flavour, config_cls in (
        (V3, route_pb2.RouteConfiguration),
        (V2, route_v2.RouteConfiguration),
    ):
        encoded = snap.resources(flavour.route_type)["rds_config"]
        assert encoded.any.type_url == flavour.route_type
        assert config_cls.FromString(encoded.any.value) == resources.build_route_config(st, flavour)
        assert encoded.refs == {"web_api_service", "worker_w1", "worker_w10", "worker_z"}
        clusters = snap.resources(flavour.cluster_type)
        assert {c.any.type_url for c in clusters.values()} == {flavour.cluster_type}


def test_versions_are_content_hashes():
    a = Snapshot(state(W1, W10), new_encoders())
    b = Snapshot(state(W10, W1), new_encoders())  # another replica, same content
    c = Snapshot(state(W1), new_encoders())
    for url in (V3.cluster_type, V3.route_type, V2.cluster_type):
        assert version_of(a.resources(url).values()) == version_of(b.resources(url).values())
        assert version_of(a.resources(url).values()) != version_of(c.resources(url).values())


def test_encoder_reuses_unchanged_workers():
    encoders = new_encoders()
    first = Snapshot(state(W1, W10), encoders).resources(V3.cluster_type)
    second = Snapshot(state(W1, {**W10, "port": 1}), encoders).resources(V3.cluster_type)
    assert second["worker_w1"] is first["worker_w1"]
    assert second["worker_w10"].digest != first["worker_w10"].digest


def test_pre_encoded_responses_parse_as_v3_and_v2_discovery_responses():
    from dhxds.snapshot import ResourceSet, encode_response
    from envoy.api.v2 import discovery_pb2 as discovery_v2
    from envoy.service.discovery.v3 import discovery_pb2 as discovery_v3

    snap = Snapshot(state(W1, W10), new_encoders())
    for flavour, messages in ((V3, discovery_v3), (V2, discovery_v2)):
        clusters = snap.resources(flavour.cluster_type)
        raw = encode_response("v1", "7", flavour.cluster_type, ResourceSet(clusters))
        parsed = messages.DiscoveryResponse.FromString(raw)
        expected = messages.DiscoveryResponse(
            version_info="v1",
            nonce="7",
            type_url=flavour.cluster_type,
            resources=[clusters[name].any for name in sorted(clusters)],  # name order
        )
        assert parsed == expected
