"""Registry state -> Envoy v2 (envoy.api.v2) Cluster and RouteConfiguration, for Envoy 1.12-1.17.

Same routing as resources.py, spelled with the v2 fields: `protocol_selection` instead of
HttpProtocolOptions, `exact_match` headers, `max_grpc_timeout` instead of max_stream_duration.
"""

from __future__ import annotations

from envoy.api.v2 import cluster_pb2, endpoint_pb2, route_pb2
from envoy.api.v2.auth import tls_pb2
from envoy.api.v2.core import address_pb2, base_pb2, protocol_pb2
from envoy.api.v2.endpoint import endpoint_components_pb2 as ec
from envoy.api.v2.route import route_components_pb2 as rc
from google.protobuf import any_pb2, duration_pb2

from .model import WEB_API_CLUSTER, Upstream, Worker, cluster_name
from .resources import (
    CONNECT_TIMEOUT_S,
    NO_WORKER_MESSAGE,
    PREFIX_HEADER,
    VIRTUAL_HOST,
    RegistryState,
    is_ip,
    routable_workers,
    worker_stat_name,
)

CLUSTER_TYPE = "type.googleapis.com/envoy.api.v2.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.api.v2.RouteConfiguration"
_ZERO = duration_pb2.Duration(seconds=0)


def build_cluster(
    name: str,
    upstream: Upstream,
    stat_name: str | None = None,
    hosts: tuple[str, ...] | None = None,
) -> cluster_pb2.Cluster:
    static = hosts is not None or is_ip(upstream.host)
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        type=cluster_pb2.Cluster.STATIC if static else cluster_pb2.Cluster.STRICT_DNS,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                ec.LocalityLbEndpoints(
                    lb_endpoints=[
                        ec.LbEndpoint(
                            endpoint=ec.Endpoint(
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
    if stat_name:
        cluster.alt_stat_name = stat_name
    if upstream.upstream_protocol != "http1":
        cluster.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    if upstream.upstream_protocol == "downstream":
        cluster.protocol_selection = cluster_pb2.Cluster.USE_DOWNSTREAM_PROTOCOL
    if upstream.tls:
        packed = any_pb2.Any()
        packed.Pack(tls_pb2.UpstreamTlsContext(sni=upstream.tls_sni or upstream.host))
        cluster.transport_socket.CopyFrom(
            base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed)
        )
    return cluster


def _action(cluster: str, rewrite: str | None) -> rc.RouteAction:
    action = rc.RouteAction(
        cluster=cluster,
        timeout=_ZERO,
        idle_timeout=_ZERO,
        max_grpc_timeout=_ZERO,  # 0 = no cap on gRPC streams
        upgrade_configs=[rc.RouteAction.UpgradeConfig(upgrade_type="websocket")],
    )
    if rewrite is not None:
        action.prefix_rewrite = rewrite
    return action


def worker_routes(worker: Worker) -> rc.VirtualHost:
    """A VirtualHost holding only this worker's routes (see resources.worker_routes)."""
    return rc.VirtualHost(routes=_worker_route_list(worker))


def _worker_route_list(worker: Worker) -> list[rc.Route]:
    cluster = cluster_name(worker.id)
    path = f"/worker/{worker.id}"
    rewrite = "/" if worker.strip_prefix else None
    header = rc.HeaderMatcher(name=PREFIX_HEADER, exact_match=worker.envoy_prefix)
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


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


def fallback_routes() -> list[rc.Route]:
    """See resources.fallback_routes."""
    grpc_to_no_worker = rc.Route(
        name="no-worker",
        match=rc.RouteMatch(
            prefix="/",
            headers=[
                rc.HeaderMatcher(name=PREFIX_HEADER, present_match=True),
                rc.HeaderMatcher(name="content-type", prefix_match="application/grpc"),
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


def build_route_config(state: RegistryState) -> route_pb2.RouteConfiguration:
    routes: list[rc.Route] = []
    for worker, _hosts in routable_workers(state):
        routes.extend(_worker_route_list(worker))
    routes.extend(fallback_routes())
    return route_pb2.RouteConfiguration(
        name=state.route_config_name,
        virtual_hosts=[rc.VirtualHost(name=VIRTUAL_HOST, domains=["*"], routes=routes)],
    )
