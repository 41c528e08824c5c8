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
from .encoder import Encoder, RouteParts, WorkerRoutes, new_encoders
from .model import WEB_API_CLUSTER, cluster_name
from .resources import RegistryState
from .xds_types import CDS, TYPES

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
