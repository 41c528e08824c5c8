"""Registry state -> Envoy Cluster and RouteConfiguration protos (pure functions), for both xDS
API versions: each function takes the Dialect (dialect.py) to spell its protos in, v3 unless
told otherwise. Routing is written here once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from google.protobuf import any_pb2, duration_pb2

from .dialect import V3, Dialect
from .model import WEB_API_CLUSTER, Upstream, Worker, cluster_name

PREFIX_HEADER = "envoy-prefix"
CONNECT_TIMEOUT_S = 5
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
    # How this state follows an earlier one, so a consumer that saw that one can move in
    # O(changed): `token` names this state (kept by dataclasses.replace), `parent` is the
    # token of the state it follows and `changed` the workers that differ from it (id ->
    # worker, None when gone). None: compare whole. Not part of equality.
    token: object = field(default_factory=object, compare=False, repr=False)
    parent: object | None = field(default=None, compare=False, repr=False)
    changed: Mapping[str, Worker | None] | None = field(default=None, compare=False, repr=False)


_IPV4_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")


@lru_cache(maxsize=1 << 16)  # called per worker and change; a regex match costs more
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


def _tls_socket(d: Dialect, upstream: Upstream):
    # No alpn_protocols: Envoy's connection pools offer h2 or http/1.1 per connection.
    packed = any_pb2.Any()
    packed.Pack(d.tls.UpstreamTlsContext(sni=upstream.tls_sni or upstream.host))
    return d.base.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed)


def _full_cluster(d: Dialect, name: str, upstream: Upstream, hosts: tuple[str, ...] | None = None):
    """The readable definition of a cluster; build_cluster copies it as a template.

    `hosts` are addresses resolved by dhxds: a STATIC cluster is ready as soon as Envoy
    ACKs it, while a STRICT_DNS one still warms after the ACK (a route could see a 503).
    """
    static = hosts is not None or is_ip(upstream.host)
    ec = d.endpoint_components
    cluster = d.cluster.Cluster(
        name=name,
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        type=d.cluster.Cluster.STATIC if static else d.cluster.Cluster.STRICT_DNS,
        load_assignment=d.endpoint.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                ec.LocalityLbEndpoints(
                    lb_endpoints=[
                        ec.LbEndpoint(
                            endpoint=ec.Endpoint(
                                address=d.address.Address(
                                    socket_address=d.address.SocketAddress(
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
    d.protocol_options(cluster, upstream)
    if upstream.tls:
        cluster.transport_socket.CopyFrom(_tls_socket(d, upstream))
    return cluster


@lru_cache(maxsize=64)
def _cluster_template(d: Dialect, upstream_protocol: str, is_ip: bool):
    host = "127.0.0.1" if is_ip else "localhost"
    return _full_cluster(d, "template", Upstream(host, 1, upstream_protocol))


def build_cluster(
    name: str,
    upstream: Upstream,
    stat_name: str | None = None,
    hosts: tuple[str, ...] | None = None,
    d: Dialect = V3,
):
    if upstream.tls or (hosts is not None and len(hosts) != 1):
        cluster = _full_cluster(d, name, upstream, hosts)
    else:
        # Copying a prebuilt template is ~4x faster than building nested protos field by field,
        # which matters at 10,000 workers.
        cluster = d.cluster.Cluster()
        static = hosts is not None or is_ip(upstream.host)
        cluster.CopyFrom(_cluster_template(d, upstream.upstream_protocol, static))
        cluster.name = name
        cluster.load_assignment.cluster_name = name
        sock = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        sock.address = hosts[0] if hosts else upstream.host
        sock.port_value = upstream.port
    if stat_name:
        cluster.alt_stat_name = stat_name
    return cluster


def route_action(d: Dialect, cluster: str, rewrite: str | None):
    # Long gRPC streams and idle websocket/subscription streams must never be cut by Envoy.
    rc = d.route_components
    action = rc.RouteAction(
        cluster=cluster,
        timeout=_ZERO,
        idle_timeout=_ZERO,
        upgrade_configs=[rc.RouteAction.UpgradeConfig(upgrade_type="websocket")],
    )
    d.no_grpc_timeout_cap(action)
    if rewrite is not None:
        action.prefix_rewrite = rewrite
    return action


def _readable_worker_routes(d: Dialect, worker: Worker) -> list:
    """Header route, bare path and path prefix; the trailing '/' keeps w1 from catching w10."""
    rc = d.route_components
    cluster = cluster_name(worker.id)
    path = f"/worker/{worker.id}"
    rewrite = "/" if worker.strip_prefix else None
    header = d.header_exact(PREFIX_HEADER, worker.envoy_prefix)
    return [
        rc.Route(
            name=f"{worker.id}-header",
            match=rc.RouteMatch(prefix="/", headers=[header]),
            route=route_action(d, cluster, None),
        ),
        rc.Route(
            name=f"{worker.id}-path",
            match=rc.RouteMatch(path=path),
            route=route_action(d, cluster, rewrite),
        ),
        rc.Route(
            name=f"{worker.id}-prefix",
            match=rc.RouteMatch(prefix=path + "/"),
            route=route_action(d, cluster, rewrite),
        ),
    ]


@lru_cache(maxsize=4)
def _routes_template(d: Dialect, strip_prefix: bool):
    template = Worker(
        host="127.0.0.1", port=1, id="t", envoy_prefix="/t", strip_prefix=strip_prefix
    )
    return d.virtual_host(routes=_readable_worker_routes(d, template))


def worker_routes(worker: Worker, d: Dialect = V3):
    """A VirtualHost holding only this worker's routes, as _readable_worker_routes builds them.

    Filling a copied template is several times faster than building 3 routes field by field;
    the encoder splices these routes into the real virtual host.
    """
    holder = d.virtual_host()
    holder.CopyFrom(_routes_template(d, worker.strip_prefix))
    header, bare, prefix = holder.routes
    cluster = cluster_name(worker.id)
    path = f"/worker/{worker.id}"
    header.name = f"{worker.id}-header"
    header.match.headers[0].CopyFrom(d.header_exact(PREFIX_HEADER, worker.envoy_prefix))
    bare.name = f"{worker.id}-path"
    bare.match.path = path
    prefix.name = f"{worker.id}-prefix"
    prefix.match.prefix = path + "/"
    for route in holder.routes:
        route.route.cluster = cluster
    return holder


NO_WORKER_MESSAGE = "no worker is registered (or routable yet) for envoy-prefix %REQ(envoy-prefix)%"


def _header(d: Dialect, key: str, value: str):
    return d.base.HeaderValueOption(header=d.base.HeaderValue(key=key, value=value))


def fallback_routes(d: Dialect = V3) -> list:
    """After every worker's routes: a gRPC call whose envoy-prefix names no worker gets a
    clear UNAVAILABLE at once (a trailers-only answer), instead of whatever web_api_service
    makes of a gRPC call; everything else goes to web_api_service."""
    rc = d.route_components
    grpc_to_no_worker = rc.Route(
        name="no-worker",
        match=rc.RouteMatch(
            prefix="/",
            headers=[
                rc.HeaderMatcher(name=PREFIX_HEADER, present_match=True),
                d.header_prefix("content-type", "application/grpc"),
            ],
        ),
        direct_response=rc.DirectResponseAction(status=200),
        response_headers_to_add=[
            _header(d, "content-type", "application/grpc"),
            _header(d, "grpc-status", "14"),
            _header(d, "grpc-message", NO_WORKER_MESSAGE),
        ],
    )
    default = rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=route_action(d, WEB_API_CLUSTER, None),
    )
    return [grpc_to_no_worker, default]


def build_clusters(state: RegistryState, d: Dialect = V3) -> dict:
    clusters = {WEB_API_CLUSTER: build_cluster(WEB_API_CLUSTER, state.web_api, d=d)}
    for worker, hosts in routable_workers(state):
        name = cluster_name(worker.id)
        clusters[name] = build_cluster(name, worker, worker_stat_name(worker.id), hosts, d)
    return clusters


def worker_stat_name(worker_id: str) -> str:
    # Dots would split Envoy's stat names into extra levels.
    return cluster_name(worker_id).replace(".", "_")


def build_route_config(state: RegistryState, d: Dialect = V3):
    """v3: the virtual host's matcher (route_matcher.py); v2, or no worker at all: worker
    routes first (first match wins), the fallbacks last."""
    workers = [worker for worker, _hosts in routable_workers(state)]
    vhost = d.virtual_host(name=VIRTUAL_HOST, domains=["*"])
    if d.api == "v3" and workers:
        from .route_matcher import matcher  # it builds on this module

        vhost.matcher.CopyFrom(matcher(workers))
    else:
        for worker in workers:
            vhost.routes.extend(worker_routes(worker, d).routes)
        vhost.routes.extend(fallback_routes(d))
    return d.route_config(name=state.route_config_name, virtual_hosts=[vhost])
