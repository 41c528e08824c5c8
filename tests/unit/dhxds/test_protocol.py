"""The protocol core, case by case: each reported defect replayed at the protocol level
(the same cases run through real Envoy in tests/integration/dhxds/test_dhxds_churn.py)."""

from __future__ import annotations

import pytest
from dhxds.model import Worker
from dhxds.protocol import Event, Request
from protocol_model import EnvoyModel, Harness, registry_state


def worker(worker_id: str, host: str = "127.0.0.1", port: int = 9000) -> Worker:
    return Worker(id=worker_id, host=host, port=port, envoy_prefix=f"/worker/{worker_id}")


class World:
    def __init__(self, *ids: str) -> None:
        self.workers = {i: worker(i) for i in ids}
        self.h = Harness(registry_state(self.workers, {}))

    def add(self, worker_id: str) -> None:
        self.workers[worker_id] = worker(worker_id)
        self.publish()

    def remove(self, worker_id: str) -> None:
        del self.workers[worker_id]
        self.publish()

    def publish(self) -> None:
        self.h.set_state(registry_state(self.workers, {}))
        self.h.pump()

    def envoy(self, mode: str = "ads", node: str = "envoy-1", api: str = "v3") -> EnvoyModel:
        envoy = EnvoyModel(self.h, node, api, mode)
        self.h.pump()
        return envoy

    def settle(self, envoy: EnvoyModel) -> None:
        for _round in range(20):
            self.h.pump()
            moved = False
            for sm in envoy.streams:
                while envoy.receive(sm, "ack") is not None:
                    moved = True
            self.h.pump()
            if not moved:
                return


def test_burst_routes_follow_each_cds_ack_instead_of_starving():
    """Defect 1, replayed on the model clock: 60 registrations 15 ms apart to an ADS client
    that ACKs each response 40 ms after receiving it. Each ACK lets the newest state out and
    routes follow the clusters ACKed so far, so every route arrives within a few round
    trips of its registration (it starved until the burst ended before)."""
    world = World()
    envoy = world.envoy("ads")
    [sm] = envoy.streams
    acks: list[tuple[float, Request]] = []
    registered: dict[str, float] = {}
    routed: dict[str, float] = {}
    for step in range(400):  # 5 ms steps: 2 s of model time
        world.h.tick(0.005)
        now = world.h.now
        if step % 3 == 0 and len(registered) < 60:
            name = f"w{len(registered)}"
            registered[f"worker_{name}"] = now
            world.add(name)
        for due, ack in [a for a in acks if a[0] <= now + 1e-9]:
            acks.remove((due, ack))
            assert world.h.request(sm.stream, ack) is Event.ACK
        world.h.pump()
        assert len(envoy.inbox(sm)) <= 2  # one response per type in flight, at most
        while envoy.inbox(sm):
            got = envoy.inbox(sm).pop(0)
            envoy._apply(got, sm)
            names = envoy._names(got.type_url)
            ack = Request(got.type_url, got.version, got.nonce, names, node=envoy.node)
            acks.append((now + 0.040, ack))
        for cluster in envoy.routes or ():
            routed.setdefault(cluster, now)
    delays = [routed[c] - t for c, t in registered.items()]
    assert len(delays) == 60
    assert max(delays) <= 0.5, sorted(delays)[-5:]


@pytest.mark.parametrize("mode", ["ads", "separate", "delta_ads"])
def test_half_open_old_streams_do_not_hold_back_the_new_ones(mode):
    """Defect 2: the old streams of node N are open and silent; the new streams of N ACK the
    new worker's cluster and get its route at once."""
    world = World("w1")
    old = world.envoy(mode)
    world.settle(old)
    old.die(half_open=True)
    new = world.envoy(mode)
    world.settle(new)
    world.add("w2")
    world.settle(new)
    assert "worker_w2" in new.routes
    assert world.h.core.pending_nodes("w2") == []  # the newest streams are the node's


def test_rds_only_subscriber_gets_routes_after_the_grace():
    """Defect 3: a node with no CDS subscription still gets the route configuration."""
    world = World("w1")
    envoy = world.envoy("rds_only")
    [sm] = envoy.streams
    assert envoy.inbox(sm) == []  # a CDS stream of the same connection may still come
    world.h.tick(2.1)
    world.h.pump()
    world.settle(envoy)
    assert envoy.routes == {"web_api_service", "worker_w1"}


def test_rds_then_cds_on_one_connection_waits_for_the_clusters():
    """After a control-plane restart Envoy may reopen RDS before CDS on its connection."""
    world = World("w1")
    envoy = world.envoy("separate")
    cds, rds = envoy.streams
    assert envoy.inbox(rds) == []
    envoy.receive(cds, "ack")
    world.h.pump()
    assert envoy.receive(rds, "ack") is not None
    assert envoy.routes == {"web_api_service", "worker_w1"}


def test_no_route_to_a_cluster_a_cds_response_in_flight_removes():
    """Found by the state machine: a route was sent to a cluster still ACKed but about to be
    removed by the CDS response already on its way."""
    world = World("w1")
    envoy = world.envoy("separate")
    cds, rds = envoy.streams
    envoy.receive(cds, "late")  # {web, w1} applied, ACK not sent yet
    world.remove("w1")
    envoy.send_late_acks(cds)
    world.h.pump()  # CDS {web} goes out, routes {web}
    world.add("w1")
    envoy.receive(rds, "ack")
    world.h.pump()
    envoy.receive(rds, "ack")  # must not name w1 while {web} is in flight
    world.remove("w1")
    envoy.receive(cds, "ack")  # would remove w1 under a route naming it
    world.settle(envoy)
    assert envoy.routes == {"web_api_service"}


def test_nack_parks_the_version_and_a_new_change_goes_out():
    world = World("w1")
    envoy = world.envoy("ads")
    [sm] = envoy.streams
    envoy.receive(sm, "nack")  # the first CDS
    world.h.pump()
    assert envoy.inbox(sm) == []  # not sent again
    world.add("w2")
    got = envoy.receive(sm, "ack")
    assert got is not None and {r.name for r in got.resources} >= {"worker_w2"}


def test_unresolved_worker_is_pending_everywhere_and_resolution_makes_it_routable():
    workers = {"w1": worker("w1"), "dns": worker("dns", host="dh-host.example")}
    h = Harness(registry_state(workers, {}))
    envoy = EnvoyModel(h, "envoy-1", "v3", "ads")
    h.pump()
    for _round in range(4):
        envoy.receive(envoy.streams[0], "ack")
        h.pump()
    assert envoy.routes == {"web_api_service", "worker_w1"}
    assert h.core.pending_nodes("dns") == ["envoy-1"]
    h.set_state(registry_state(workers, {"dh-host.example": ("10.1.1.1",)}))
    h.pump()
    for _round in range(4):
        envoy.receive(envoy.streams[0], "ack")
        h.pump()
    assert "worker_dns" in envoy.routes
    assert h.core.pending_nodes("dns") == []


def delta_ack(world, envoy, sm):
    """Receive, apply and ACK one delta response; return it."""
    world.h.pump()
    return envoy.receive(sm, "ack")


def test_delta_sends_only_what_changed_and_the_names_removed():
    world = World("w1", "w2")
    envoy = world.envoy("delta_ads")
    [sm] = envoy.streams
    first = delta_ack(world, envoy, sm)
    assert {r.name for r in first.changed} == {"web_api_service", "worker_w1", "worker_w2"}
    world.settle(envoy)
    world.add("w3")
    cds = delta_ack(world, envoy, sm)
    assert [r.name for r in cds.changed] == ["worker_w3"] and cds.removed == ()
    world.settle(envoy)
    world.workers["w3"] = worker("w3", port=9999)  # replaced: the one cluster again
    world.publish()
    cds = delta_ack(world, envoy, sm)
    assert [r.name for r in cds.changed] == ["worker_w3"]
    world.settle(envoy)
    world.remove("w2")  # routes first (the whole configuration), then the cluster
    routes = delta_ack(world, envoy, sm)
    assert routes.type_url == envoy.rds_type and "worker_w2" not in routes.changed[0].refs
    cds = delta_ack(world, envoy, sm)
    assert cds.changed == () and cds.removed == ("worker_w2",)


def test_delta_reconnect_with_initial_versions_sends_only_the_difference():
    world = World("w1", "w2")
    envoy = world.envoy("delta_ads")
    world.settle(envoy)
    held = envoy.held[envoy.cds_type]
    world.add("w3")
    # The control plane restarts: a new stream states what the Envoy holds.
    h2 = Harness(registry_state(world.workers, {}))
    stream = envoy.streams[0].stream
    from dhxds.protocol import Stream

    again = Stream(99, stream.service, "peer-2", 0.0, 0.0)
    h2.open(again)
    initial = tuple((name, res.digest) for name, res in held.items())
    req = Request(envoy.cds_type, node=envoy.node, subscribe=("*",), initial_versions=initial)
    assert h2.request(again, req) is Event.INITIAL
    h2.pump()
    [resp] = h2.outboxes[again.id]
    assert [r.name for r in resp.changed] == ["worker_w3"] and resp.removed == ()


def test_delta_reconnect_that_holds_everything_gets_nothing():
    world = World("w1")
    envoy = world.envoy("delta_ads")
    world.settle(envoy)
    held = envoy.held[envoy.cds_type]
    from dhxds.protocol import Stream

    again = Stream(98, envoy.streams[0].stream.service, "peer-3", 0.0, 0.0)
    world.h.open(again)
    initial = tuple((name, res.digest) for name, res in held.items())
    req = Request(
        envoy.cds_type, node=("other", "front"), subscribe=("*",), initial_versions=initial
    )
    world.h.request(again, req)
    world.h.pump()
    assert world.h.outboxes[again.id] == []


def test_delta_nack_keeps_the_client_state_and_the_next_change_is_diffed_against_it():
    world = World("w1")
    envoy = world.envoy("delta_ads")
    world.settle(envoy)
    [sm] = envoy.streams
    world.add("w2")
    envoy.receive(sm, "nack")  # rejects the delta that adds w2
    world.h.pump()
    assert envoy.inbox(sm) == []
    world.add("w3")
    resp = envoy.receive(sm, "ack")
    assert {r.name for r in resp.changed} == {"worker_w2", "worker_w3"}
