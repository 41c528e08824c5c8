"""A model Envoy for driving the protocol core (dhxds.protocol) without gRPC.

An `EnvoyModel` is one Envoy process: one connection (peer) carrying an ADS stream, separate
CDS and RDS streams, or an RDS stream only. It applies what it receives the way Envoy does
(clusters on CDS, the route configuration on RDS) and checks, at the moment it applies a
response, the two ordering promises dhxds makes to a node that subscribes to clusters:
no route names a cluster it does not have, and no cluster disappears while a route names it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from dhxds.model import Upstream, Worker
from dhxds.protocol import Event, Request, Response, Stream, XdsCore
from dhxds.resources import RegistryState
from dhxds.snapshot import Snapshot, new_encoders
from dhxds.xds_types import FLAVOURS, SERVICES

ROUTE_NAME = "rds_config"
_stream_ids = itertools.count(1)


def next_stream_id() -> int:
    return next(_stream_ids)


_peers = itertools.count(1)


def service(api: str, kind: str, delta: bool = False):
    return next(s for s in SERVICES if (s.api, s.kind, s.delta) == (api, kind, delta))


def registry_state(workers: dict[str, Worker], resolved: dict[str, tuple[str, ...]]):
    ordered = tuple(workers[k] for k in sorted(workers))
    names = {w.host for w in ordered}
    addresses = tuple(sorted((n, a) for n, a in resolved.items() if n in names))
    return RegistryState(ordered, Upstream("127.0.0.1", 8123), ROUTE_NAME, addresses)


class Harness:
    """The core, its snapshots, a model clock, and which streams are due for a poll."""

    def __init__(self, state: RegistryState, cds_grace: float = 2.0) -> None:
        self.encoders = new_encoders()
        self.core = XdsCore(Snapshot(state, self.encoders), cds_grace)
        self.now = 0.0
        self.dirty: set[int] = set()
        self.rechecks: dict[int, float] = {}
        self.outboxes: dict[int, list[Response]] = {}
        self.sent_count = 0

    def set_state(self, state: RegistryState) -> None:
        if state != self.core.snapshot.state:
            self.dirty |= self.core.set_snapshot(Snapshot(state, self.encoders))

    def open(self, stream: Stream) -> None:
        self.core.open(stream)
        self.outboxes[stream.id] = []

    def request(self, stream: Stream, req: Request) -> Event:
        event, woken = self.core.on_request(stream.id, req)
        self.dirty |= woken
        return event

    def close(self, stream: Stream) -> None:
        self.dirty |= self.core.close(stream.id)
        self.dirty.discard(stream.id)
        self.rechecks.pop(stream.id, None)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for stream_id, when in list(self.rechecks.items()):
            if when <= self.now:
                del self.rechecks[stream_id]
                self.dirty.add(stream_id)

    def pump(self) -> None:
        """Poll exactly the streams the core asked to wake (as grpc_server does)."""
        while self.dirty:
            stream_id = self.dirty.pop()
            if stream_id not in self.core.streams:
                continue
            responses, recheck = self.core.poll(stream_id, self.now)
            if recheck is not None:
                self.rechecks[stream_id] = recheck
            self.outboxes[stream_id].extend(responses)
            self.sent_count += len(responses)


@dataclass
class StreamModel:
    stream: Stream
    types: tuple[str, ...]
    received: dict[str, list[str]] = field(default_factory=dict)  # type -> nonces seen
    nacked: dict[str, str] = field(default_factory=dict)  # type -> version NACKed last
    # delta: names the client dropped, and the last nonce sent before it did: responses up to
    # that nonce were computed while the server still counted those names as held.
    forgot: tuple[frozenset, int] = (frozenset(), 0)
    late_acks: list[Request] = field(default_factory=list)


class EnvoyModel:
    def __init__(self, harness: Harness, node_id: str, api: str, mode: str) -> None:
        self.h = harness
        self.node = (node_id, "front")
        self.api, self.mode = api, mode
        # ondemand_*: delta, and worker clusters only when asked for by name (ODCDS).
        self.on_demand = mode.startswith("ondemand_")
        self.delta = self.on_demand or mode.startswith("delta_")
        self.asked: set[str] = set()
        self.held: dict[str, dict] = {}  # delta: type URL -> name -> Encoded, as applied
        self.peer = f"ipv4:127.0.0.1:{next(_peers)}"
        self.alive = True
        self.clusters: dict[str, str] | None = None  # applied: name -> digest
        self.routes: frozenset[str] | None = None  # clusters named by the applied routes
        self.route_members: Mapping[str, str] = {}
        flavour = FLAVOURS[api]
        self.cds_type, self.rds_type = flavour.cluster_type, flavour.route_type
        layout = {
            "ads": [("ads", (self.cds_type, self.rds_type))],
            "separate": [("cds", (self.cds_type,)), ("rds", (self.rds_type,))],
            "rds_only": [("rds", (self.rds_type,))],
        }[self.layout]
        self.streams: list[StreamModel] = []
        for kind, types in layout:
            svc = service(api, kind, self.delta)
            stream = Stream(next(_stream_ids), svc, self.peer, harness.now, 0.0)
            harness.open(stream)
            self.streams.append(StreamModel(stream, types))
        for sm in self.streams:
            for url in sm.types:
                names = () if url == self.cds_type else (ROUTE_NAME,)
                if self.delta:
                    first = self._req(url, subscribe=names or ("*",))
                else:
                    first = self._req(url, names=names)
                assert harness.request(sm.stream, first) is Event.INITIAL

    @property
    def layout(self) -> str:
        return self.mode.removeprefix("delta_").removeprefix("ondemand_")

    @property
    def subscribes_clusters(self) -> bool:
        return self.layout != "rds_only"

    def _req(self, url: str, **kw) -> Request:
        if self.delta:
            kw.pop("names", None)
            kw.pop("version_info", None)
        return Request(type_url=url, node=self.node, on_demand=self.on_demand, **kw)

    def ask(self, cluster: str) -> None:
        """A request names a cluster this Envoy does not hold: the on_demand filter
        subscribes to it on the stream that carries clusters."""
        sm = next(s for s in self.streams if self.cds_type in s.types)
        self.asked.add(cluster)
        self.h.request(sm.stream, self._req(self.cds_type, subscribe=(cluster,)))

    def resubscribe_routes(self, sm: StreamModel, last_nonce: str) -> None:
        """Envoy drops its route configuration name and asks for it again."""
        url = self.rds_type
        if self.delta:
            self.h.request(sm.stream, self._req(url, unsubscribe=(ROUTE_NAME,)))
            self.held.get(url, {}).pop(ROUTE_NAME, None)
            sm.forgot = (frozenset([ROUTE_NAME]), int(sm.stream.states[url].sent_nonce or 0))
            self.h.request(sm.stream, self._req(url, subscribe=(ROUTE_NAME,)))
        else:
            self.h.request(sm.stream, self._req(url, nonce=last_nonce, names=()))
            self.h.request(sm.stream, self._req(url, nonce=last_nonce, names=(ROUTE_NAME,)))
        self.routes = None
        sm.nacked.pop(url, None)

    def inbox(self, sm: StreamModel) -> list[Response]:
        return self.h.outboxes[sm.stream.id]

    def receive(self, sm: StreamModel, how: str) -> Response | None:
        """Take the oldest response of a stream; apply and ACK it ('ack'), apply and ACK it
        later ('late'), or reject it ('nack')."""
        box = self.inbox(sm)
        if not box:
            return None
        resp = box.pop(0)
        url = resp.type_url
        assert resp.version != sm.nacked.get(url), "a NACKed version was sent again"
        sm.received.setdefault(url, []).append(resp.nonce)
        if how == "nack":
            sm.nacked[url] = resp.version
            req = self._req(url, nonce=resp.nonce, names=self._names(url), error="rejected")
            assert self.h.request(sm.stream, req) is Event.NACK
            return resp
        self._apply(resp, sm)
        sm.nacked.pop(url, None)  # a NACKed version may return after another was accepted
        ack = self._req(url, version_info=resp.version, nonce=resp.nonce, names=self._names(url))
        if how == "late":
            sm.late_acks.append(ack)
        else:
            assert self.h.request(sm.stream, ack) is Event.ACK
        return resp

    def send_late_acks(self, sm: StreamModel) -> None:
        while sm.late_acks:
            assert self.h.request(sm.stream, sm.late_acks.pop(0)) is Event.ACK

    def _names(self, url: str) -> tuple[str, ...]:
        return () if url == self.cds_type else (ROUTE_NAME,)

    def _apply(self, resp: Response, sm: StreamModel) -> None:
        if self.delta:
            held = self.held.setdefault(resp.type_url, {})
            for res in resp.changed:
                held[res.name] = res
            for name in resp.removed:
                held.pop(name, None)
            # What the client holds after a delta is what the server believes it holds
            # (but for names it dropped after the server computed this response).
            names, upto = sm.forgot
            skip = names if int(resp.nonce) <= upto else frozenset()
            assert {n: r.digest for n, r in held.items() if n not in skip} == {
                r.name: r.digest for r in resp.resources if r.name not in skip
            }, "client and server disagree on what the client holds"
        if resp.type_url == self.cds_type:
            new = {r.name: r.digest for r in resp.resources}
            if self.routes is not None and self.subscribes_clusters:
                gone = self.routes - new.keys()
                assert not gone, f"clusters {gone} removed while routes name them"
            self.clusters = new
        else:
            [config] = resp.resources
            if self.subscribes_clusters:
                have = set(self.clusters or ())
                missing = config.refs - have
                assert not missing, f"route names clusters {missing} this Envoy does not have"
            self.routes, self.route_members = config.refs, config.members

    def rejected_last(self) -> bool:
        """The server's view: some type's last answer from this Envoy was a NACK."""
        return any(
            ts.nacked_version is not None for sm in self.streams for ts in sm.stream.states.values()
        )

    def die(self, half_open: bool) -> None:
        """The process goes away; its streams close, or stay open and silent forever."""
        self.alive = False
        if not half_open:
            for sm in self.streams:
                self.h.close(sm.stream)
