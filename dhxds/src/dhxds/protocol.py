"""The xDS protocol core (state of the world): per-stream, per-type state machines and the
per-node ordering rules, as plain functions of (state, request, now).

No gRPC and no event loop here: grpc_server.py only moves bytes and wakes streams, and the
property tests drive this module directly. The rules (docs/protocol.md gives their reasons):

1. One response in flight per type and stream. While it is unanswered, changes coalesce;
   its ACK or NACK lets the newest state go out. So an ACK always names the last response
   sent and is never dropped as stale during a burst.
2. A request whose nonce is not the last one sent is stale and ignored.
3. A NACK parks the rejected version: it is not sent again, only a different one (or an
   answer to a subscription change) is.
4. Make-before-break: a stream gets the routes of exactly those workers whose clusters its
   CDS view has ACKed (and that a CDS response in flight keeps), so a route never names a
   cluster Envoy does not have; a cluster stays in CDS while a route sent to or applied by
   the same Envoy still names it.
5. The CDS view of a stream is its own CDS subscription (ADS), else the newest CDS stream of
   the same node and API on the same connection: one Envoy multiplexes its xDS streams over
   one connection to dhxds. Streams of an earlier connection that went silent (a dead peer,
   a restarted Envoy) never hold a newer one back.
6. A stream without a CDS view (static clusters, a debugging client) gets the full route
   configuration once `cds_grace` has passed since it opened; the grace lets a CDS stream
   that reconnects a little later come first.
7. Delta (incremental) streams follow the same rules; a response carries only what differs
   from what the client holds (its ACKed state, or after a reconnect the
   `initial_resource_versions` it states) and the names it must remove.
8. On demand (a delta v3 Envoy whose node metadata sets `dhxds_on_demand`, on_demand.py): its
   wildcard CDS subscription gets web_api_service and the explicit workers' clusters; any
   other worker cluster only once it is subscribed by name (ODCDS). Envoy never asks for a
   name twice on one stream, so a subscribed name is never removed: one without a worker
   gets an empty cluster (requests fail at once with 503), after `on_demand_grace` for a
   name the client never held, so a request racing the registration (or a replica's watch)
   waits for the worker instead.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from .model import cluster_name
from .on_demand import MAX_NO_WORKER_CLUSTERS, no_worker_cluster
from .snapshot import EMPTY, Encoded, ResourceSet, Snapshot
from .xds_types import CDS, FLAVOURS, TYPES, ResourceType, Service

CDS_GRACE_S = 2.0
ON_DEMAND_GRACE_S = 1.0
NodeKey = tuple[str, str]  # (node.id, node.cluster)


class Event(enum.Enum):
    INITIAL = "initial"  # first request of this type on the stream
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # answers an older response; ignored
    REQUEST = "request"  # neither ACK nor NACK: no nonce, or the response was answered already
    UNSUPPORTED = "unsupported"  # a type URL this stream does not carry; ignored


@dataclass(frozen=True)
class Request:
    """The parts of a DiscoveryRequest the protocol looks at."""

    type_url: str
    version_info: str = ""
    nonce: str = ""
    names: tuple[str, ...] = ()
    error: str | None = None  # error_detail.message; None when there is no error_detail
    node: NodeKey | None = None
    # Delta only: subscription changes, and what the client holds after a reconnect.
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    initial_versions: tuple[tuple[str, str], ...] = ()
    on_demand: bool = False  # the node asks for worker clusters by name (rule 8)


@dataclass(frozen=True)
class Response:
    type_url: str
    version: str
    nonce: str
    resources: ResourceSet  # everything the client holds once it applies this response
    since: float  # monotonic time of the change (or request) this answers, for latency
    # Delta only: what actually goes on the wire.
    changed: tuple[Encoded, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass
class TypeState:
    """One resource type on one stream."""

    rtype: ResourceType
    delta: bool = False
    held: dict[str, str] = field(default_factory=dict)  # delta: initial_resource_versions
    force: set[str] = field(default_factory=set)  # delta: names to send even if unchanged
    subscribed: frozenset[str] = frozenset()
    nonce_seq: int = 0
    sent_nonce: str | None = None
    in_flight: bool = False  # the last response is not ACKed or NACKed yet
    sent_version: str | None = None
    sent_set: ResourceSet = EMPTY
    sent_at: float = 0.0
    acked_version: str | None = None
    acked_set: ResourceSet | None = None  # None: nothing known to be applied yet
    nacked_version: str | None = None
    last_error: str = ""
    resend: bool = False  # a (re)subscription asks for an answer even if unchanged
    client_version: str = ""  # version_info of the first request (after a reconnect)
    # On demand (rule 8): names are subscribed one by one; when each unknown one was asked.
    named: bool = False
    missing_since: dict[str, float] = field(default_factory=dict)
    no_worker: set[str] = field(default_factory=set)  # names answered by an empty cluster

    def on_request(self, req: Request) -> Event:
        if self.delta:
            return self._on_delta_request(req)
        if self.sent_nonce is None and not req.nonce:
            self.subscribed = frozenset(req.names)
            self.client_version = self.client_version or req.version_info
            self.resend = True
            return Event.INITIAL
        if req.nonce and req.nonce != self.sent_nonce:
            return Event.STALE
        names = frozenset(req.names)
        if names != self.subscribed:
            self.subscribed = names
            self.resend = self.resend or not self.rtype.wildcard
        if not req.nonce or not self.in_flight:
            return Event.REQUEST
        return self._answered(req)

    def _on_delta_request(self, req: Request) -> Event:
        first = self.sent_nonce is None and not req.nonce and not self.subscribed
        if req.nonce and req.nonce != self.sent_nonce:
            return Event.STALE
        self.subscribed = (self.subscribed | set(req.subscribe)) - set(req.unsubscribe)
        for name in req.unsubscribe:
            self.missing_since.pop(name, None)
            self.no_worker.discard(name)
            self.held.pop(name, None)
        if first:
            self.held = dict(req.initial_versions)
            self.resend = True
            return Event.INITIAL
        if req.subscribe and (self.named or not self.rtype.wildcard):
            # A (re)subscribed name is sent whole even if unchanged: after an unsubscribe the
            # client no longer has it, whatever it ACKed before.
            self.force |= set(req.subscribe)
            # On demand, a name that exists changes the stream's set (a new version) and one
            # that does not after the grace: nothing to resend.
            self.resend = self.resend or not self.named
        if not req.nonce or not self.in_flight:
            return Event.REQUEST
        return self._answered(req)

    def _answered(self, req: Request) -> Event:
        """The ACK or NACK of the response in flight."""
        self.in_flight = False
        if req.error is not None:
            # The NACK is the client's newest word on this type: an earlier resubscription
            # is answered only by a different version, never by the rejected one again.
            self.nacked_version = self.sent_version
            self.last_error = req.error
            self.resend = False
            return Event.NACK
        self.acked_version = self.sent_version
        self.acked_set = self.sent_set
        self.nacked_version = None
        return Event.ACK

    @property
    def sent(self) -> dict[str, Encoded]:
        return self.sent_set.by_name

    @property
    def acked(self) -> dict[str, Encoded] | None:
        return None if self.acked_set is None else self.acked_set.by_name

    def delta_from_client(
        self, resources: ResourceSet
    ) -> tuple[tuple[Encoded, ...], tuple[str, ...]]:
        """Delta: what differs from what the client holds, and the names it must drop."""
        if self.acked_set is not None and not self.force:
            names = resources.names_changed_since(self.acked_set)
            if names is not None:  # O(changed): the encoder kept what moved since
                acked, now = self.acked_set.by_name, resources.by_name
                changed = tuple(
                    now[name]
                    for name in sorted(names)
                    if name in now and (name not in acked or acked[name].digest != now[name].digest)
                )
                return changed, tuple(sorted(n for n in names if n in acked and n not in now))
        if self.acked_set is not None:
            holds = {name: res.digest for name, res in self.acked_set.by_name.items()}
        else:
            holds = self.held
        changed = tuple(
            res for res in resources if res.name in self.force or holds.get(res.name) != res.digest
        )
        removed = tuple(sorted(holds.keys() - resources.by_name.keys()))
        return changed, removed

    def send(self, resources: ResourceSet, since: float) -> Response:
        changed, removed = self.delta_from_client(resources) if self.delta else ((), ())
        self.force = set()
        self.nonce_seq += 1
        self.sent_nonce = str(self.nonce_seq)
        self.in_flight = True
        self.sent_version = resources.version
        self.sent_set = resources
        self.sent_at = since
        self.resend = False
        url, nonce = self.rtype.type_url, self.sent_nonce
        return Response(url, resources.version, nonce, resources, since, changed, removed)

    def adopt(self, resources: ResourceSet) -> None:
        """The client already holds exactly these (a reconnect): record them as applied."""
        self.acked_version = self.sent_version = resources.version
        self.acked_set = self.sent_set = resources
        self.resend = False

    def refs(self) -> set[str]:
        """Clusters named by route configurations sent or applied on this stream."""
        out: set[str] = set()
        for held in (self.sent, self.acked or {}):
            for res in held.values():
                out |= res.refs
        return out


@dataclass(eq=False)
class Stream:
    id: int
    service: Service
    peer: str = ""
    opened: float = 0.0  # monotonic
    opened_wall: float = 0.0  # epoch seconds, for operators
    node: NodeKey | None = None
    states: dict[str, TypeState] = field(default_factory=dict)
    on_demand: bool = False  # rule 8; fixed by the node's first request

    @property
    def cluster_type(self) -> str:
        return FLAVOURS[self.service.api].cluster_type

    @property
    def route_type(self) -> str:
        return FLAVOURS[self.service.api].route_type


class XdsCore:
    """Every open stream, grouped by node, and the current snapshot.

    Each call returns the ids of the streams that must be polled again; `poll` returns what a
    stream sends now and when to poll it again if it is waiting for time to pass.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        cds_grace: float = CDS_GRACE_S,
        on_demand_grace: float = ON_DEMAND_GRACE_S,
    ) -> None:
        self.snapshot = snapshot
        self.cds_grace = cds_grace
        self.on_demand_grace = on_demand_grace
        self.streams: dict[int, Stream] = {}
        self._nodes: dict[NodeKey, list[Stream]] = {}  # oldest first

    # --- inputs --------------------------------------------------------------------------
    def set_snapshot(self, snapshot: Snapshot) -> set[int]:
        self.snapshot = snapshot
        return set(self.streams)

    def open(self, stream: Stream) -> None:
        self.streams[stream.id] = stream

    def close(self, stream_id: int) -> set[int]:
        stream = self.streams.pop(stream_id, None)
        if stream is None or stream.node is None:
            return set()
        peers = self._nodes.get(stream.node, [])
        if stream in peers:
            peers.remove(stream)
        if not peers:
            self._nodes.pop(stream.node, None)
        return {s.id for s in peers}

    def on_request(self, stream_id: int, req: Request) -> tuple[Event, set[int]]:
        stream = self.streams[stream_id]
        if stream.node is None and req.node is not None:
            stream.node = req.node
            self._nodes.setdefault(req.node, []).append(stream)
            stream.on_demand = req.on_demand and stream.service.delta and stream.service.api == "v3"
        rtype = TYPES.get(req.type_url)
        if rtype is None or not stream.service.carries(rtype):
            return Event.UNSUPPORTED, set()
        ts = stream.states.get(rtype.type_url)
        if ts is None:
            ts = stream.states[rtype.type_url] = TypeState(rtype, stream.service.delta)
            ts.named = stream.on_demand and rtype.kind == CDS
        event = ts.on_request(req)
        if event is Event.STALE:
            return event, set()
        # An ACK, NACK or new subscription can change what the node's other streams may get.
        return event, {stream.id, *(s.id for s in self._node_streams(stream))}

    # --- decisions -----------------------------------------------------------------------
    def poll(self, stream_id: int, now: float) -> tuple[list[Response], float | None]:
        stream = self.streams[stream_id]
        out: list[Response] = []
        recheck: float | None = None
        # CDS before RDS on ADS: a new cluster must be known before a route uses it.
        for ts in sorted(stream.states.values(), key=lambda t: t.rtype.kind != CDS):
            if ts.in_flight:
                continue
            desired, wait_until = self._desired(stream, ts, now)
            if wait_until is not None:
                recheck = wait_until if recheck is None else min(recheck, wait_until)
            if desired is None or not self._due(ts, desired):
                continue
            since = now if ts.resend else self.snapshot.created
            out.append(ts.send(desired, since))
        return out, recheck

    @staticmethod
    def _due(ts: TypeState, desired: ResourceSet) -> bool:
        """Whether `desired` must go out on this type now."""
        if ts.client_version:
            held, ts.client_version = ts.client_version, ""
            if held == desired.version:
                ts.adopt(desired)
                return False
        if ts.delta and ts.acked_set is None and ts.held:
            if ts.delta_from_client(desired) == ((), ()):
                ts.adopt(desired)  # a reconnect that holds exactly this already
                return False
        if not ts.resend and desired.version in (ts.sent_version, ts.nacked_version):
            return False
        # An empty named-resource response would tell the client nothing.
        return ts.rtype.wildcard or len(desired) > 0

    def _desired(
        self, stream: Stream, ts: TypeState, now: float
    ) -> tuple[ResourceSet | None, float | None]:
        """What this stream should hold for this type now: (resources, None), or
        (None, time to look again) while ordering holds it back (None: on an event)."""
        url = ts.rtype.type_url
        if ts.rtype.kind == CDS:
            current = self.snapshot.cluster_set(url, stream.on_demand)
            wake = None
            if ts.named:
                current, wake = self._with_named(current, ts, now)
            kept = {}
            for name in self._route_refs(stream) - current.by_name.keys():
                old = ts.sent.get(name) or (ts.acked or {}).get(name)
                if old is not None:
                    kept[name] = old  # still named by a route Envoy has or is applying
            # The shared set of the snapshot, unless removals still wait for their routes.
            return (ResourceSet({**current.by_name, **kept}) if kept else current), wake
        view = self._cds_view(stream)
        if view is None:
            if now < stream.opened + self.cds_grace:
                return None, stream.opened + self.cds_grace
            have = None  # the node takes its clusters from elsewhere: send every route
        elif view.acked is None:
            return None, None  # the view's first CDS ACK wakes this stream
        elif view.in_flight:
            # A CDS response on its way may remove clusters: route only to those in both.
            have = frozenset(view.acked.keys() & view.sent.keys())
        else:
            have = frozenset(view.acked)
        config = self.snapshot.route_config(url, have, stream.on_demand)
        if config is None:
            return None, None
        if config.name not in ts.subscribed:
            return EMPTY, None
        return self.snapshot.route_set(config), None

    def _with_named(
        self, base: ResourceSet, ts: TypeState, now: float
    ) -> tuple[ResourceSet, float | None]:
        """An on-demand stream's clusters (rule 8): what it gets unasked, those it asked for,
        and an empty cluster for each asked name without a worker once its grace is over;
        and when the next grace ends."""
        every = self.snapshot.clusters(ts.rtype.type_url)
        named: dict[str, Encoded] = {}
        wake: float | None = None
        for name in ts.subscribed:
            if name in base.by_name or name == "*":
                continue
            found = every.get(name)
            if found is not None:
                ts.missing_since.pop(name, None)
                ts.no_worker.discard(name)
                named[name] = found
                continue
            since = ts.missing_since.setdefault(name, now)
            # Held: sent, applied, or stated on a reconnect (initial_resource_versions).
            held = name in ts.sent or name in (ts.acked or {}) or name in ts.held
            if held or now >= since + self.on_demand_grace:
                if held or name in ts.no_worker or len(ts.no_worker) < MAX_NO_WORKER_CLUSTERS:
                    ts.no_worker.add(name)
                    named[name] = no_worker_cluster(name)
            else:
                end = since + self.on_demand_grace
                wake = end if wake is None else min(wake, end)
        if not named:
            return base, wake  # the shared set (its version and body are computed once)
        return ResourceSet({**base.by_name, **named}), wake

    # --- node structure ------------------------------------------------------------------
    def _node_streams(self, stream: Stream) -> list[Stream]:
        return self._nodes.get(stream.node, []) if stream.node is not None else []

    def _cds_stream(self, stream: Stream) -> Stream | None:
        """Where this stream's Envoy takes its clusters from (rule 5)."""
        url = stream.cluster_type
        if url in stream.states:
            return stream
        candidates = [
            s for s in self._node_streams(stream) if url in s.states and s.peer == stream.peer
        ]
        return candidates[-1] if candidates else None

    def _cds_view(self, stream: Stream) -> TypeState | None:
        source = self._cds_stream(stream)
        return None if source is None else source.states[stream.cluster_type]

    def _route_refs(self, cds_stream: Stream) -> set[str]:
        """Clusters named by routes sent to or applied by streams whose CDS view this is."""
        refs: set[str] = set()
        for s in self._node_streams(cds_stream) or [cds_stream]:
            rts = s.states.get(s.route_type)
            if rts is not None and self._cds_stream(s) is cds_stream:
                refs |= rts.refs()
        return refs

    # --- what operators and the API ask --------------------------------------------------
    def newest_streams(self) -> Iterator[tuple[NodeKey, Stream | None, Stream | None]]:
        """Per node: its newest stream carrying clusters and its newest carrying routes."""
        for key, streams in self._nodes.items():
            cds = [s for s in streams if s.cluster_type in s.states]
            rds = [s for s in streams if s.route_type in s.states]
            yield key, (cds[-1] if cds else None), (rds[-1] if rds else None)

    def pending_nodes(self, worker_id: str) -> list[str]:
        """Node ids whose newest streams have not applied this worker's current cluster and
        route; every node while the worker is not routable at all (an unresolved name)."""
        routable = self.snapshot.is_routable(worker_id)
        name = cluster_name(worker_id)
        pending = []
        for (node_id, _group), cds, rds in self.newest_streams():
            ok = routable
            if ok and cds is not None:
                ts = cds.states[cds.cluster_type]
                current = self.snapshot.clusters(cds.cluster_type).get(name)
                held = (ts.acked or {}).get(name)
                if ts.named and not self._explicit(cds, worker_id) and name not in ts.subscribed:
                    ok = current is not None  # the node fetches it when a request names it
                else:
                    ok = current is not None and held is not None and held.digest == current.digest
            if (
                ok
                and rds is not None
                and not (rds.on_demand and not self._explicit(rds, worker_id))
            ):
                ok = self._route_applied(rds, worker_id)
            if not ok:
                pending.append(node_id)
        return sorted(set(pending))

    def _explicit(self, stream: Stream, worker_id: str) -> bool:
        """An on-demand node has routes of its own for this worker (on_demand.is_explicit)."""
        return self.snapshot.worker_route(stream.route_type, worker_id, True) is not None

    def _route_applied(self, rds: Stream, worker_id: str) -> bool:
        ts = rds.states[rds.route_type]
        part = self.snapshot.worker_route(rds.route_type, worker_id, rds.on_demand)
        return part is not None and any(
            res.members.get(part.cluster) == part.digest for res in (ts.acked or {}).values()
        )
