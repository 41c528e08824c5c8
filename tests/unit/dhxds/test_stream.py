"""The per-(stream, type) state machine: nonces, ACK, NACK parking, stale nonces, names."""

from __future__ import annotations

from dhxds.snapshot import Encoded, version_of
from dhxds.stream import Event, TypeState

ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def res(name: str, digest: str) -> dict[str, Encoded]:
    return {name: Encoded(name, "type", b"", digest)}


def send(ts: TypeState, resources: dict[str, Encoded]):
    version = ts.plan(resources)
    return None if version is None else ts.mark_sent(version, resources, 0.0)


def test_initial_ack_and_no_resend_of_unchanged_state():
    ts = TypeState("cds", wildcard=True)
    assert ts.on_request("", "", [], None) is Event.INITIAL
    first = send(ts, res("a", "1"))
    assert first is not None and first.nonce == "1"
    assert ts.on_request(first.version, first.nonce, [], None) is Event.ACK
    assert ts.acked_version == first.version and set(ts.acked) == {"a"}
    assert send(ts, res("a", "1")) is None  # nothing changed
    second = send(ts, res("a", "2"))
    assert second is not None and second.nonce == "2"


def test_nack_parks_the_rejected_version():
    ts = TypeState("cds", wildcard=True)
    ts.on_request("", "", [], None)
    good = send(ts, res("a", "1"))
    ts.on_request(good.version, good.nonce, [], None)
    bad = send(ts, res("a", "bad"))
    assert ts.on_request(good.version, bad.nonce, [], "invalid cluster") is Event.NACK
    assert ts.nacked_version == bad.version and ts.last_error == "invalid cluster"
    assert ts.acked_version == good.version  # still the last good one
    assert send(ts, res("a", "bad")) is None  # never the same rejected version again
    fixed = send(ts, res("a", "3"))
    assert fixed is not None
    assert ts.on_request(fixed.version, fixed.nonce, [], None) is Event.ACK
    assert ts.nacked_version is None


def test_stale_nonce_is_ignored():
    ts = TypeState("cds", wildcard=True)
    ts.on_request("", "", [], None)
    first = send(ts, res("a", "1"))
    second = send(ts, res("a", "2"))
    assert ts.on_request(first.version, first.nonce, [], None) is Event.STALE
    assert ts.acked is None  # the ACK of an older response says nothing about the newest
    assert ts.on_request(first.version, first.nonce, [], "old error") is Event.STALE
    assert ts.nacked_version is None
    assert ts.on_request(second.version, second.nonce, [], None) is Event.ACK


def test_subscription_change_is_answered_even_without_a_new_version():
    ts = TypeState(ROUTES, wildcard=False)
    ts.on_request("", "", ["rds_config"], None)
    available = res("rds_config", "1") | res("other", "9")
    first = send(ts, ts.wanted(available))
    assert [r.name for r in first.resources] == ["rds_config"]
    assert ts.on_request(first.version, first.nonce, ["rds_config"], None) is Event.ACK
    assert send(ts, ts.wanted(available)) is None
    assert ts.on_request(first.version, first.nonce, ["rds_config", "other"], None) is Event.ACK
    again = send(ts, ts.wanted(available))
    assert [r.name for r in again.resources] == ["other", "rds_config"]


def test_wildcard_ignores_names_and_reconnect_adopts_known_version():
    ts = TypeState("cds", wildcard=True)
    current = res("a", "1") | res("b", "2")
    ts.on_request(version_of(current.values()), "", [], None)
    assert ts.adopt_client_version(current)  # Envoy already holds exactly this
    assert ts.acked_version == version_of(current.values())
    assert send(ts, current) is None
    other = TypeState("cds", wildcard=True)
    other.on_request("some-old-version", "", [], None)
    assert not other.adopt_client_version(current)
    assert send(other, current) is not None


def test_refs_cover_sent_and_applied():
    ts = TypeState(ROUTES, wildcard=False)
    ts.on_request("", "", ["rds_config"], None)
    old = {"rds_config": Encoded("rds_config", ROUTES, b"", "1", frozenset({"x", "y"}))}
    first = send(ts, old)
    ts.on_request(first.version, first.nonce, ["rds_config"], None)
    new = {"rds_config": Encoded("rds_config", ROUTES, b"", "2", frozenset({"x"}))}
    second = send(ts, new)
    assert ts.refs() == {"x", "y"}  # y stays needed until the new routes are ACKed
    ts.on_request(second.version, second.nonce, ["rds_config"], None)
    assert ts.refs() == {"x"}
