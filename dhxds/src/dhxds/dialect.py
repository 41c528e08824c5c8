"""The xDS API versions dhxds speaks, as a table: where each keeps its protos and how it spells
the few things resources.py builds differently. resources.py is the one builder over both.

v2 (envoy.api.v2, Envoy 1.12-1.17) differs from v3 in four places: the proto namespace, the
header matcher (`exact_match` / `prefix_match` instead of a StringMatcher), the gRPC timeout
field (`max_grpc_timeout` instead of `max_stream_duration`) and the upstream protocol
(`http2_protocol_options` + `protocol_selection` instead of HttpProtocolOptions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from envoy.api.v2 import cluster_pb2 as cluster_v2
from envoy.api.v2 import endpoint_pb2 as endpoint_v2
from envoy.api.v2 import route_pb2 as route_v2
from envoy.api.v2.auth import tls_pb2 as tls_v2
from envoy.api.v2.core import address_pb2 as address_v2
from envoy.api.v2.core import base_pb2 as base_v2
from envoy.api.v2.core import protocol_pb2 as protocol_v2
from envoy.api.v2.endpoint import endpoint_components_pb2 as ec_v2
from envoy.api.v2.route import route_components_pb2 as rc_v2
from envoy.config.cluster.v3 import cluster_pb2 as cluster_v3
from envoy.config.core.v3 import address_pb2 as address_v3
from envoy.config.core.v3 import base_pb2 as base_v3
from envoy.config.core.v3 import protocol_pb2 as protocol_v3
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec_v3
from envoy.config.endpoint.v3 import endpoint_pb2 as endpoint_v3
from envoy.config.route.v3 import route_components_pb2 as rc_v3
from envoy.config.route.v3 import route_pb2 as route_v3
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2 as tls_v3
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2

from .model import Upstream

_HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class Dialect:
    """One xDS API version: type URLs, proto modules and its spelling of the differences."""

    api: str
    cluster_type: str
    route_type: str
    cluster: ModuleType  # Cluster
    endpoint: ModuleType  # ClusterLoadAssignment
    endpoint_components: ModuleType  # LocalityLbEndpoints, LbEndpoint, Endpoint
    address: ModuleType
    base: ModuleType  # TransportSocket, HeaderValueOption
    route: ModuleType  # RouteConfiguration
    route_components: ModuleType  # VirtualHost, Route, RouteAction, HeaderMatcher
    tls: ModuleType  # UpstreamTlsContext
    header_exact: Callable[[str, str], Any]  # (name, value) -> HeaderMatcher
    header_prefix: Callable[[str, str], Any]
    no_grpc_timeout_cap: Callable[[Any], None]  # sets it on a RouteAction
    protocol_options: Callable[[Any, Upstream], None]  # sets them on a Cluster

    @property
    def route_config(self) -> type:
        return self.route.RouteConfiguration

    @property
    def virtual_host(self) -> type:
        return self.route_components.VirtualHost


def _v3_protocol_options(cluster, upstream: Upstream) -> None:
    h1, h2 = protocol_v3.Http1ProtocolOptions(), protocol_v3.Http2ProtocolOptions()
    if upstream.upstream_protocol == "http1":
        explicit = hpo.HttpProtocolOptions.ExplicitHttpConfig(http_protocol_options=h1)
        opts = hpo.HttpProtocolOptions(explicit_http_config=explicit)
    elif upstream.upstream_protocol == "http2":
        explicit = hpo.HttpProtocolOptions.ExplicitHttpConfig(http2_protocol_options=h2)
        opts = hpo.HttpProtocolOptions(explicit_http_config=explicit)
    else:
        # Browsers' websockets need HTTP/1.1 upstream, gRPC needs HTTP/2: follow the client.
        follow = hpo.HttpProtocolOptions.UseDownstreamHttpConfig(
            http_protocol_options=h1, http2_protocol_options=h2
        )
        opts = hpo.HttpProtocolOptions(use_downstream_protocol_config=follow)
    packed = any_pb2.Any()
    packed.Pack(opts)
    cluster.typed_extension_protocol_options[_HPO_KEY].CopyFrom(packed)


def _v2_protocol_options(cluster, upstream: Upstream) -> None:
    if upstream.upstream_protocol != "http1":
        cluster.http2_protocol_options.CopyFrom(protocol_v2.Http2ProtocolOptions())
    if upstream.upstream_protocol == "downstream":
        cluster.protocol_selection = cluster_v2.Cluster.USE_DOWNSTREAM_PROTOCOL


def _v3_no_grpc_timeout_cap(action) -> None:
    action.max_stream_duration.grpc_timeout_header_max.SetInParent()  # 0 s = no cap


def _v2_no_grpc_timeout_cap(action) -> None:
    action.max_grpc_timeout.SetInParent()  # 0 s = no cap on gRPC streams


V3 = Dialect(
    api="v3",
    cluster_type="type.googleapis.com/envoy.config.cluster.v3.Cluster",
    route_type="type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    cluster=cluster_v3,
    endpoint=endpoint_v3,
    endpoint_components=ec_v3,
    address=address_v3,
    base=base_v3,
    route=route_v3,
    route_components=rc_v3,
    tls=tls_v3,
    header_exact=lambda name, value: rc_v3.HeaderMatcher(
        name=name, string_match=string_pb2.StringMatcher(exact=value)
    ),
    header_prefix=lambda name, value: rc_v3.HeaderMatcher(
        name=name, string_match=string_pb2.StringMatcher(prefix=value)
    ),
    no_grpc_timeout_cap=_v3_no_grpc_timeout_cap,
    protocol_options=_v3_protocol_options,
)
V2 = Dialect(
    api="v2",
    cluster_type="type.googleapis.com/envoy.api.v2.Cluster",
    route_type="type.googleapis.com/envoy.api.v2.RouteConfiguration",
    cluster=cluster_v2,
    endpoint=endpoint_v2,
    endpoint_components=ec_v2,
    address=address_v2,
    base=base_v2,
    route=route_v2,
    route_components=rc_v2,
    tls=tls_v2,
    header_exact=lambda name, value: rc_v2.HeaderMatcher(name=name, exact_match=value),
    header_prefix=lambda name, value: rc_v2.HeaderMatcher(name=name, prefix_match=value),
    no_grpc_timeout_cap=_v2_no_grpc_timeout_cap,
    protocol_options=_v2_protocol_options,
)
DIALECTS = {d.api: d for d in (V3, V2)}
