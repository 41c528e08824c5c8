"""Encoded resources as dhxds sends them, content-hash versions, and response framing: a
resource is serialized once and its bytes shared by every stream and response."""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from .wire import Chunks, header
from .wire import field as _field

MASK = (1 << 64) - 1


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def hash64(text: str) -> int:
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
        return hash64(f"{self.name}\0{self.digest}")

    @property
    def any(self) -> any_pb2.Any:
        return any_pb2.Any(type_url=self.type_url, value=self.payload)

    @cached_property
    def delta_wire(self) -> bytes:
        """This resource as one `resources` entry (a Resource) of a DeltaDiscoveryResponse:
        its name, its digest as the per-resource version, and the resource."""
        resource = _field(1, self.digest.encode()) + _field(2, self.any_wire)
        return _field(RESOURCES_FIELD, resource + _field(3, self.name.encode()))

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
        return Chunks().add_field(RESOURCES_FIELD, any_wire).join()


def version_from_sum(total: int) -> str:
    return f"{total & MASK:016x}"


def version_of(resources: Iterable[Encoded]) -> str:
    """Deterministic version of a response: replicas with equal state agree on it. A sum of
    per-resource hashes of (name, digest), so an encoder updates it per change in O(1)."""
    return version_from_sum(sum(res.vhash for res in resources))


class ResourceSet:
    """Resources of one type as one response carries them, computed once per snapshot and
    shared by every stream: by name, their version, and the response body (all but the
    header, which only differs in the nonce). Never mutated. An encoder passes the version
    and the body's parts (in name order), which it keeps up to date per change, and the
    names that differ from its recent sets, so a delta stream's diff costs O(changed)."""

    __slots__ = ("__weakref__", "_body", "_parts", "ancestors", "by_name", "version")

    def __init__(
        self,
        by_name: dict[str, Encoded],
        version: str | None = None,
        parts: list[bytes] | None = None,
        ancestors: tuple[tuple[weakref.ref[ResourceSet], frozenset[str]], ...] = (),
    ) -> None:
        self.by_name = by_name
        self.version = version_of(by_name.values()) if version is None else version
        self._parts = parts
        self._body: bytes | None = None
        # (an earlier set, the names added, replaced or removed since it), newest first.
        self.ancestors = ancestors

    def names_changed_since(self, older: ResourceSet) -> frozenset[str] | None:
        """Names whose resource differs between `older` and this set, when `older` is one
        of its recent ancestors (else None: compare the sets whole)."""
        if older is self:
            return frozenset()
        for ref, names in self.ancestors:
            if ref() is older:
                return names
        return None

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
VIRTUAL_HOSTS_FIELD = 2
ROUTES_FIELD = 3
RESOURCES_FIELD = 2
