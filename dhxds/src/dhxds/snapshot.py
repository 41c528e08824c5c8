"""Immutable snapshots of encoded resources, one per registry state, with content-hash versions.

A change costs O(changed) Python work: each flavour's Encoder keeps the encoded cluster and
routes of every worker, in id order, and moves from one registry state to the next by
re-encoding only the workers that differ (found by object identity: the registry keeps the
Worker objects of unchanged workers). Versions are sums of per-resource hashes, so they move
with the change too. What is left per change is C-level copying: the snapshot's own copies of
the encoder's lists and dicts, and joining the pre-encoded bytes of a response body.

A snapshot encodes lazily per type URL, so v2 resources are only built while a v2 client is
connected. Route configurations can be assembled for a subset of the workers (those whose
clusters a node has ACKed), so a node's routes never wait for clusters it does not have yet.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from . import resources
from .model import WEB_API_CLUSTER, Upstream, Worker, cluster_name
from .resources import VIRTUAL_HOST, RegistryState, is_ip, worker_stat_name
from .route_matcher import encoded_matcher, encoded_worker_entries
from .wire import Chunks, header
from .wire import field as _field
from .xds_types import CDS, FLAVOURS, TYPES, Flavour

_MASK = (1 << 64) - 1


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, eq=False)
class Encoded:
    """One resource as sent: its serialized message, a digest, and the clusters it uses.

    For a route configuration, `members` maps each worker cluster it routes to the digest of
    that worker's routes, so "has this node applied worker w's current route" is a lookup.
    Compared by identity: equal content has equal digests, which is what the core compares.
    """

    name: str
    type_url: str
    payload: bytes
    digest: str
    refs: frozenset[str] = frozenset()
    members: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def vhash(self) -> int:
        """This resource's share of a version (see version_of)."""
        return _hash64(f"{self.name}\0{self.digest}")

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
        shared by every stream and every response that carries it (one copy of the payload,
        which for a route configuration is megabytes)."""
        any_wire = Chunks(_field(1, self.type_url.encode()), header(2, len(self.payload)))
        any_wire.parts.append(self.payload)
        any_wire.size += len(self.payload)
        return Chunks().add_field(_RESOURCES_FIELD, any_wire).join()


def _version(total: int) -> str:
    return f"{total & _MASK:016x}"


def version_of(resources: Iterable[Encoded]) -> str:
    """Deterministic version of a response: replicas with equal state agree on it. A sum of
    per-resource hashes of (name, digest), so an encoder updates it per change in O(1)."""
    return _version(sum(res.vhash for res in resources))


class ResourceSet:
    """Resources of one type as one response carries them, computed once per snapshot and
    shared by every stream: by name, their version, and the response body (all but the
    header, which only differs in the nonce). Never mutated. An encoder passes the version
    and the body's parts (in name order), which it keeps up to date per change."""

    __slots__ = ("_body", "_parts", "by_name", "version")

    def __init__(
        self,
        by_name: dict[str, Encoded],
        version: str | None = None,
        parts: list[bytes] | None = None,
    ) -> None:
        self.by_name = by_name
        self.version = version_of(by_name.values()) if version is None else version
        self._parts = parts
        self._body: bytes | None = None

    @property
    def body(self) -> bytes:
        if self._body is None:
            if self._parts is None:
                self._parts = [self.by_name[name].wire for name in sorted(self.by_name)]
            self._body = b"".join(self._parts)
            self._parts = None
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

    @cached_property
    def vhash(self) -> int:
        return _hash64(f"{self.cluster}\0{self.digest}")


@dataclass(frozen=True)
class _Entry:
    """What an encoder holds for one routable worker."""

    worker: Worker
    hosts: tuple[str, ...] | None
    cluster: Encoded
    routes: WorkerRoutes


class RouteParts:
    """The encoded routes of one state, frozen for a snapshot (copies of the encoder's lists),
    from which route configurations for all workers or a subset are assembled."""

    def __init__(self, encoder: Encoder) -> None:
        self.flavour = encoder.flavour
        self.ids = list(encoder._ids)
        self.slots = [list(lst) for lst in encoder._slots]
        self.sizes = list(encoder._slot_sizes)
        self.members = dict(encoder._members)  # cluster -> routes digest
        self.by_id = dict(encoder._routes)
        self.total = encoder._route_sum

    def config(self, name: str, missing: frozenset[str]) -> Encoded:
        """The route configuration without the workers in `missing` (ids)."""
        slots, sizes, members, total = self.slots, self.sizes, self.members, self.total
        if missing:
            slots = [list(lst) for lst in slots]
            sizes = list(sizes)
            members = dict(members)
            for wid in missing:
                routes = self.by_id[wid]
                del members[routes.cluster]
                total -= routes.vhash
                for slot, data in enumerate(routes.slots):
                    sizes[slot] -= len(data)
            for index in sorted((bisect.bisect_left(self.ids, w) for w in missing), reverse=True):
                for lst in slots:
                    del lst[index]
        return _route_config(self.flavour, name, slots, sizes, members, total)


@dataclass(frozen=True)
class _Fixed:
    head: bytes  # VirtualHost name and domains
    fallbacks: bytes  # the ordered layout's fallback routes, as repeated routes fields
    digest: str  # of everything a route configuration holds besides its workers' routes


_FIXED: dict[tuple[str, str], _Fixed] = {}


def _fixed(flavour: Flavour, name: str) -> _Fixed:
    found = _FIXED.get((flavour.api, name))
    if found is None:
        head = flavour.virtual_host(name=VIRTUAL_HOST, domains=["*"])
        fallbacks = b"".join(
            _field(_ROUTES_FIELD, route.SerializeToString(deterministic=True))
            for route in resources.fallback_routes(flavour)
        )
        config = flavour.route_config(name=name).SerializeToString(deterministic=True)
        head_bytes = head.SerializeToString(deterministic=True)
        probe = encoded_matcher([b""], [b""]).join()  # the matcher's fixed parts
        found = _Fixed(head_bytes, fallbacks, digest(config + head_bytes + fallbacks + probe))
        _FIXED[(flavour.api, name)] = found
    return found


def _route_config(
    flavour: Flavour,
    name: str,
    slots: list[list[bytes]],
    sizes: list[int],
    members: dict[str, str],
    total: int,
) -> Encoded:
    # Assembled from per-worker encoded routes: concatenating repeated (and map) fields is
    # valid protobuf and avoids re-serialising every route per change.
    fixed = _fixed(flavour, name)
    vhost = Chunks(fixed.head)
    if flavour.api == "v3" and members:
        matcher = encoded_matcher(slots[0], slots[1], (sizes[0], sizes[1]))
        vhost.extend(matcher.parts, matcher.size)
    else:  # v2, or no worker at all (the matcher's maps must not be empty)
        vhost.extend(slots[0], sizes[0]).extend([fixed.fallbacks])
    config = Chunks(flavour.route_config(name=name).SerializeToString(deterministic=True))
    payload = config.add_field(_VIRTUAL_HOSTS_FIELD, vhost).join()
    # The digest follows the content without hashing megabytes: the fixed parts' digest, and
    # the sum of the member routes' hashes (each a hash of that worker's encoded routes).
    config_digest = digest(f"{fixed.digest}\0{len(members)}\0{total & _MASK:x}".encode())
    return Encoded(
        name,
        flavour.route_type,
        payload,
        config_digest,
        refs=frozenset(members).union((WEB_API_CLUSTER,)),
        members=members,
    )


class Encoder:
    """Encodes one flavour and keeps, in worker id order, what it encoded for the state it was
    last moved to; `move` re-encodes only the workers that differ from that state."""

    def __init__(self, flavour: Flavour) -> None:
        self.flavour = flavour
        self._state: RegistryState | None = None
        self._objects: dict[int, Worker] = {}  # id(worker) -> worker, of that state
        self._workers: dict[str, Worker] = {}  # every worker of that state, by id
        self._addresses: dict[str, tuple[str, ...]] = {}
        self._named: dict[str, set[str]] = {}  # host name -> ids of workers using it
        self._web_api: tuple[Upstream, Encoded] | None = None
        # Routable workers: their entries, and per-worker bytes aligned with the sorted ids.
        self._entries: dict[str, _Entry] = {}
        self._ids: list[str] = []
        self._wires: list[bytes] = []  # cluster `resources` entries
        # Route slots per worker: v3 two (header map entry, path trie entry), v2 one.
        self._slots: list[list[bytes]] = [[] for _slot in range(2 if flavour.api == "v3" else 1)]
        self._slot_sizes = [0] * len(self._slots)  # total bytes per slot list
        self._clusters: dict[str, Encoded] = {}  # worker clusters by name
        self._cluster_sum = 0
        self._routes: dict[str, WorkerRoutes] = {}  # by worker id
        self._members: dict[str, str] = {}  # cluster -> routes digest
        self._route_sum = 0

    # --- moving between states -----------------------------------------------------------
    def move(self, state: RegistryState) -> None:
        if state is self._state:
            return
        current = dict(zip(map(id, state.workers), state.workers, strict=True))
        gone = [self._objects[key] for key in self._objects.keys() - current.keys()]
        new = [current[key] for key in current.keys() - self._objects.keys()]
        touched = {w.id for w in gone} | {w.id for w in new}
        for worker in gone:
            if self._workers.get(worker.id) is worker:
                del self._workers[worker.id]
                self._unname(worker)
        for worker in new:
            self._workers[worker.id] = worker
            if not is_ip(worker.host):
                self._named.setdefault(worker.host, set()).add(worker.id)
        addresses = dict(state.addresses)
        changed_names = {n for n, _hosts in set(addresses.items()) ^ set(self._addresses.items())}
        for name in changed_names:
            touched |= self._named.get(name, set())
        self._addresses = addresses
        self._objects = current
        self._state = state
        for worker_id in touched:
            self._update(worker_id)

    def _unname(self, worker: Worker) -> None:
        users = self._named.get(worker.host)
        if users is not None:
            users.discard(worker.id)
            if not users:
                del self._named[worker.host]

    def _update(self, worker_id: str) -> None:
        worker = self._workers.get(worker_id)
        hosts: tuple[str, ...] | None = None
        routable = worker is not None and is_ip(worker.host)
        if worker is not None and not routable and worker.host in self._addresses:
            hosts, routable = self._addresses[worker.host], True
        old = self._entries.get(worker_id)
        if old is not None and routable and old.worker == worker and old.hosts == hosts:
            if old.worker is not worker:
                self._entries[worker_id] = _Entry(worker, hosts, old.cluster, old.routes)
            return
        if old is not None:
            self._drop(worker_id, old)
        if routable:
            assert worker is not None
            reuse_routes = old is not None and old.worker == worker
            routes = old.routes if reuse_routes and old is not None else self._encode_routes(worker)
            self._add(_Entry(worker, hosts, self._encode_cluster(worker, hosts), routes))

    def _drop(self, worker_id: str, entry: _Entry) -> None:
        index = bisect.bisect_left(self._ids, worker_id)
        del self._ids[index], self._wires[index]
        for slot, lst in enumerate(self._slots):
            self._slot_sizes[slot] -= len(lst[index])
            del lst[index]
        del self._entries[worker_id], self._clusters[entry.cluster.name]
        del self._routes[worker_id], self._members[entry.routes.cluster]
        self._cluster_sum -= entry.cluster.vhash
        self._route_sum -= entry.routes.vhash

    def _add(self, entry: _Entry) -> None:
        worker_id = entry.worker.id
        index = bisect.bisect_left(self._ids, worker_id)
        self._ids.insert(index, worker_id)
        self._wires.insert(index, entry.cluster.wire)
        for slot, (lst, data) in enumerate(zip(self._slots, entry.routes.slots, strict=True)):
            lst.insert(index, data)
            self._slot_sizes[slot] += len(data)
        self._entries[worker_id] = entry
        self._clusters[entry.cluster.name] = entry.cluster
        self._routes[worker_id] = entry.routes
        self._members[entry.routes.cluster] = entry.routes.digest
        self._cluster_sum += entry.cluster.vhash
        self._route_sum += entry.routes.vhash

    # --- encoding one worker -------------------------------------------------------------
    def _encode_cluster(self, worker: Worker, hosts: tuple[str, ...] | None) -> Encoded:
        return self._cluster(cluster_name(worker.id), worker, worker_stat_name(worker.id), hosts)

    def _cluster(
        self, name: str, upstream: Upstream, stat_name: str | None, hosts: tuple[str, ...] | None
    ) -> Encoded:
        msg = resources.build_cluster(name, upstream, stat_name, hosts, self.flavour)
        payload = msg.SerializeToString(deterministic=True)
        return Encoded(name, self.flavour.cluster_type, payload, digest(payload))

    def _encode_routes(self, worker: Worker) -> WorkerRoutes:
        if self.flavour.api == "v3":
            slots = encoded_worker_entries(worker)
        else:  # A VirtualHost with only `routes` set serialises to its repeated route fields.
            holder = resources.worker_routes(worker, self.flavour)
            slots = (holder.SerializeToString(deterministic=True),)
        return WorkerRoutes(cluster_name(worker.id), slots, digest(b"".join(slots)))

    # --- what a snapshot takes -----------------------------------------------------------
    def cluster_set(self, state: RegistryState) -> ResourceSet:
        self.move(state)
        if self._web_api is None or self._web_api[0] != state.web_api:
            web = self._cluster(WEB_API_CLUSTER, state.web_api, None, None)
            self._web_api = (state.web_api, web)
        web = self._web_api[1]
        by_name = dict(self._clusters)
        by_name[WEB_API_CLUSTER] = web
        # Name order: web_api_service sorts before every worker_<id>, and those go by id.
        parts = [web.wire, *self._wires]
        return ResourceSet(by_name, _version(self._cluster_sum + web.vhash), parts)

    def route_parts(self, state: RegistryState) -> RouteParts:
        self.move(state)
        return RouteParts(self)

    def routable(self, state: RegistryState) -> tuple[frozenset[str], tuple[str, ...]]:
        """Ids of the routable workers, and of those whose host name is unresolved (sorted)."""
        self.move(state)
        routable = frozenset(self._entries)
        unresolved = tuple(sorted(self._workers.keys() - routable))
        return routable, unresolved


_SUBSET_CACHE = 8  # route configurations for partial cluster sets, per snapshot and type


class Snapshot:
    """Resources of one registry state. `created` lets metrics time change -> ACK."""

    def __init__(self, state: RegistryState, encoders: dict[str, Encoder]) -> None:
        self.state = state
        self.created = time.monotonic()
        self._encoders = encoders
        # Named workers dhxds could not resolve (yet): stored, but not sent to Envoy.
        self.routable_ids, self.unresolved = encoders["v3"].routable(state)
        self._clusters: dict[str, ResourceSet] = {}
        self._route_parts: dict[str, RouteParts] = {}
        self._route_configs: dict[tuple[str, frozenset[str]], Encoded] = {}
        self._route_sets: dict[Encoded, ResourceSet] = {}

    def _encoder(self, type_url: str) -> Encoder:
        return self._encoders[TYPES[type_url].api]

    def cluster_set(self, type_url: str) -> ResourceSet:
        """Every cluster of this state (built on first use)."""
        if type_url not in self._clusters:
            self._clusters[type_url] = self._encoder(type_url).cluster_set(self.state)
        return self._clusters[type_url]

    def clusters(self, type_url: str) -> dict[str, Encoded]:
        return self.cluster_set(type_url).by_name

    def _parts(self, type_url: str) -> RouteParts:
        if type_url not in self._route_parts:
            self._route_parts[type_url] = self._encoder(type_url).route_parts(self.state)
        return self._route_parts[type_url]

    def route_config(self, type_url: str, have: frozenset[str] | None = None) -> Encoded | None:
        """The route configuration with the routes of workers whose clusters are in `have`
        (None: all workers); None when even web_api_service is missing from `have`."""
        if have is not None and WEB_API_CLUSTER not in have:
            return None
        parts = self._parts(type_url)
        prefix = len(cluster_name(""))
        missing = (
            frozenset()
            if have is None
            else frozenset(name[prefix:] for name in parts.members.keys() - have)
        )
        key = (type_url, missing)
        config = self._route_configs.get(key)
        if config is None:
            partial = [k for k in self._route_configs if k[1]]
            if len(partial) >= _SUBSET_CACHE:
                del self._route_configs[partial[0]]
            config = parts.config(self.state.route_config_name, missing)
            self._route_configs[key] = config
        return config

    def route_set(self, config: Encoded) -> ResourceSet:
        """A route configuration as a response carries it (one per configuration)."""
        found = self._route_sets.get(config)
        if found is None:
            found = self._route_sets[config] = ResourceSet({config.name: config})
        return found

    def worker_route(self, type_url: str, worker_id: str) -> WorkerRoutes | None:
        return self._parts(type_url).by_id.get(worker_id)

    def resources(self, type_url: str) -> dict[str, Encoded]:
        """All resources of a type URL as the registry has them, by name."""
        if TYPES[type_url].kind == CDS:
            return self.clusters(type_url)
        config = self.route_config(type_url)
        assert config is not None
        return {config.name: config}


def new_encoders() -> dict[str, Encoder]:
    return {api: Encoder(flavour) for api, flavour in FLAVOURS.items()}
