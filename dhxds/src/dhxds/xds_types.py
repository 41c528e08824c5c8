"""The one table of what dhxds serves: resource types (type URL, API version, kind, dialect)
and the gRPC services that carry them. Everything else looks types and services up here.

v2 and v3 DiscoveryRequest/DiscoveryResponse are wire-compatible, so one message class serves
both transports; the type URL a client asks for picks the resource encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dialect import DIALECTS, V2, V3
from .dialect import Dialect as Flavour

__all__ = ["FLAVOURS", "SERVICES", "TYPES", "V2", "V3", "Flavour", "ResourceType", "Service"]

CDS, RDS = "cds", "rds"
FLAVOURS = DIALECTS  # one resource API version: its type URLs, protos and spelling


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
