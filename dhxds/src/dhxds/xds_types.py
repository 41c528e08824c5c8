"""The one table of what dhxds serves: resource types (type URL, API version, kind, builders)
and the gRPC services that carry them. Everything else looks types and services up here.

v2 and v3 DiscoveryRequest/DiscoveryResponse are wire-compatible, so one message class serves
both transports; the type URL a client asks for picks the resource encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.api.v2 import route_pb2 as route_v2
from envoy.api.v2.route import route_components_pb2 as rc_v2
from envoy.config.route.v3 import route_components_pb2 as rc_v3
from envoy.config.route.v3 import route_pb2 as route_v3

from . import resources as v3
from . import resources_v2 as v2
from .model import Worker

CDS, RDS = "cds", "rds"


@dataclass(frozen=True)
class Flavour:
    """One resource API version: its type URLs and builders."""

    api: str
    cluster_type: str
    route_type: str
    build_cluster: Callable[..., Any]
    worker_routes: Callable[[Worker], Any]
    fallback_routes: Callable[[], list[Any]]
    route_config: type
    virtual_host: type


V3 = Flavour(
    "v3",
    v3.CLUSTER_TYPE,
    v3.ROUTE_TYPE,
    v3.build_cluster,
    v3.worker_routes,
    v3.fallback_routes,
    route_v3.RouteConfiguration,
    rc_v3.VirtualHost,
)
V2 = Flavour(
    "v2",
    v2.CLUSTER_TYPE,
    v2.ROUTE_TYPE,
    v2.build_cluster,
    v2.worker_routes,
    v2.fallback_routes,
    route_v2.RouteConfiguration,
    rc_v2.VirtualHost,
)
FLAVOURS = {f.api: f for f in (V3, V2)}


@dataclass(frozen=True)
class ResourceType:
    type_url: str
    flavour: Flavour
    kind: str  # CDS | RDS

    @property
    def api(self) -> str:
        return self.flavour.api

    @property
    def wildcard(self) -> bool:
        """CDS is state-of-the-world whatever names are asked for; RDS answers names."""
        return self.kind == CDS


TYPES: dict[str, ResourceType] = {
    rt.type_url: rt
    for f in (V3, V2)
    for rt in (ResourceType(f.cluster_type, f, CDS), ResourceType(f.route_type, f, RDS))
}


@dataclass(frozen=True)
class Service:
    """One gRPC streaming method: which API version and kinds it carries."""

    name: str
    method: str
    api: str
    kind: str  # cds | rds | ads
    default_type: str | None  # type URL assumed when a request leaves it empty
    delta: bool = False  # incremental xDS: only changed resources and removed names

    @property
    def transport(self) -> str:
        """How operators see the stream (GET /v1/nodes): ads, cds, rds or delta."""
        return "delta" if self.delta else self.kind

    def carries(self, rtype: ResourceType) -> bool:
        return rtype.api == self.api and self.kind in ("ads", rtype.kind)


_V3 = "envoy.service.{}.v3.{}DiscoveryService"
SERVICES = (
    Service(_V3.format("cluster", "Cluster"), "StreamClusters", "v3", CDS, V3.cluster_type),
    Service(_V3.format("route", "Route"), "StreamRoutes", "v3", RDS, V3.route_type),
    Service(_V3.format("cluster", "Cluster"), "DeltaClusters", "v3", CDS, V3.cluster_type, True),
    Service(_V3.format("route", "Route"), "DeltaRoutes", "v3", RDS, V3.route_type, True),
    Service(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "DeltaAggregatedResources",
        "v3",
        "ads",
        None,
        True,
    ),
    Service(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "StreamAggregatedResources",
        "v3",
        "ads",
        None,
    ),
    Service("envoy.api.v2.ClusterDiscoveryService", "StreamClusters", "v2", CDS, V2.cluster_type),
    Service("envoy.api.v2.RouteDiscoveryService", "StreamRoutes", "v2", RDS, V2.route_type),
    Service(
        "envoy.service.discovery.v2.AggregatedDiscoveryService",
        "StreamAggregatedResources",
        "v2",
        "ads",
        None,
    ),
)
