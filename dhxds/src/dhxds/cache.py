"""The snapshot cache: holds the current snapshot, fans changes out to streams, and decides
per node what each stream may receive (make-before-break).

Ordering rules, per node (all streams whose node has the same id and cluster):
- a route configuration is sent only when every cluster it references has been ACKed on
  the node's CDS streams (a route to an unknown cluster answers 503);
- a cluster stays in CDS while a route configuration sent to or applied by the node still
  references it, so removals go out as RDS first, then CDS after the RDS ACK.
A node with no CDS stream gets routes only after `cds_wait` seconds: after a control-plane
restart Envoy may reconnect its RDS stream before its CDS stream, and a node that takes its
clusters from elsewhere still gets its routes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from .resources import RegistryState
from .snapshot import CDS, TYPES, Encoded, Snapshot, new_encoders
from .stream import Response, TypeState

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Session:
    """One gRPC stream: a single type (CDS or RDS) or ADS (several types)."""

    transport: str  # v2|v3
    service: str  # cds|rds|ads
    peer: str = ""
    id: int = field(default_factory=itertools.count(1).__next__)
    opened: float = field(default_factory=time.monotonic)
    node_key: tuple[str, str] | None = None
    states: dict[str, TypeState] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def node_id(self) -> str:
        return self.node_key[0] if self.node_key else "?"


class XdsCache:
    def __init__(self, state: RegistryState, cds_wait: float = 10.0) -> None:
        self.cds_wait = cds_wait
        self._encoders = new_encoders()
        self.snapshot = Snapshot(state, self._encoders)
        self.sessions: set[Session] = set()
        self._by_node: dict[tuple[str, str], set[Session]] = defaultdict(set)

    # --- registry side -------------------------------------------------------------------
    def set_state(self, state: RegistryState) -> None:
        if state == self.snapshot.state:
            return
        self.snapshot = Snapshot(state, self._encoders)
        for session in self.sessions:
            session.wake.set()

    # --- stream side ---------------------------------------------------------------------
    def open(self, session: Session) -> None:
        self.sessions.add(session)

    def set_node(self, session: Session, node_key: tuple[str, str]) -> None:
        if session.node_key is None:
            session.node_key = node_key
            self._by_node[node_key].add(session)

    def close(self, session: Session) -> None:
        self.sessions.discard(session)
        if session.node_key is not None:
            peers = self._by_node.get(session.node_key)
            if peers is not None:
                peers.discard(session)
                if not peers:
                    del self._by_node[session.node_key]
                # Another stream of this node may have been waiting on this one.
                self.node_changed(session)

    def node_changed(self, session: Session) -> None:
        """After an ACK/NACK: other streams of the node may now be allowed to send."""
        for peer in self._peers(session):
            peer.wake.set()

    def _peers(self, session: Session) -> set[Session]:
        if session.node_key is None:
            return {session}
        return self._by_node.get(session.node_key, set()) | {session}

    def _cds_states(self, session: Session) -> list[TypeState]:
        return [
            ts
            for peer in self._peers(session)
            for url, ts in peer.states.items()
            if TYPES[url][1] == CDS
        ]

    def _ready_clusters(self, session: Session) -> set[str] | None:
        """Clusters ACKed on every CDS stream of the node; None if it has no CDS stream."""
        states = self._cds_states(session)
        if not states:
            return None
        sets = [set(ts.acked or ()) for ts in states]
        return set.intersection(*sets)

    def _route_refs(self, session: Session) -> set[str]:
        refs: set[str] = set()
        for peer in self._peers(session):
            for url, ts in peer.states.items():
                if TYPES[url][1] != CDS:
                    refs |= ts.refs()
        return refs

    def desired(self, session: Session, ts: TypeState) -> dict[str, Encoded] | None:
        """What this stream should hold for this type now; None = hold back for ordering."""
        available = self.snapshot.resources(ts.type_url)
        if TYPES[ts.type_url][1] == CDS:
            wanted = dict(available)
            # Keep clusters that routes in flight or applied still point at.
            for name in sorted(self._route_refs(session) - wanted.keys()):
                old = ts.sent.get(name) or (ts.acked or {}).get(name)
                if old is not None:
                    wanted[name] = old
            return dict(sorted(wanted.items()))
        wanted = ts.wanted(available)
        ready = self._ready_clusters(session)
        if ready is None:
            remaining = session.opened + self.cds_wait - time.monotonic()
            if remaining > 0:
                # Give the node's CDS stream a chance to (re)connect first.
                asyncio.get_running_loop().call_later(remaining, session.wake.set)
                return None
        else:
            missing = set().union(*(r.refs for r in wanted.values())) - ready
            if missing:
                log.debug(
                    "node %s: holding %s until CDS ACK of %d cluster(s)",
                    session.node_id,
                    ts.type_url.rsplit(".", 1)[-1],
                    len(missing),
                )
                return None
        return wanted

    def next_response(self, session: Session, ts: TypeState) -> Response | None:
        if ts.client_version:
            # Reconnect: the client states what it holds; compare with the unordered target.
            if ts.adopt_client_version(ts.wanted(self.snapshot.resources(ts.type_url))):
                self.node_changed(session)
                return None
        desired = self.desired(session, ts)
        if desired is None:
            return None
        if not ts.wildcard and not desired:
            return None  # an empty named-resource response would tell the client nothing
        # Push latency counts from the registry change, or from the request that asked.
        since = time.monotonic() if ts.resend else self.snapshot.created
        version = ts.plan(desired)
        if version is None:
            return None
        return ts.mark_sent(version, desired, since)
