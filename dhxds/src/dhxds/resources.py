"""Registry state -> Envoy v3 Cluster and RouteConfiguration protos (a pure function).

The v2 builder in resources_v2.py mirrors this file field for field; keep them in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2

from .model import WEB_API_CLUSTER, Upstream, Worker, cluster_name

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
PREFIX_HEADER = "envoy-prefix"
CONNECT_TIMEOUT_S = 5
_HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_ZERO = duration_pb2.Duration(seconds=0)
VIRTUAL_HOST = "deephaven"


@dataclass(frozen=True)
class RegistryState:
    """Everything resources depend on; equal states build byte-identical resources."""

    workers: tuple[Worker, ...]  # sorted by id
    web_api: Upstream
    route_config_name: str
    # Worker host names resolved by dhxds, sorted: ((name, (address, ...)), ...). A worker
    # whose name is absent is not routable yet (see resolver.py).
    addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()


_IPV4_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")


def is_ip(host: str) -> bool:
    # Hosts are validated in model.py, where all-numeric DNS names are refused.
    return ":" in host or _IPV4_RE.match(host) is not None


def routable_workers(state: RegistryState) -> list[tuple[Worker, tuple[str, ...] | None]]:
    """Workers Envoy can reach now, each with the addresses dhxds resolved for its name
    (None for an IP address). A worker whose name is unresolved is left out."""
    resolved = dict(state.addresses)
    out = []
    for worker in state.workers:
        if is_ip(worker.host):
            out.append((worker, None))
        elif worker.host in resolved:
            out.append((worker, resolved[worker.host]))
    return out


def _protocol_options(upstream: Upstream) -> any_pb2.Any:
    h1, h2 = protocol_pb2.Http1ProtocolOptions(), protocol_pb2.Http2ProtocolOptions()
    if upstream.upstream_protocol == "http1":
        opts = hpo.HttpProtocolOptions(
            explicit_http_config=hpo.HttpProtocolOptions.ExplicitHttpConfig(
                http_protocol_options=h1
            )
        )
    elif upstream.upstream_protocol == "http2":
        opts = hpo.HttpProtocolOptions(
            explicit_http_config=hpo.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=h2
            )
        )
    else:
        # Browsers' websockets need HTTP/1.1 upstream, gRPC needs HTTP/2: follow the client.
        opts = hpo.HttpProtocolOptions(
            use_downstream_protocol_config=hpo.HttpProtocolOptions.UseDownstreamHttpConfig(
                http_protocol_options=h1, http2_protocol_options=h2
            )
        )
    packed = any_pb2.Any()
    packed.Pack(opts)
    return packed


def _tls_socket(upstream: Upstream) -> base_pb2.TransportSocket:
    # No alpn_protocols: Envoy's connection pools offer h2 or http/1.1 per connection.
    packed = any_pb2.Any()
    packed.Pack(tls_pb2.UpstreamTlsContext(sni=upstream.tls_sni or upstream.host))
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed)


def _full_cluster(
    name: str, upstream: Upstream, hosts: tuple[str, ...] | None = None
) -> cluster_pb2.Cluster:
    """The readable definition of a cluster; build_cluster copies it as a template.

    `hosts` are addresses resolved by dhxds: a STATIC cluster is ready as soon as Envoy
    ACKs it, while a STRICT_DNS one still warms after the ACK (a route could see a 503).
    """
    static = hosts is not None or is_ip(upstream.host)
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        type=cluster_pb2.Cluster.STATIC if static else cluster_pb2.Cluster.STRICT_DNS,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=address_pb2.Address(
                                    socket_address=address_pb2.SocketAddress(
                                        address=host, port_value=upstream.port
                                    )
                                )
                            )
                        )
                        for host in hosts or (upstream.host,)
                    ]
                )
            ],
        ),
    )
    cluster.typed_extension_protocol_options[_HPO_KEY].CopyFrom(_protocol_options(upstream))
    if upstream.tls:
        cluster.transport_socket.CopyFrom(_tls_socket(upstream))
    return cluster


@lru_cache(maxsize=64)
def _cluster_template(upstream_protocol: str, is_ip: bool) -> cluster_pb2.Cluster:
    host = "127.0.0.1" if is_ip else "localhost"
    return _full_cluster("template", Upstream(host, 1, upstream_protocol))


def build_cluster(
    name: str,
    upstream: Upstream,
    stat_name: str | None = None,
    hosts: tuple[str, ...] | None = None,
):
    if upstream.tls or (hosts is not None and len(hosts) != 1):
        cluster = _full_cluster(name, upstream, hosts)
    else:
        # Copying a prebuilt template is ~4x faster than building nested protos field by field,
        # which matters at 10,000 workers.
        cluster = cluster_pb2.Cluster()
        static = hosts is not None or is_ip(upstream.host)
        cluster.CopyFrom(_cluster_template(upstream.upstream_protocol, static))
        cluster.name = name
        cluster.load_assignment.cluster_name = name
        sock = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        sock.address = hosts[0] if hosts else upstream.host
        sock.port_value = upstream.port
    if stat_name:
        cluster.alt_stat_name = stat_name
    return cluster


def _action(cluster: str, rewrite: str | None) -> rc.RouteAction:
    # Long gRPC streams and idle websocket/subscription streams must never be cut by Envoy.
    action = rc.RouteAction(
        cluster=cluster,
        timeout=_ZERO,
        idle_timeout=_ZERO,
        max_stream_duration=rc.RouteAction.MaxStreamDuration(grpc_timeout_header_max=_ZERO),
        upgrade_configs=[rc.RouteAction.UpgradeConfig(upgrade_type="websocket")],
    )
    if rewrite is not None:
        action.prefix_rewrite = rewrite
    return action


def _readable_worker_routes(worker: Worker) -> list[rc.Route]:
    """Header route, bare path and path prefix; the trailing '/' keeps w1 from catching w10."""
    cluster = cluster_name(worker.id)
    path = f"/worker/{worker.id}"
    rewrite = "/" if worker.strip_prefix else None
    header = rc.HeaderMatcher(
        name=PREFIX_HEADER, string_match=string_pb2.StringMatcher(exact=worker.envoy_prefix)
    )
    return [
        rc.Route(
            name=f"{worker.id}-header",
            match=rc.RouteMatch(prefix="/", headers=[header]),
            route=_action(cluster, None),
        ),
        rc.Route(
            name=f"{worker.id}-path",
            match=rc.RouteMatch(path=path),
            route=_action(cluster, rewrite),
        ),
        rc.Route(
            name=f"{worker.id}-prefix",
            match=rc.RouteMatch(prefix=path + "/"),
            route=_action(cluster, rewrite),
        ),
    ]


@lru_cache(maxsize=2)
def _routes_template(strip_prefix: bool) -> rc.VirtualHost:
    template = Worker(
        host="127.0.0.1", port=1, id="t", envoy_prefix="/t", strip_prefix=strip_prefix
    )
    return rc.VirtualHost(routes=_readable_worker_routes(template))


def worker_routes(worker: Worker) -> rc.VirtualHost:
    """A VirtualHost holding only this worker's routes, as _readable_worker_routes builds them.

    Filling a copied template is several times faster than building 3 routes field by field;
    the encoder splices these routes into the real virtual host.
    """
    holder = rc.VirtualHost()
    holder.CopyFrom(_routes_template(worker.strip_prefix))
    header, bare, prefix = holder.routes
    cluster = cluster_name(worker.id)
    path = f"/worker/{worker.id}"
    header.name = f"{worker.id}-header"
    header.match.headers[0].string_match.exact = worker.envoy_prefix
    bare.name = f"{worker.id}-path"
    bare.match.path = path
    prefix.name = f"{worker.id}-prefix"
    prefix.match.prefix = path + "/"
    for route in holder.routes:
        route.route.cluster = cluster
    return holder


NO_WORKER_MESSAGE = "no worker is registered (or routable yet) for envoy-prefix %REQ(envoy-prefix)%"


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


def fallback_routes() -> list[rc.Route]:
    """After every worker's routes: a gRPC call whose envoy-prefix names no worker gets a
    clear UNAVAILABLE at once (a trailers-only answer), instead of whatever web_api_service
    makes of a gRPC call; everything else goes to web_api_service."""
    grpc_to_no_worker = rc.Route(
        name="no-worker",
        match=rc.RouteMatch(
            prefix="/",
            headers=[
                rc.HeaderMatcher(name=PREFIX_HEADER, present_match=True),
                rc.HeaderMatcher(
                    name="content-type",
                    string_match=string_pb2.StringMatcher(prefix="application/grpc"),
                ),
            ],
        ),
        direct_response=rc.DirectResponseAction(status=200),
        response_headers_to_add=[
            _header("content-type", "application/grpc"),
            _header("grpc-status", "14"),
            _header("grpc-message", NO_WORKER_MESSAGE),
        ],
    )
    default = rc.Route(
        name="default", match=rc.RouteMatch(prefix="/"), route=_action(WEB_API_CLUSTER, None)
    )
    return [grpc_to_no_worker, default]


def build_clusters(state: RegistryState) -> dict[str, cluster_pb2.Cluster]:
    clusters = {WEB_API_CLUSTER: build_cluster(WEB_API_CLUSTER, state.web_api)}
    for worker, hosts in routable_workers(state):
        name = cluster_name(worker.id)
        clusters[name] = build_cluster(name, worker, worker_stat_name(worker.id), hosts)
    return clusters


def worker_stat_name(worker_id: str) -> str:
    # Dots would split Envoy's stat names into extra levels.
    return cluster_name(worker_id).replace(".", "_")


def build_route_config(state: RegistryState) -> route_pb2.RouteConfiguration:
    """Worker routes first (first match wins), the fallbacks last."""
    routes: list[rc.Route] = []
    for worker, _hosts in routable_workers(state):
        routes.extend(worker_routes(worker).routes)
    routes.extend(fallback_routes())
    return route_pb2.RouteConfiguration(
        name=state.route_config_name,
        virtual_hosts=[rc.VirtualHost(name=VIRTUAL_HOST, domains=["*"], routes=routes)],
    )
