"""Immutable snapshots of encoded resources, one per registry state, with content-hash versions.

A snapshot encodes lazily per type URL, so v2 resources are only built while a v2 client is
connected. Encoders keep each worker's encoded cluster and routes across snapshots: one
registration re-encodes one worker, not all of them.

Route configurations can be assembled for a subset of the workers (those whose clusters a
node has ACKed), so a node's routes never wait for clusters it does not have yet.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from . import resources
from .model import WEB_API_CLUSTER, Upstream, Worker, cluster_name
from .resources import VIRTUAL_HOST, RegistryState, routable_workers, worker_stat_name
from .route_matcher import encoded_matcher, encoded_worker_entries
from .wire import field as _field
from .xds_types import CDS, FLAVOURS, TYPES, Flavour


@dataclass(frozen=True)
class Encoded:
    """One resource as sent: its serialized message, a digest, and the clusters it uses.

    For a route configuration, `members` names each worker route it holds with the digest of
    that route, so "has this node applied worker w's current route" is a set lookup.
    """

    name: str
    type_url: str
    payload: bytes
    digest: str
    refs: frozenset[str] = frozenset()
    members: frozenset[tuple[str, str]] = frozenset()

    @property
    def any(self) -> any_pb2.Any:
        return any_pb2.Any(type_url=self.type_url, value=self.payload)

    @cached_property
    def delta_wire(self) -> bytes:
        """This resource as one `resources` entry (a Resource) of a DeltaDiscoveryResponse:
        its name, its digest as the per-resource version, and the resource."""
        resource = _field(1, self.digest.encode()) + _field(2, self.any_wire)
        return _field(_RESOURCES_FIELD, resource + _field(3, self.name.encode()))

    @cached_property
    def any_wire(self) -> bytes:
        return _field(1, self.type_url.encode()) + _field(2, self.payload)

    @cached_property
    def wire(self) -> bytes:
        """This resource as one `resources` entry of a DiscoveryResponse, encoded once and
        shared by every stream and every response that carries it."""
        return _field(_RESOURCES_FIELD, self.any_wire)


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def version_of(resources: Iterable[Encoded]) -> str:
    """Deterministic version of a response: replicas with equal state agree on it."""
    h = hashlib.blake2b(digest_size=8)
    for res in sorted(resources, key=lambda r: r.name):
        h.update(f"{res.name}\0{res.digest}\n".encode())
    return h.hexdigest()


class ResourceSet:
    """Resources of one type as one response carries them, computed once per snapshot and
    shared by every stream: by name, their version, and the response body (all but the
    header, which only differs in the nonce). Never mutated."""

    __slots__ = ("_body", "by_name", "version")

    def __init__(self, by_name: dict[str, Encoded]) -> None:
        self.by_name = by_name
        self.version = version_of(by_name.values())
        self._body: bytes | None = None

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.by_name[name].wire for name in sorted(self.by_name))
        return self._body

    def __len__(self) -> int:
        return len(self.by_name)

    def __iter__(self) -> Iterator[Encoded]:
        return (self.by_name[name] for name in sorted(self.by_name))


EMPTY = ResourceSet({})


def encode_response(version: str, nonce: str, type_url: str, resources: ResourceSet) -> bytes:
    """A serialized DiscoveryResponse (the same bytes for v2 and v3: wire-compatible)."""
    head = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
    return head.SerializeToString() + resources.body


def encode_delta_response(
    version: str, nonce: str, type_url: str, changed: Iterable[Encoded], removed: Iterable[str]
) -> bytes:
    """A serialized DeltaDiscoveryResponse: only the changed resources, and removed names."""
    head = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=version, type_url=type_url, nonce=nonce, removed_resources=removed
    )
    return head.SerializeToString() + b"".join(res.delta_wire for res in changed)


# Field numbers, the same in v2 and v3: RouteConfiguration.virtual_hosts, VirtualHost.routes,
# DiscoveryResponse.resources.
_VIRTUAL_HOSTS_FIELD = 2
_ROUTES_FIELD = 3
_RESOURCES_FIELD = 2


@dataclass(frozen=True)
class WorkerRoutes:
    """One worker's encoded routes and their digest. `slots` are the pieces the route layout
    splices into the virtual host: v2 one (its repeated VirtualHost.routes fields), v3 two
    (its entry in the matcher's header map and its entry in the path trie)."""

    cluster: str
    slots: tuple[bytes, ...]
    digest: str


class Encoder:
    """Encodes one flavour; remembers per-worker results of the previous state.

    Caches are keyed by worker id and hold (key, result): the registry keeps its Worker
    objects, so an unchanged worker is found with an identity check, not a field compare.
    """

    def __init__(self, flavour: Flavour) -> None:
        self.flavour = flavour
        self._web_api: tuple[Upstream, Encoded] | None = None
        self._clusters: dict[str, tuple[Worker, tuple[str, ...] | None, Encoded]] = {}
        self._routes: dict[str, tuple[Worker, WorkerRoutes]] = {}

    def _cluster(
        self, name: str, upstream: Upstream, stat_name: str | None, hosts: tuple[str, ...] | None
    ) -> Encoded:
        msg = resources.build_cluster(name, upstream, stat_name, hosts, self.flavour)
        payload = msg.SerializeToString(deterministic=True)
        return Encoded(name, self.flavour.cluster_type, payload, digest(payload))

    def clusters(
        self, web_api: Upstream, routable: list[tuple[Worker, tuple[str, ...] | None]]
    ) -> dict[str, Encoded]:
        if self._web_api is None or self._web_api[0] != web_api:
            self._web_api = (web_api, self._cluster(WEB_API_CLUSTER, web_api, None, None))
        out = {WEB_API_CLUSTER: self._web_api[1]}
        cache, fresh = self._clusters, {}
        for worker, hosts in routable:
            hit = cache.get(worker.id)
            if hit is None or hit[1] != hosts or (hit[0] is not worker and hit[0] != worker):
                name = cluster_name(worker.id)
                stat = worker_stat_name(worker.id)
                hit = (worker, hosts, self._cluster(name, worker, stat, hosts))
            fresh[worker.id] = hit
            out[hit[2].name] = hit[2]
        self._clusters = fresh
        return out

    def worker_routes(self, routable: tuple[Worker, ...]) -> dict[str, WorkerRoutes]:
        cache, fresh = self._routes, {}
        for worker in routable:
            hit = cache.get(worker.id)
            if hit is None or (hit[0] is not worker and hit[0] != worker):
                slots = self._worker_slots(worker)
                routes = WorkerRoutes(cluster_name(worker.id), slots, digest(b"".join(slots)))
                hit = (worker, routes)
            fresh[worker.id] = hit
        self._routes = fresh
        return {worker_id: hit[1] for worker_id, hit in fresh.items()}

    def _worker_slots(self, worker: Worker) -> tuple[bytes, ...]:
        if self.flavour.api == "v3":
            return encoded_worker_entries(worker)
        # A VirtualHost with only `routes` set serialises to its repeated route fields.
        holder = resources.worker_routes(worker, self.flavour)
        return (holder.SerializeToString(deterministic=True),)

    def route_config(self, name: str, parts: Iterable[WorkerRoutes]) -> Encoded:
        # Assembled from per-worker encoded routes: concatenating repeated (and map) fields is
        # valid protobuf and avoids re-serialising every route per change.
        parts = list(parts)
        head = self.flavour.virtual_host(name=VIRTUAL_HOST, domains=["*"])
        pieces = [head.SerializeToString(deterministic=True)]
        if self.flavour.api == "v3" and parts:
            pieces.append(encoded_matcher((p.slots[0] for p in parts), (p.slots[1] for p in parts)))
        else:  # v2, or no worker at all (the matcher's maps must not be empty)
            pieces.extend(p.slots[0] for p in parts)
            pieces.extend(
                _field(_ROUTES_FIELD, route.SerializeToString(deterministic=True))
                for route in resources.fallback_routes(self.flavour)
            )
        vhost = b"".join(pieces)
        config = self.flavour.route_config(name=name)
        payload = config.SerializeToString(deterministic=True) + _field(_VIRTUAL_HOSTS_FIELD, vhost)
        return Encoded(
            name,
            self.flavour.route_type,
            payload,
            digest(payload),
            refs=frozenset([WEB_API_CLUSTER, *(p.cluster for p in parts)]),
            members=frozenset((p.cluster, p.digest) for p in parts),
        )


_SUBSET_CACHE = 8  # route configurations for partial cluster sets, per snapshot and type


class Snapshot:
    """Resources of one registry state. `created` lets metrics time change -> ACK."""

    def __init__(self, state: RegistryState, encoders: dict[str, Encoder]) -> None:
        self.state = state
        self.created = time.monotonic()
        self._encoders = encoders
        self._routable = routable_workers(state)
        self.routable = tuple(pair[0] for pair in self._routable)
        # Named workers dhxds could not resolve (yet): stored, but not sent to Envoy.
        self.routable_ids = frozenset(w.id for w in self.routable)
        self.unresolved = tuple(w.id for w in state.workers if w.id not in self.routable_ids)
        self._clusters: dict[str, ResourceSet] = {}
        self._worker_routes: dict[str, dict[str, WorkerRoutes]] = {}
        self._route_configs: dict[tuple[str, frozenset[str]], Encoded] = {}
        self._route_sets: dict[Encoded, ResourceSet] = {}

    def cluster_set(self, type_url: str) -> ResourceSet:
        """Every cluster of this state (built on first use)."""
        if type_url not in self._clusters:
            encoder = self._encoders[TYPES[type_url].api]
            built = encoder.clusters(self.state.web_api, self._routable)
            self._clusters[type_url] = ResourceSet(built)
        return self._clusters[type_url]

    def clusters(self, type_url: str) -> dict[str, Encoded]:
        return self.cluster_set(type_url).by_name

    def _parts(self, type_url: str) -> dict[str, WorkerRoutes]:
        if type_url not in self._worker_routes:
            encoder = self._encoders[TYPES[type_url].api]
            self._worker_routes[type_url] = encoder.worker_routes(self.routable)
        return self._worker_routes[type_url]

    def route_config(self, type_url: str, have: frozenset[str] | None = None) -> Encoded | None:
        """The route configuration with the routes of workers whose clusters are in `have`
        (None: all workers); None when even web_api_service is missing from `have`."""
        if have is not None and WEB_API_CLUSTER not in have:
            return None
        parts = self._parts(type_url)
        missing = (
            frozenset()
            if have is None
            else frozenset(wid for wid, p in parts.items() if p.cluster not in have)
        )
        key = (type_url, missing)
        config = self._route_configs.get(key)
        if config is None:
            partial = [k for k in self._route_configs if k[1]]
            if len(partial) >= _SUBSET_CACHE:
                del self._route_configs[partial[0]]
            encoder = self._encoders[TYPES[type_url].api]
            chosen = (p for wid, p in parts.items() if wid not in missing)
            config = self._route_configs[key] = encoder.route_config(
                self.state.route_config_name, chosen
            )
        return config

    def route_set(self, config: Encoded) -> ResourceSet:
        """A route configuration as a response carries it (one per configuration)."""
        found = self._route_sets.get(config)
        if found is None:
            found = self._route_sets[config] = ResourceSet({config.name: config})
        return found

    def worker_route(self, type_url: str, worker_id: str) -> WorkerRoutes | None:
        return self._parts(type_url).get(worker_id)

    def resources(self, type_url: str) -> dict[str, Encoded]:
        """All resources of a type URL as the registry has them, by name."""
        if TYPES[type_url].kind == CDS:
            return self.clusters(type_url)
        config = self.route_config(type_url)
        assert config is not None
        return {config.name: config}


def new_encoders() -> dict[str, Encoder]:
    return {api: Encoder(flavour) for api, flavour in FLAVOURS.items()}
