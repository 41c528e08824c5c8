"""Immutable snapshots of encoded resources, one per registry state.

A snapshot encodes lazily per type URL, so v2 resources are only built while a v2 client is
connected; the encoders (encoder.py) it draws on re-encode only what changed since the state
they last saw. Route configurations can be assembled for a subset of the workers (those whose
clusters a node has ACKed), so a node's routes never wait for clusters it does not have yet.
"""

from __future__ import annotations

import time

from .encoded import (
    EMPTY,
    Encoded,
    ResourceSet,
    digest,
    encode_delta_response,
    encode_response,
    version_of,
)
from .encoder import ON_DEMAND, Encoder, RouteParts, WorkerRoutes, new_encoders
from .model import WEB_API_CLUSTER, cluster_name
from .resources import RegistryState
from .xds_types import CDS, FLAVOURS, TYPES

__all__ = [  # what the core, the daemon and the tests take from here
    "EMPTY",
    "Encoded",
    "Encoder",
    "ResourceSet",
    "Snapshot",
    "digest",
    "encode_delta_response",
    "encode_response",
    "new_encoders",
    "version_of",
]

V3_CLUSTERS = FLAVOURS["v3"].cluster_type
_SUBSET_CACHE = 8  # route configurations for partial cluster sets, per snapshot and type


class Snapshot:
    """Resources of one registry state. `created` lets metrics time change -> ACK."""

    def __init__(self, state: RegistryState, encoders: dict[str, Encoder]) -> None:
        self.state = state
        self.created = time.monotonic()
        self._encoders = encoders
        # Named workers dhxds could not resolve (yet): stored, but not sent to Envoy.
        self.unresolved = encoders["v3"].unresolved(state)
        self._clusters: dict[tuple[str, bool], ResourceSet] = {}
        self._route_parts: dict[tuple[str, bool], RouteParts] = {}
        self._route_configs: dict[tuple[str, bool, frozenset[str]], Encoded] = {}
        self._route_sets: dict[Encoded, ResourceSet] = {}

    def _encoder(self, type_url: str, on_demand: bool = False) -> Encoder:
        return self._encoders[ON_DEMAND if on_demand else TYPES[type_url].api]

    def cluster_set(self, type_url: str, on_demand: bool = False) -> ResourceSet:
        """Every cluster of this state, or with `on_demand` those an on-demand Envoy gets
        without asking (web_api_service and the explicit workers'). Built on first use."""
        key = (type_url, on_demand)
        if key not in self._clusters:
            self._clusters[key] = self._encoder(type_url, on_demand).cluster_set(self.state)
        return self._clusters[key]

    def clusters(self, type_url: str) -> dict[str, Encoded]:
        return self.cluster_set(type_url).by_name

    def is_routable(self, worker_id: str) -> bool:
        """The worker is registered and Envoy can reach it (its cluster exists)."""
        return cluster_name(worker_id) in self.clusters(V3_CLUSTERS)

    @property
    def routable_ids(self) -> frozenset[str]:
        """Every routable worker's id (O(workers): for tests and operators)."""
        skip = len(cluster_name(""))
        return frozenset(n[skip:] for n in self.clusters(V3_CLUSTERS) if n != WEB_API_CLUSTER)

    def _parts(self, type_url: str, on_demand: bool = False) -> RouteParts:
        key = (type_url, on_demand)
        if key not in self._route_parts:
            self._route_parts[key] = self._encoder(type_url, on_demand).route_parts(self.state)
        return self._route_parts[key]

    def route_config(
        self, type_url: str, have: frozenset[str] | None = None, on_demand: bool = False
    ) -> Encoded | None:
        """The route configuration with the routes of workers whose clusters are in `have`
        (None: all workers); None when even web_api_service is missing from `have`. With
        `on_demand`, the on-demand layout (routes of the explicit workers only)."""
        if have is not None and WEB_API_CLUSTER not in have:
            return None
        parts = self._parts(type_url, on_demand)
        prefix = len(cluster_name(""))
        missing = (
            frozenset()
            if have is None
            else frozenset(name[prefix:] for name in parts.members.keys() - have)
        )
        key = (type_url, on_demand, missing)
        config = self._route_configs.get(key)
        if config is None:
            partial = [k for k in self._route_configs if k[2]]
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

    def worker_route(
        self, type_url: str, worker_id: str, on_demand: bool = False
    ) -> WorkerRoutes | None:
        return self._parts(type_url, on_demand).by_id.get(worker_id)

    def resources(self, type_url: str) -> dict[str, Encoded]:
        """All resources of a type URL as the registry has them, by name."""
        if TYPES[type_url].kind == CDS:
            return self.clusters(type_url)
        config = self.route_config(type_url)
        assert config is not None
        return {config.name: config}
