"""On-demand clusters (ODCDS, protocol rule 8) case by case at the protocol level; the same
cases run through real Envoy in tests/integration/dhxds/test_dhxds_on_demand.py."""

from __future__ import annotations

from dhxds.model import Worker
from dhxds.on_demand import MAX_NO_WORKER_CLUSTERS, no_worker_cluster
from dhxds.protocol import ON_DEMAND_GRACE_S, Request, Stream
from protocol_model import next_stream_id
from test_protocol import World, delta_ack, worker


def on_demand_envoy(world: World):
    envoy = world.envoy("ondemand_ads")
    world.settle(envoy)
    return envoy, envoy.streams[0]


def test_an_on_demand_envoy_gets_web_api_service_and_fixed_routes_unasked():
    world = World("w1", "w2")
    envoy, _sm = on_demand_envoy(world)
    assert set(envoy.clusters) == {"web_api_service"}
    assert envoy.routes == {"web_api_service"}  # the fixed routes name no worker


def test_a_registration_sends_nothing_to_an_envoy_that_did_not_ask():
    world = World("w1")
    envoy, sm = on_demand_envoy(world)
    world.add("w2")
    world.h.pump()
    assert envoy.inbox(sm) == []
    assert world.h.core.pending_nodes("w2") == []  # routable: it is fetched when asked


def test_a_requested_worker_comes_alone_and_its_changes_follow():
    world = World("w1", "w2")
    envoy, sm = on_demand_envoy(world)
    envoy.ask("worker_w1")
    resp = delta_ack(world, envoy, sm)
    assert [r.name for r in resp.changed] == ["worker_w1"] and resp.removed == ()
    world.workers["w1"] = worker("w1", port=9999)  # replaced: pushed, it is subscribed
    world.publish()
    resp = delta_ack(world, envoy, sm)
    assert [r.name for r in resp.changed] == ["worker_w1"]
    # Removed: Envoy would never ask for the name again, so it gets the empty cluster at
    # once (requests fail fast) instead of a removal.
    world.remove("w1")
    resp = delta_ack(world, envoy, sm)
    assert list(resp.changed) == [no_worker_cluster("worker_w1")] and resp.removed == ()
    world.add("w1")
    resp = delta_ack(world, envoy, sm)
    assert [r.name for r in resp.changed] == ["worker_w1"]
    assert resp.changed[0].digest != no_worker_cluster("worker_w1").digest


def test_an_unknown_name_waits_for_the_grace_then_gets_the_empty_cluster():
    world = World("w1")
    envoy, sm = on_demand_envoy(world)
    envoy.ask("worker_w9")
    world.h.pump()
    assert envoy.inbox(sm) == []  # a registration racing the request may still come
    world.h.tick(ON_DEMAND_GRACE_S + 0.1)
    resp = delta_ack(world, envoy, sm)
    assert list(resp.changed) == [no_worker_cluster("worker_w9")] and resp.removed == ()
    world.h.tick(ON_DEMAND_GRACE_S + 0.1)
    world.h.pump()
    assert envoy.inbox(sm) == []
    world.add("w9")  # still subscribed: the registration reaches it
    resp = delta_ack(world, envoy, sm)
    assert [r.name for r in resp.changed] == ["worker_w9"]
    assert world.h.core.pending_nodes("w9") == []


def test_a_registration_within_the_grace_answers_the_waiting_request():
    world = World()
    envoy, sm = on_demand_envoy(world)
    envoy.ask("worker_w9")
    world.h.tick(ON_DEMAND_GRACE_S / 2)
    world.add("w9")
    resp = delta_ack(world, envoy, sm)
    assert [r.name for r in resp.changed] == ["worker_w9"] and resp.removed == ()


def test_an_explicit_worker_comes_unasked_with_its_routes_after_its_cluster():
    world = World("w1")
    envoy, sm = on_demand_envoy(world)
    world.workers["raw"] = Worker(
        id="raw", host="127.0.0.1", port=9001, envoy_prefix="/worker/raw", strip_prefix=False
    )
    world.publish()
    cds = delta_ack(world, envoy, sm)
    assert [r.name for r in cds.changed] == ["worker_raw"]
    routes = delta_ack(world, envoy, sm)
    assert "worker_raw" in routes.changed[0].refs
    assert world.h.core.pending_nodes("raw") == []


def reconnect(world: World, envoy, sm, asked: str) -> list:
    """The Envoy's CDS stream again, on a new connection (a restarted dhxds): it states what
    it holds and re-subscribes what it asked for; what the new stream is sent."""
    held = envoy.held[envoy.cds_type]
    again = Stream(next_stream_id(), sm.stream.service, "peer-again", world.h.now, 0.0)
    world.h.open(again)
    req = Request(
        envoy.cds_type,
        node=("again", "front"),
        subscribe=("*", asked),
        initial_versions=tuple((name, res.digest) for name, res in held.items()),
        on_demand=True,
    )
    world.h.request(again, req)
    world.h.pump()
    return world.h.outboxes[again.id]


def test_a_reconnect_that_states_its_on_demand_clusters_gets_nothing():
    world = World("w1")
    envoy, sm = on_demand_envoy(world)
    envoy.ask("worker_w1")
    world.settle(envoy)
    assert reconnect(world, envoy, sm, "worker_w1") == []


def test_a_reconnect_keeps_the_empty_clusters_it_holds():
    world = World()
    envoy, sm = on_demand_envoy(world)
    envoy.ask("worker_gone")
    world.h.pump()
    world.h.tick(ON_DEMAND_GRACE_S + 0.1)
    world.settle(envoy)
    held = envoy.held[envoy.cds_type]
    assert held["worker_gone"].digest == no_worker_cluster("worker_gone").digest
    assert reconnect(world, envoy, sm, "worker_gone") == []  # no removal while a grace runs


def test_empty_clusters_for_names_that_never_had_a_worker_are_capped_per_stream():
    """Scanners asking for ever new ids get at most MAX_NO_WORKER_CLUSTERS empty clusters on
    one stream; a name with a worker is still answered beyond that."""
    world = World("w1")
    envoy, _sm = on_demand_envoy(world)
    for i in range(MAX_NO_WORKER_CLUSTERS + 5):
        envoy.ask(f"worker_junk{i}")
    envoy.ask("worker_w1")
    world.h.pump()
    world.h.tick(ON_DEMAND_GRACE_S + 0.1)
    world.settle(envoy)
    held = set(envoy.held[envoy.cds_type])
    assert "worker_w1" in held
    assert len({name for name in held if name.startswith("worker_junk")}) == MAX_NO_WORKER_CLUSTERS
