"""State of one resource type on one xDS stream (SotW): nonces, versions, ACK/NACK, names.

Pure and synchronous so the protocol rules can be tested without gRPC:
- a request whose nonce is not the last one sent is stale and ignored;
- a NACK is a request carrying error_detail; the rejected version is parked and not sent
  again, only a different version (or a subscription change) is;
- a changed resource_names list is answered even when the version did not change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .snapshot import Encoded, version_of


class Event(enum.Enum):
    INITIAL = "initial"  # first request of this type on the stream
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # answers an older response; ignored
    REQUEST = "request"  # a non-stale request that is neither ACK nor NACK (e.g. no nonce)


@dataclass
class Response:
    version: str
    nonce: str
    resources: list[Encoded]


@dataclass
class TypeState:
    type_url: str
    wildcard: bool  # CDS: full state whatever names are asked for
    subscribed: frozenset[str] = frozenset()
    nonce_seq: int = 0
    sent_nonce: str | None = None
    sent_version: str | None = None
    sent: dict[str, Encoded] = field(default_factory=dict)
    sent_at: float = 0.0  # snapshot.created of what was sent, for push latency
    acked_version: str | None = None
    acked: dict[str, Encoded] | None = None  # None: nothing known to be applied yet
    nacked_version: str | None = None
    last_error: str = ""
    resend: bool = False  # a subscription change asks for an answer even if unchanged
    client_version: str = ""  # version_info of the first request (after a reconnect)

    def on_request(
        self, version_info: str, nonce: str, names: list[str], error: str | None
    ) -> Event:
        """Apply one DiscoveryRequest; error is error_detail.message, None when absent."""
        if self.sent_nonce is None and not nonce:
            self.subscribed = frozenset(names)
            self.client_version = version_info
            self.resend = True
            return Event.INITIAL
        if nonce and nonce != self.sent_nonce:
            return Event.STALE
        new_names = frozenset(names)
        if new_names != self.subscribed:
            self.subscribed = new_names
            self.resend = not self.wildcard
        if not nonce:
            return Event.REQUEST
        if error is not None:
            self.nacked_version = self.sent_version
            self.last_error = error
            return Event.NACK
        self.acked_version = self.sent_version
        self.acked = dict(self.sent)
        self.nacked_version = None
        return Event.ACK

    def wanted(self, available: dict[str, Encoded]) -> dict[str, Encoded]:
        """What the client asked for out of what exists (everything for wildcard types)."""
        if self.wildcard:
            return available
        return {name: available[name] for name in sorted(self.subscribed) if name in available}

    def adopt_client_version(self, resources: dict[str, Encoded]) -> bool:
        """After a reconnect the client may already hold exactly these resources: then
        record them as applied and send nothing (versions are content hashes)."""
        if self.client_version and self.client_version == version_of(resources.values()):
            self.acked_version = self.sent_version = self.client_version
            self.acked, self.sent = dict(resources), dict(resources)
            self.client_version, self.resend = "", False
            return True
        self.client_version = ""
        return False

    def plan(self, resources: dict[str, Encoded]) -> str | None:
        """The version to send for these resources, or None when nothing should be sent."""
        version = version_of(resources.values())
        if self.resend:
            return version
        if version == self.sent_version or version == self.nacked_version:
            return None
        return version

    def mark_sent(self, version: str, resources: dict[str, Encoded], created: float) -> Response:
        self.nonce_seq += 1
        self.sent_nonce = str(self.nonce_seq)
        self.sent_version = version
        self.sent = dict(resources)
        self.sent_at = created
        self.resend = False
        return Response(version, self.sent_nonce, list(resources.values()))

    def refs(self) -> set[str]:
        """Clusters referenced by what was sent or is applied (route configurations)."""
        out: set[str] = set()
        for held in (self.sent, self.acked or {}):
            for res in held.values():
                out |= res.refs
        return out
