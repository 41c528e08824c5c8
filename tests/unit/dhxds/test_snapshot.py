"""Encoders move between registry states by re-encoding only what changed: whatever the
sequence of changes, each snapshot's bytes and versions equal a fresh encoder's."""

from __future__ import annotations

import dataclasses

from dhxds.model import WEB_API_CLUSTER, Upstream, Worker, cluster_name
from dhxds.resources import RegistryState
from dhxds.snapshot import Snapshot, new_encoders, version_of
from dhxds.xds_types import FLAVOURS
from hypothesis import given, settings
from hypothesis import strategies as st

IDS = ("a", "b", "b1", "c", "dns", "z")
NAMED = "dh-host.example"
change = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(IDS), st.integers(1, 3), st.booleans()),
    st.tuples(st.just("delete"), st.sampled_from(IDS)),
    st.tuples(st.just("resolve"), st.sampled_from(((), ("10.1.1.1",), ("10.1.1.1", "10.1.1.2")))),
)


def _state(workers: dict[str, Worker], resolved: tuple[str, ...], web_port: int) -> RegistryState:
    addresses = ((NAMED, resolved),) if resolved else ()
    ordered = tuple(workers[k] for k in sorted(workers))
    return RegistryState(ordered, Upstream("127.0.0.1", web_port), "rds_config", addresses)


def _same(mine: Snapshot, fresh: Snapshot) -> None:
    assert mine.routable_ids == fresh.routable_ids and mine.unresolved == fresh.unresolved
    v3 = FLAVOURS["v3"]  # the on-demand layout's parts too
    ours_od = mine.cluster_set(v3.cluster_type, on_demand=True)
    theirs_od = fresh.cluster_set(v3.cluster_type, on_demand=True)
    assert ours_od.version == theirs_od.version and ours_od.body == theirs_od.body
    ours_rc = mine.route_config(v3.route_type, on_demand=True)
    assert ours_rc.payload == fresh.route_config(v3.route_type, on_demand=True).payload
    for flavour in FLAVOURS.values():
        ours = mine.cluster_set(flavour.cluster_type)
        theirs = fresh.cluster_set(flavour.cluster_type)
        assert ours.version == theirs.version == version_of(theirs.by_name.values())
        assert ours.body == theirs.body
        assert {n: r.payload for n, r in ours.by_name.items()} == {
            n: r.payload for n, r in theirs.by_name.items()
        }
        ours_rc, theirs_rc = (
            mine.route_config(flavour.route_type),
            fresh.route_config(flavour.route_type),
        )
        assert ours_rc.payload == theirs_rc.payload and ours_rc.digest == theirs_rc.digest
        assert dict(ours_rc.members) == dict(theirs_rc.members)
        assert ours_rc.refs == theirs_rc.refs
        # A stream whose CDS view lacks one worker's cluster gets the routes of the state
        # without that worker.
        for worker_id in sorted(fresh.routable_ids):
            have = frozenset(theirs.by_name) - {cluster_name(worker_id)}
            subset = mine.route_config(flavour.route_type, have)
            state = fresh.state
            without = tuple(w for w in state.workers if w.id != worker_id)
            alone = Snapshot(dataclasses.replace(state, workers=without), new_encoders())
            expected = alone.route_config(flavour.route_type)
            assert subset.payload == expected.payload and subset.digest == expected.digest
            assert dict(subset.members) == dict(expected.members)


@settings(deadline=None, max_examples=200)  # a loaded CI box must not fail on time
@given(st.lists(change, max_size=25), st.booleans(), st.booleans())
def test_incremental_snapshots_equal_fresh_ones(changes, v2_first, told):
    """`told`: each state says what changed since the one before (as the registry's do), so
    the encoders follow it in O(changed)."""
    encoders = new_encoders()
    last: RegistryState | None = None
    workers: dict[str, Worker] = {}
    resolved: tuple[str, ...] = ()
    web_port = 8123
    earlier = []  # v3 cluster sets handed out before, newest last
    for step in changes:
        before = dict(workers)
        if step[0] == "put":
            _op, worker_id, port, strip = step
            host = NAMED if worker_id == "dns" else "127.0.0.1"
            workers[worker_id] = Worker(
                id=worker_id,
                host=host,
                port=port,
                envoy_prefix=f"/worker/{worker_id}",
                strip_prefix=strip,
            )
        elif step[0] == "delete":
            workers.pop(step[1], None)
        else:
            resolved = step[1]
        if len(workers) == 4:
            web_port += 1  # web_api_service changes too, now and then
        state = _state(workers, resolved, web_port)
        if told and last is not None and last.web_api == state.web_api:
            changed = {k: workers.get(k) for k in before.keys() | workers.keys()}
            changed = {k: w for k, w in changed.items() if w is not before.get(k)}
            state = dataclasses.replace(state, parent=last.token, changed=changed)
        last = state
        mine = Snapshot(state, encoders)
        if v2_first:  # v2 encoders may skip states (no v2 client connected)
            mine.cluster_set(FLAVOURS["v2"].cluster_type)
        _same(mine, Snapshot(state, new_encoders()))
        now = mine.cluster_set(FLAVOURS["v3"].cluster_type)
        for older in earlier[-8:]:
            _delta_names_are_exact(older, now)
        earlier.append(now)


def _delta_names_are_exact(older, now) -> None:
    """What an encoder says changed since an earlier set (for delta diffs) covers everything
    that differs between the two sets (it may also name one added and removed in between,
    which the diff then skips)."""
    names = now.names_changed_since(older)
    assert names is not None
    differ = {
        n
        for n in older.by_name.keys() | now.by_name.keys()
        if n not in older.by_name
        or n not in now.by_name
        or older.by_name[n].digest != now.by_name[n].digest
    }
    assert differ <= names


def test_an_older_snapshot_still_answers_after_newer_ones():
    """Encoders are shared; a snapshot asked late (lazily) gets its own state's resources."""
    encoders = new_encoders()
    one = {"a": Worker(id="a", host="127.0.0.1", port=1, envoy_prefix="/worker/a")}
    two = {**one, "b": Worker(id="b", host="127.0.0.1", port=2, envoy_prefix="/worker/b")}
    old = Snapshot(_state(one, (), 8123), encoders)
    new = Snapshot(_state(two, (), 8123), encoders)
    new.route_config(FLAVOURS["v3"].route_type)
    v2 = FLAVOURS["v2"]
    assert set(old.clusters(v2.cluster_type)) == {WEB_API_CLUSTER, cluster_name("a")}
    assert set(new.clusters(v2.cluster_type)) == {WEB_API_CLUSTER, "worker_a", "worker_b"}
    fresh = Snapshot(_state(one, (), 8123), new_encoders())
    assert old.route_config(v2.route_type).payload == fresh.route_config(v2.route_type).payload
