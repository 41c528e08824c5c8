"""Make-before-break per node: clusters before the routes that use them, routes before the
removal of clusters; across separate CDS/RDS streams and on ADS."""

from __future__ import annotations

import asyncio

from dhxds.cache import Session, XdsCache
from dhxds.model import Upstream, Worker
from dhxds.resources import RegistryState
from dhxds.snapshot import V3
from dhxds.stream import TypeState

CDS, RDS = V3.cluster_type, V3.route_type
NODE = ("envoy-1", "front")


def state(*ids: str) -> RegistryState:
    workers = tuple(
        Worker(id=i, host="127.0.0.1", port=9000, envoy_prefix=f"/worker/{i}") for i in ids
    )
    return RegistryState(workers, Upstream("127.0.0.1", 8123), "rds_config")


def test_rds_waits_for_a_late_cds_stream():
    """After a control-plane restart Envoy may reopen RDS before CDS: routes wait."""

    async def scenario():
        cache = XdsCache(state("w1"), cds_wait=60)
        rds = stream(cache, "rds", RDS)
        assert respond(cache, rds, RDS) is None
        cds = stream(cache, "cds", CDS)
        ack(cache, cds, CDS, respond(cache, cds, CDS))
        assert respond(cache, rds, RDS) is not None

    asyncio.run(scenario())


def stream(cache: XdsCache, service: str, *types: str) -> Session:
    session = Session("v3", service)
    cache.open(session)
    cache.set_node(session, NODE)
    for url in types:
        ts = session.states[url] = TypeState(url, wildcard=url == CDS)
        ts.on_request("", "", [] if url == CDS else ["rds_config"], None)
    return session


def respond(cache, session, url):
    return cache.next_response(session, session.states[url])


def ack(cache, session, url, response):
    names = [] if url == CDS else ["rds_config"]
    session.states[url].on_request(response.version, response.nonce, names, None)
    cache.node_changed(session)


def names(response) -> set[str]:
    return {r.name for r in response.resources}


def route_clusters(response) -> set[str]:
    [config] = response.resources
    return set(config.refs)


def test_separate_streams_add_then_remove():
    cache = XdsCache(state("w1"))
    cds, rds = stream(cache, "cds", CDS), stream(cache, "rds", RDS)
    # RDS waits for the first CDS ACK, even when it asks first.
    assert respond(cache, rds, RDS) is None
    first = respond(cache, cds, CDS)
    assert names(first) == {"web_api_service", "worker_w1"}
    assert respond(cache, rds, RDS) is None  # sent but not ACKed yet
    ack(cache, cds, CDS, first)
    assert rds.wake.is_set()  # the ACK woke the RDS stream of the same node
    routes = respond(cache, rds, RDS)
    assert route_clusters(routes) == {"web_api_service", "worker_w1"}
    ack(cache, rds, RDS, routes)

    # Add w2: CDS first; RDS holds until the CDS ACK.
    cache.set_state(state("w1", "w2"))
    assert respond(cache, rds, RDS) is None
    added = respond(cache, cds, CDS)
    assert "worker_w2" in names(added)
    assert respond(cache, rds, RDS) is None
    ack(cache, cds, CDS, added)
    routes = respond(cache, rds, RDS)
    assert "worker_w2" in route_clusters(routes)
    ack(cache, rds, RDS, routes)

    # Remove w1: routes go first; the cluster stays until the routes are ACKed.
    cache.set_state(state("w2"))
    assert respond(cache, cds, CDS) is None  # same clusters as before: nothing to send
    routes = respond(cache, rds, RDS)
    assert "worker_w1" not in route_clusters(routes)
    assert respond(cache, cds, CDS) is None  # still referenced by unacked routes
    ack(cache, rds, RDS, routes)
    removed = respond(cache, cds, CDS)
    assert names(removed) == {"web_api_service", "worker_w2"}


def test_ads_stream_orders_within_itself():
    cache = XdsCache(state("w1"))
    ads = stream(cache, "ads", CDS, RDS)
    clusters = respond(cache, ads, CDS)
    assert respond(cache, ads, RDS) is None
    ack(cache, ads, CDS, clusters)
    assert respond(cache, ads, RDS) is not None


def test_nacked_cds_keeps_routes_back():
    cache = XdsCache(state())
    cds, rds = stream(cache, "cds", CDS), stream(cache, "rds", RDS)
    ack(cache, cds, CDS, respond(cache, cds, CDS))
    ack(cache, rds, RDS, respond(cache, rds, RDS))
    cache.set_state(state("w1"))
    rejected = respond(cache, cds, CDS)
    cds.states[CDS].on_request("old", rejected.nonce, [], "bad cluster")
    cache.node_changed(cds)
    assert respond(cache, rds, RDS) is None  # w1's route would point at an unknown cluster
    assert respond(cache, cds, CDS) is None  # and the rejected version is not resent


def test_node_without_cds_gets_routes_and_other_nodes_are_independent():
    cache = XdsCache(state("w1"), cds_wait=0)
    only_rds = stream(cache, "rds", RDS)
    assert respond(cache, only_rds, RDS) is not None
    other = Session("v3", "cds")
    cache.open(other)
    cache.set_node(other, ("envoy-2", "front"))
    other.states[CDS] = TypeState(CDS, wildcard=True)
    other.states[CDS].on_request("", "", [], None)
    assert respond(cache, other, CDS) is not None


def test_closing_a_stream_releases_its_node():
    cache = XdsCache(state("w1"), cds_wait=0)
    cds, rds = stream(cache, "cds", CDS), stream(cache, "rds", RDS)
    assert respond(cache, rds, RDS) is None
    cache.close(cds)
    assert respond(cache, rds, RDS) is not None  # no CDS stream left: nothing to wait for
    cache.close(rds)
    assert cache.sessions == set()
