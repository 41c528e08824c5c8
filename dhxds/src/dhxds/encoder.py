"""Per API version, the encoded cluster and routes of every worker, kept in worker id order
across registry states: moving to a new state re-encodes only the workers that differ (found
by object identity: the registry keeps the Worker objects of unchanged workers), and versions
and byte counts are running sums. See docs/protocol.md, "Work per change"."""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from . import resources
from .encoded import (
    MASK,
    ROUTES_FIELD,
    VIRTUAL_HOSTS_FIELD,
    Encoded,
    ResourceSet,
    digest,
    hash64,
    version_from_sum,
)
from .host_names import HostNames
from .model import WEB_API_CLUSTER, Upstream, Worker, cluster_name
from .on_demand import is_explicit, on_demand_routes
from .resources import VIRTUAL_HOST, RegistryState, is_ip, worker_stat_name
from .route_matcher import encoded_matcher, encoded_worker_entries
from .wire import Chunks
from .wire import field as _field
from .xds_types import FLAVOURS, Flavour

_ANCESTORS = 8  # how many earlier cluster sets a delta diff can start from


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
        return hash64(f"{self.cluster}\0{self.digest}")


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
        self.on_demand = encoder.on_demand
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
        return _route_config(self.flavour, name, slots, sizes, members, total, self.on_demand)


@dataclass(frozen=True)
class _Fixed:
    head: bytes  # VirtualHost name and domains
    fallbacks: bytes  # the ordered layout's fallback routes, as repeated routes fields
    digest: str  # of everything a route configuration holds besides its workers' routes


_FIXED: dict[tuple[str, str, bool], _Fixed] = {}


def _fixed(flavour: Flavour, name: str, on_demand: bool) -> _Fixed:
    found = _FIXED.get((flavour.api, name, on_demand))
    if found is None:
        head = flavour.virtual_host(name=VIRTUAL_HOST, domains=["*"])
        tail = [*(on_demand_routes() if on_demand else ()), *resources.fallback_routes(flavour)]
        fallbacks = b"".join(
            _field(ROUTES_FIELD, route.SerializeToString(deterministic=True)) for route in tail
        )
        config = flavour.route_config(name=name).SerializeToString(deterministic=True)
        head_bytes = head.SerializeToString(deterministic=True)
        probe = encoded_matcher([b""], [b""]).join()  # the matcher's fixed parts
        found = _Fixed(head_bytes, fallbacks, digest(config + head_bytes + fallbacks + probe))
        _FIXED[(flavour.api, name, on_demand)] = found
    return found


def _route_config(
    flavour: Flavour,
    name: str,
    slots: list[list[bytes]],
    sizes: list[int],
    members: dict[str, str],
    total: int,
    on_demand: bool = False,
) -> Encoded:
    # Assembled from per-worker encoded routes: concatenating repeated (and map) fields is
    # valid protobuf and avoids re-serialising every route per change.
    fixed = _fixed(flavour, name, on_demand)
    vhost = Chunks(fixed.head)
    if flavour.api == "v3" and members and not on_demand:
        matcher = encoded_matcher(slots[0], slots[1], (sizes[0], sizes[1]))
        vhost.extend(matcher.parts, matcher.size)
    else:  # v2, on demand, or no worker at all (the matcher's maps must not be empty)
        vhost.extend(slots[0], sizes[0]).extend([fixed.fallbacks])
    config = Chunks(flavour.route_config(name=name).SerializeToString(deterministic=True))
    payload = config.add_field(VIRTUAL_HOSTS_FIELD, vhost).join()
    # The digest follows the content without hashing megabytes: the fixed parts' digest, and
    # the sum of the member routes' hashes (each a hash of that worker's encoded routes).
    config_digest = digest(f"{fixed.digest}\0{len(members)}\0{total & MASK:x}".encode())
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
    last moved to; `move` re-encodes only the workers that differ from that state.

    An on-demand encoder (on_demand.py) keeps only the explicit workers, in an ordered list
    ahead of the fixed on-demand routes: what every on-demand Envoy gets without asking."""

    def __init__(self, flavour: Flavour, on_demand: bool = False) -> None:
        self.flavour = flavour
        self.on_demand = on_demand
        self._state: RegistryState | None = None
        self._objects: dict[int, Worker] = {}  # id(worker) -> worker, of that state
        self._workers: dict[str, Worker] = {}  # every worker of that state, by id
        self._addresses: dict[str, tuple[str, ...]] = {}
        self._hosts = HostNames()  # host name -> ids of the workers using it
        self._web_api: tuple[Upstream, Encoded] | None = None
        # Routable workers: their entries, and per-worker bytes aligned with the sorted ids.
        self._entries: dict[str, _Entry] = {}
        self._ids: list[str] = []
        self._wires: list[bytes] = []  # cluster `resources` entries
        # Route slots per worker: v3 two (header map entry, path trie entry), v2 one.
        self._slots: list[list[bytes]] = [[] for _slot in range(2 if self._matcher else 1)]
        self._slot_sizes = [0] * len(self._slots)  # total bytes per slot list
        self._clusters: dict[str, Encoded] = {}  # worker clusters by name
        self._cluster_sum = 0
        self._routes: dict[str, WorkerRoutes] = {}  # by worker id
        self._members: dict[str, str] = {}  # cluster -> routes digest
        self._route_sum = 0
        # For delta streams: the last cluster set handed out, and the cluster names added,
        # replaced or removed since.
        self._last_set: ResourceSet | None = None
        self._dirty: set[str] = set()
        self._unresolved: set[str] = set()  # ids of workers whose host name is unresolved

    # --- moving between states -----------------------------------------------------------
    def move(self, state: RegistryState) -> None:
        if state is self._state:
            return
        last = self._state
        if (
            last is not None
            and state.changed is not None
            and state.parent is last.token
            and state.addresses == last.addresses
        ):
            self._follow(state, state.changed)
            return
        current = dict(zip(map(id, state.workers), state.workers, strict=True))
        gone = [self._objects[key] for key in self._objects.keys() - current.keys()]
        new = [current[key] for key in current.keys() - self._objects.keys()]
        touched = {w.id for w in gone} | {w.id for w in new}
        for worker in gone:
            if self._workers.get(worker.id) is worker:
                del self._workers[worker.id]
        for worker in new:
            self._workers[worker.id] = worker
        self._hosts.of(state)
        addresses = dict(state.addresses)
        changed_names = {n for n, _hosts in set(addresses.items()) ^ set(self._addresses.items())}
        for name in changed_names:
            touched |= self._hosts.users(name)
        self._addresses = addresses
        self._objects = current
        self._state = state
        for worker_id in touched:
            self._update(worker_id)

    def _follow(self, state: RegistryState, changed: Mapping[str, Worker | None]) -> None:
        """The state right after ours, told by what changed: O(changed), not O(workers)."""
        for worker_id, worker in changed.items():
            old = self._workers.pop(worker_id, None)
            if old is not None:
                self._objects.pop(id(old), None)
            if worker is not None:
                self._workers[worker_id] = worker
                self._objects[id(worker)] = worker
        self._hosts.of(state)
        self._state = state
        for worker_id in changed:
            self._update(worker_id)

    def _update(self, worker_id: str) -> None:
        worker = self._workers.get(worker_id)
        hosts: tuple[str, ...] | None = None
        routable = worker is not None and is_ip(worker.host)
        if worker is not None and not routable and worker.host in self._addresses:
            hosts, routable = self._addresses[worker.host], True
        if worker is not None and not routable:
            self._unresolved.add(worker_id)
        else:
            self._unresolved.discard(worker_id)
        if self.on_demand and worker is not None and not is_explicit(worker):
            routable = False  # sent only when an Envoy asks for it, from the full encoder
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
        self._dirty.add(entry.cluster.name)
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
        self._dirty.add(entry.cluster.name)
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

    @property
    def _matcher(self) -> bool:
        return self.flavour.api == "v3" and not self.on_demand

    def _encode_routes(self, worker: Worker) -> WorkerRoutes:
        if self._matcher:
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
            self._dirty.add(WEB_API_CLUSTER)
        web = self._web_api[1]
        by_name = dict(self._clusters)
        by_name[WEB_API_CLUSTER] = web
        # Name order: web_api_service sorts before every worker_<id>, and those go by id.
        parts = [web.wire, *self._wires]
        version = version_from_sum(self._cluster_sum + web.vhash)
        made = ResourceSet(by_name, version, parts, self._ancestors())
        self._last_set = made
        return made

    def _ancestors(self) -> tuple[tuple[weakref.ref[ResourceSet], frozenset[str]], ...]:
        changed = frozenset(self._dirty)
        self._dirty.clear()
        last = self._last_set
        if last is None:
            return ()
        older = ((ref, names | changed) for ref, names in last.ancestors[: _ANCESTORS - 1])
        return ((weakref.ref(last), changed), *older)

    def route_parts(self, state: RegistryState) -> RouteParts:
        self.move(state)
        return RouteParts(self)

    def unresolved(self, state: RegistryState) -> tuple[str, ...]:
        """Ids of the workers whose host name is unresolved (sorted)."""
        self.move(state)
        return tuple(sorted(self._unresolved))


ON_DEMAND = "v3-on-demand"  # the encoders' key of the on-demand layout


def new_encoders() -> dict[str, Encoder]:
    encoders = {api: Encoder(flavour) for api, flavour in FLAVOURS.items()}
    encoders[ON_DEMAND] = Encoder(FLAVOURS["v3"], on_demand=True)
    return encoders
