"""The protocol core as a state machine: random interleavings of registry changes, name
resolution, ACKs, late ACKs, NACKs, stale nonces, subscription changes, stream opens, closes
and reconnects (half-open old streams included), over ADS, separate CDS/RDS and RDS-only
streams, v2 and v3.

Checked on every step (protocol_model.EnvoyModel): a route never names a cluster its Envoy
lacks; a cluster never leaves while a route names it; a NACKed version is never sent again.
Checked when everything settles: every live Envoy holds exactly the registry, every
registered worker is routable on every node, and an independent daemon fed the same changes
computes the same versions. Seeded through hypothesis' database-free derandomized profile in
CI (see conftest.py), so a failure reproduces.
"""

from __future__ import annotations

from dhxds.model import WEB_API_CLUSTER, Worker, cluster_name
from dhxds.on_demand import no_worker_cluster
from dhxds.protocol import Event, Request
from dhxds.snapshot import Snapshot, new_encoders, version_of
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    precondition,
    rule,
)
from protocol_model import EnvoyModel, Harness, registry_state

WORKER_IDS = ("w1", "w2", "w10", "dns")
NAMED_HOST = "dh-host.example"
NODE_IDS = ("envoy-a", "envoy-b", "envoy-c")
GRACE = 2.0


class ProtocolMachine(RuleBasedStateMachine):
    envoys = Bundle("envoys")

    @initialize()
    def start(self):
        self.workers: dict[str, Worker] = {}
        self.resolved: dict[str, tuple[str, ...]] = {}
        self.h = Harness(self._state(), cds_grace=GRACE)
        self.all_envoys: list[EnvoyModel] = []
        self.nodes_in_use: dict[str, EnvoyModel] = {}

    def _state(self):
        return registry_state(self.workers, self.resolved)

    def _publish(self):
        self.h.set_state(self._state())
        self.h.pump()

    # --- the registry --------------------------------------------------------------------
    @rule(
        worker_id=st.sampled_from(WORKER_IDS),
        port=st.integers(9000, 9003),
        strip=st.booleans(),
    )
    def register(self, worker_id, port, strip):
        host = NAMED_HOST if worker_id == "dns" else "127.0.0.1"
        # strip_prefix false: routes of its own in the on-demand layout (on_demand.is_explicit)
        self.workers[worker_id] = Worker(
            id=worker_id,
            host=host,
            port=port,
            envoy_prefix=f"/worker/{worker_id}",
            strip_prefix=strip,
        )
        self._publish()

    @rule(worker_id=st.sampled_from(WORKER_IDS))
    def remove(self, worker_id):
        self.workers.pop(worker_id, None)
        self._publish()

    @rule(resolves=st.booleans(), second=st.booleans())
    def dns_answer(self, resolves, second):
        if resolves:
            self.resolved[NAMED_HOST] = ("10.1.1.1", "10.1.1.2") if second else ("10.1.1.1",)
        else:
            self.resolved.pop(NAMED_HOST, None)
        self._publish()

    # --- Envoys --------------------------------------------------------------------------
    @precondition(lambda self: len(self.nodes_in_use) < len(NODE_IDS))
    @rule(
        target=envoys,
        api=st.sampled_from(["v3", "v2"]),
        mode=st.sampled_from(
            [
                "ads",
                "separate",
                "rds_only",
                "delta_ads",
                "delta_separate",
                "delta_rds_only",
                "ondemand_ads",
            ]
        ),
        data=st.data(),
    )
    def connect(self, api, mode, data):
        if mode.startswith(("delta_", "ondemand_")):
            api = "v3"  # incremental xDS is served for v3
        free = [n for n in NODE_IDS if n not in self.nodes_in_use]
        node_id = data.draw(st.sampled_from(free))
        return self._connect(node_id, api, mode)

    def _connect(self, node_id, api, mode):
        envoy = EnvoyModel(self.h, node_id, api, mode)
        self.all_envoys.append(envoy)
        self.nodes_in_use[node_id] = envoy
        self.h.pump()
        return envoy

    @rule(target=envoys, old=consumes(envoys), half_open=st.booleans())
    def restart(self, old, half_open):
        """Envoy restarts; its old streams close, or stay open and silent (dead peer)."""
        if not old.alive:
            return old
        old.die(half_open)
        del self.nodes_in_use[old.node[0]]
        self.h.pump()
        return self._connect(old.node[0], old.api, old.mode)

    @rule(envoy=consumes(envoys))
    def disconnect(self, envoy):
        if envoy.alive:
            envoy.die(half_open=False)
            del self.nodes_in_use[envoy.node[0]]
            self.h.pump()

    @rule(envoy=envoys, index=st.integers(0, 1), how=st.sampled_from(["ack", "late", "nack"]))
    def receive(self, envoy, index, how):
        if envoy.alive:
            sm = envoy.streams[index % len(envoy.streams)]
            envoy.receive(sm, how)
            self.h.pump()

    @rule(envoy=envoys, index=st.integers(0, 1))
    def late_acks_arrive(self, envoy, index):
        if envoy.alive:
            envoy.send_late_acks(envoy.streams[index % len(envoy.streams)])
            self.h.pump()

    @rule(envoy=envoys, index=st.integers(0, 1))
    def stale_request(self, envoy, index):
        """A request naming an older response than the last one sent is ignored."""
        if not envoy.alive:
            return
        sm = envoy.streams[index % len(envoy.streams)]
        for url, nonces in sm.received.items():
            ts = sm.stream.states[url]
            older = [n for n in nonces if n != ts.sent_nonce]
            if older:
                req = Request(url, nonce=older[0], names=envoy._names(url), node=envoy.node)
                assert self.h.request(sm.stream, req) is Event.STALE
        self.h.pump()

    @rule(envoy=envoys, subscribe=st.booleans())
    def route_subscription_changes(self, envoy, subscribe):
        """Envoy drops or re-adds its route configuration name (an RDS names change)."""
        if not envoy.alive:
            return
        sm = next(s for s in envoy.streams if envoy.rds_type in s.types)
        envoy.send_late_acks(sm)  # Envoy's requests on a stream arrive in order
        last = (sm.received.get(envoy.rds_type) or [""])[-1]  # the last nonce it saw
        if subscribe and not envoy.delta:
            names = ("rds_config",)
            self.h.request(
                sm.stream, Request(envoy.rds_type, nonce=last, names=names, node=envoy.node)
            )
        elif not subscribe:
            # Envoy forgets the configuration; the next answer must bring it back (even a
            # version it rejected before: a new subscription is answered once).
            envoy.resubscribe_routes(sm, last)
        self.h.pump()

    @rule(envoy=envoys, worker_id=st.sampled_from([*WORKER_IDS, "never"]))
    def request_names_a_worker(self, envoy, worker_id):
        """On demand: a request for /worker/<id> makes Envoy ask for the worker's cluster,
        registered or not."""
        if envoy.alive and envoy.on_demand:
            envoy.ask(cluster_name(worker_id))
            self.h.pump()

    @rule(seconds=st.sampled_from([0.1, 1.0, GRACE + 0.1]))
    def time_passes(self, seconds):
        self.h.tick(seconds)
        self.h.pump()

    # --- properties ----------------------------------------------------------------------
    def replicas_agree_on_versions(self):
        """Another daemon fed the same changes computes the same versions (content hashes)."""
        mine = self.h.core.snapshot
        theirs = Snapshot(mine.state, new_encoders())
        for envoy in self.all_envoys[-2:]:
            for url in (envoy.cds_type, envoy.rds_type):
                assert version_of(mine.resources(url).values()) == version_of(
                    theirs.resources(url).values()
                )

    def settle(self):
        """Deliver and ACK everything, pass the grace, until nothing moves."""
        self.h.tick(GRACE + 0.1)
        self.h.pump()
        for _attempt in range(200):
            moved = False
            for envoy in self.all_envoys:
                if not envoy.alive:
                    continue
                for sm in envoy.streams:
                    if sm.late_acks:
                        envoy.send_late_acks(sm)
                        moved = True
                    while envoy.receive(sm, "ack") is not None:
                        moved = True
            self.h.pump()
            if not moved:
                if not self.h.rechecks:
                    return
                self.h.tick(GRACE + 0.1)  # a grace started by the last answers
                self.h.pump()
        raise AssertionError("the exchange never settled: responses keep coming")

    @rule()
    def everything_settles(self):
        self.settle()
        self.replicas_agree_on_versions()
        state = self.h.core.snapshot.state
        routable = {
            w.id for w in state.workers if w.host != NAMED_HOST or NAMED_HOST in self.resolved
        }
        clusters = {WEB_API_CLUSTER, *(cluster_name(w) for w in routable)}
        # An Envoy whose last answer was a NACK keeps its last good state until a new
        # version exists: that is correct, and not convergence to check.
        stuck = {e.node[0] for e in self.all_envoys if e.alive and e.rejected_last()}
        explicit = {WEB_API_CLUSTER} | {
            cluster_name(w.id) for w in state.workers if w.id in routable and not w.strip_prefix
        }
        for envoy in self.all_envoys:
            if not envoy.alive or envoy.node[0] in stuck:
                continue
            if envoy.on_demand:
                # Unasked it holds only what its fixed routes cannot name; every name it
                # asked for stays, as the worker's cluster or, without one, an empty one.
                held = envoy.clusters or {}
                assert set(held) == explicit | envoy.asked, (held, explicit, envoy.asked)
                for name in envoy.asked - clusters:
                    assert held[name] == no_worker_cluster(name).digest, name
                assert envoy.routes == explicit, (envoy.routes, explicit)
                continue
            if envoy.subscribes_clusters:
                assert set(envoy.clusters or ()) == clusters, (envoy.mode, envoy.clusters)
            assert envoy.routes == clusters, (envoy.mode, envoy.routes, clusters)
        dead = {e.node[0] for e in self.all_envoys if not e.alive}
        for worker_id in routable:
            pending = set(self.h.core.pending_nodes(worker_id)) - stuck
            # A node whose newest streams are a dead Envoy's (half-open) stays pending.
            assert pending <= dead, (worker_id, pending)

    def teardown(self):
        if hasattr(self, "h"):
            self.everything_settles()


ProtocolMachine.TestCase.settings = settings(
    max_examples=2500, stateful_step_count=35, deadline=None
)
TestProtocol = ProtocolMachine.TestCase
