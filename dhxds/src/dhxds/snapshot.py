"""Immutable snapshots of encoded resources, one per registry state, with content-hash versions.

A snapshot encodes lazily per type URL, so v2 resources are only built while a v2 client is
connected. Encoders keep each worker's encoded cluster and routes across snapshots: one
registration re-encodes one worker, not all of them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from envoy.api.v2 import route_pb2 as route_v2
from envoy.api.v2.route import route_components_pb2 as rc_v2
from envoy.config.route.v3 import route_components_pb2 as rc_v3
from envoy.config.route.v3 import route_pb2 as route_v3
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from . import resources as v3
from . import resources_v2 as v2
from .model import WEB_API_CLUSTER, Upstream, Worker, cluster_name
from .resources import RegistryState

CDS, RDS = "cds", "rds"


@dataclass(frozen=True)
class Encoded:
    """One resource as sent: its serialized message, a digest, and the clusters it uses."""

    name: str
    type_url: str
    payload: bytes
    digest: str
    refs: frozenset[str] = frozenset()

    @property
    def any(self) -> any_pb2.Any:
        return any_pb2.Any(type_url=self.type_url, value=self.payload)

    @cached_property
    def wire(self) -> bytes:
        """This resource as one `resources` entry of a DiscoveryResponse, encoded once and
        shared by every stream and every response that carries it."""
        return _field(_RESOURCES_FIELD, _field(1, self.type_url.encode()) + _field(2, self.payload))


def encode_response(version: str, nonce: str, type_url: str, resources: Iterable[Encoded]) -> bytes:
    """A serialized DiscoveryResponse (the same bytes for v2 and v3: wire-compatible)."""
    head = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    return head.SerializeToString() + b"".join(res.wire for res in resources)


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def version_of(resources: Iterable[Encoded]) -> str:
    """Deterministic version of a response: replicas with equal state agree on it."""
    h = hashlib.blake2b(digest_size=8)
    for res in sorted(resources, key=lambda r: r.name):
        h.update(f"{res.name}\0{res.digest}\n".encode())
    return h.hexdigest()


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def _field(number: int, payload: bytes) -> bytes:
    """Protobuf wire encoding of one length-delimited field (tag, length, bytes)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass(frozen=True)
class Flavour:
    """One resource API version: its type URLs and builders."""

    api: str
    cluster_type: str
    route_type: str
    build_cluster: Callable[..., Any]
    worker_routes: Callable[[Worker], Any]
    default_route: Callable[[], Any]
    route_config: type
    virtual_host: type


V3 = Flavour(
    "v3",
    v3.CLUSTER_TYPE,
    v3.ROUTE_TYPE,
    v3.build_cluster,
    v3.worker_routes,
    v3.default_route,
    route_v3.RouteConfiguration,
    rc_v3.VirtualHost,
)
V2 = Flavour(
    "v2",
    v2.CLUSTER_TYPE,
    v2.ROUTE_TYPE,
    v2.build_cluster,
    v2.worker_routes,
    v2.default_route,
    route_v2.RouteConfiguration,
    rc_v2.VirtualHost,
)
# type URL -> (flavour, cds|rds)
TYPES: dict[str, tuple[Flavour, str]] = {f.cluster_type: (f, CDS) for f in (V3, V2)} | {
    f.route_type: (f, RDS) for f in (V3, V2)
}

# Field numbers, the same in v2 and v3: RouteConfiguration.virtual_hosts, VirtualHost.routes,
# DiscoveryResponse.resources.
_VIRTUAL_HOSTS_FIELD = 2
_ROUTES_FIELD = 3
_RESOURCES_FIELD = 2


class Encoder:
    """Encodes one flavour; remembers per-worker results of the previous state.

    Caches are keyed by worker id and hold (worker, result): the registry keeps its Worker
    objects, so an unchanged worker is found with an identity check, not a field compare.
    """

    def __init__(self, flavour: Flavour) -> None:
        self.flavour = flavour
        self._web_api: tuple[Upstream, Encoded] | None = None
        self._clusters: dict[str, tuple[Worker, Encoded]] = {}
        self._routes: dict[str, tuple[Worker, bytes]] = {}

    def _cluster(self, name: str, upstream: Upstream, stat_name: str | None) -> Encoded:
        msg = self.flavour.build_cluster(name, upstream, stat_name)
        payload = msg.SerializeToString(deterministic=True)
        return Encoded(name, self.flavour.cluster_type, payload, digest(payload))

    def clusters(self, state: RegistryState) -> dict[str, Encoded]:
        if self._web_api is None or self._web_api[0] != state.web_api:
            self._web_api = (state.web_api, self._cluster(WEB_API_CLUSTER, state.web_api, None))
        out = {WEB_API_CLUSTER: self._web_api[1]}
        cache, fresh = self._clusters, {}
        for worker in state.workers:
            hit = cache.get(worker.id)
            if hit is None or (hit[0] is not worker and hit[0] != worker):
                name = cluster_name(worker.id)
                hit = (worker, self._cluster(name, worker, v3.worker_stat_name(worker.id)))
            fresh[worker.id] = hit
            out[hit[1].name] = hit[1]
        self._clusters = fresh
        return out

    def _worker_route_bytes(self, worker: Worker) -> bytes:
        # A VirtualHost with only `routes` set serialises to exactly its repeated route fields.
        return self.flavour.worker_routes(worker).SerializeToString(deterministic=True)

    def route_configs(self, state: RegistryState) -> dict[str, Encoded]:
        # The RouteConfiguration is assembled from per-worker encoded routes: concatenating
        # repeated fields is valid protobuf and avoids re-serialising every route per change.
        cache, fresh = self._routes, {}
        parts = []
        for worker in state.workers:
            hit = cache.get(worker.id)
            if hit is None or (hit[0] is not worker and hit[0] != worker):
                hit = (worker, self._worker_route_bytes(worker))
            fresh[worker.id] = hit
            parts.append(hit[1])
        self._routes = fresh
        head = self.flavour.virtual_host(name=v3.VIRTUAL_HOST, domains=["*"])
        default = self.flavour.default_route().SerializeToString(deterministic=True)
        vhost = b"".join(
            [
                head.SerializeToString(deterministic=True),
                *parts,
                _field(_ROUTES_FIELD, default),
            ]
        )
        config = self.flavour.route_config(name=state.route_config_name)
        payload = config.SerializeToString(deterministic=True) + _field(_VIRTUAL_HOSTS_FIELD, vhost)
        refs = frozenset([WEB_API_CLUSTER, *(cluster_name(w.id) for w in state.workers)])
        name = state.route_config_name
        return {name: Encoded(name, self.flavour.route_type, payload, digest(payload), refs)}


class Snapshot:
    """Resources of one registry state. `created` lets metrics time change -> ACK."""

    def __init__(self, state: RegistryState, encoders: dict[str, Encoder]) -> None:
        self.state = state
        self.created = time.monotonic()
        self._encoders = encoders
        self._by_type: dict[str, dict[str, Encoded]] = {}

    def resources(self, type_url: str) -> dict[str, Encoded]:
        """All resources of a known type URL, by name (built on first use)."""
        if type_url not in self._by_type:
            flavour, kind = TYPES[type_url]
            encoder = self._encoders[flavour.api]
            built = (
                encoder.clusters(self.state) if kind == CDS else encoder.route_configs(self.state)
            )
            self._by_type[type_url] = built
        return self._by_type[type_url]


def new_encoders() -> dict[str, Encoder]:
    return {V3.api: Encoder(V3), V2.api: Encoder(V2)}
