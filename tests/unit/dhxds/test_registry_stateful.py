"""The registry as a state machine: random puts (new, replacing, unchanged), deletes, prefix
conflicts with dynamic and static workers, writes by "another replica" straight into the
backend, and whole-set imports (replace_all), against a plain dict as the model.

A worker that another replica stored with the static worker's envoy_prefix is stored but not
served (the backend does not know the config file; the view ignores it, loudly).

Checked on every step: the view (built only from load + the watch) equals the model, the
revision grows by exactly one per change and not at all otherwise, and each call's answer
(created/changed/removed/Conflict) is the model's. Checked at the end: a watcher that saw
every change from revision 0 replays to the model, and a second Registry on the same file
(a replica with its own connection) converges to it.
"""

from __future__ import annotations

import asyncio

from dhxds.model import Upstream, Worker
from dhxds.registry import Conflict, Registry, SqliteBackend
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

IDS = st.sampled_from(["a", "b", "c", "d", "s"])  # "s" is static
PREFIXES = st.sampled_from(["/p0", "/p1", "/p2", "/p3", "/ps"])  # "/ps" belongs to "s"
PORTS = st.integers(1, 3)
STATIC = Worker.from_dict(
    {"host": "127.0.0.1", "port": 9, "envoy_prefix": "/ps"}, worker_id="s", static=True
)


def make(worker_id: str, prefix: str, port: int) -> Worker:
    body = {"host": "127.0.0.1", "port": port, "envoy_prefix": prefix}
    return Worker.from_dict(body, worker_id=worker_id)


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        import tempfile
        from pathlib import Path

        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "workers.db"
        self.loop = asyncio.new_event_loop()
        backend = self.new_backend()
        self.registry = Registry(backend, Upstream("127.0.0.1", 1), "rds", [STATIC])
        self.run(self.registry.start())
        self.model: dict[str, Worker] = {}
        self.base = self.registry.revision  # 0 for a new SQLite file; etcd's revision now
        self.revision = 0  # changes made by this machine
        self.seen: list = []
        self.watcher = self.loop.create_task(self._watch(backend))

    def new_backend(self):
        """Another connection to the same registry (a replica)."""
        backend = SqliteBackend(self.path, synchronous="NORMAL")
        backend.POLL_S = 0.01  # writes of other connections are seen by polling
        return backend

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _watch(self, backend) -> None:
        async for batch in backend.watch(self.base):
            self.seen.extend(batch)

    def served(self) -> dict[str, Worker]:
        return {k: w for k, w in self.model.items() if w.envoy_prefix != "/ps"}

    def owner(self, prefix: str, worker_id: str) -> str | None:
        if prefix == "/ps":
            return "s"
        return next(
            (k for k, w in self.model.items() if w.envoy_prefix == prefix and k != worker_id),
            None,
        )

    @rule(worker_id=IDS, prefix=PREFIXES, port=PORTS)
    def put(self, worker_id, prefix, port):
        worker = make(worker_id, prefix, port)
        try:
            answer = self.run(self.registry.put(worker))
        except Conflict as exc:
            assert worker_id == "s" or self.owner(prefix, worker_id) is not None, exc
            return
        assert worker_id != "s" and self.owner(prefix, worker_id) is None
        old = self.model.get(worker_id)
        assert answer == (old is None, old != worker)
        if old != worker:
            self.model[worker_id] = worker
            self.revision += 1

    @rule(worker_id=IDS)
    def delete(self, worker_id):
        try:
            removed = self.run(self.registry.delete(worker_id))
        except Conflict:
            assert worker_id == "s"
            return
        assert removed == (worker_id in self.model)
        if removed:
            del self.model[worker_id]
            self.revision += 1

    @rule(worker_id=IDS.filter(lambda i: i != "s"), prefix=PREFIXES, port=PORTS)
    def write_by_another_replica(self, worker_id, prefix, port):
        """Straight into the backend: the view learns it from the watch only."""
        worker = make(worker_id, prefix, port)
        other = self.new_backend()
        try:
            owner = next(
                (k for k, w in self.model.items() if w.envoy_prefix == prefix and k != worker_id),
                None,
            )
            try:
                stored = self.run(other.put(worker))
            except Conflict:
                assert owner is not None
                return
            assert owner is None
            if stored.changed:
                self.model[worker_id] = worker
                self.revision += 1
            self.run(self.registry.wait_revision(stored.revision, timeout=5))
        finally:
            self.run(other.close())

    @rule(
        chosen=st.dictionaries(
            st.sampled_from(["a", "b", "c", "d"]), st.tuples(PORTS, st.booleans()), max_size=4
        )
    )
    def import_a_set(self, chosen):
        """replace_all with unique prefixes (possibly swapped): one revision, or none."""
        target = {
            worker_id: make(worker_id, f"/p{'abcd'.index(worker_id) ^ (3 if swap else 0)}", port)
            for worker_id, (port, swap) in chosen.items()
        }
        prefixes = [w.envoy_prefix for w in target.values()]
        if len(set(prefixes)) != len(prefixes):
            return
        revision = self.run(self.registry.backend.replace_all(target))
        assert (revision is None) == (target == self.model)
        if revision is not None:
            self.model = dict(target)
            self.revision += 1
            assert revision == self.base + self.revision
            self.run(self.registry.wait_revision(revision, timeout=5))

    @invariant()
    def view_equals_model(self):
        assert self.registry.revision == self.base + self.revision
        assert self.registry.dynamic == self.served()
        assert self.registry.get("s") == STATIC

    @invariant()
    def each_state_tells_what_changed_since_the_last(self):
        """RegistryState.changed, applied to the previous state, gives the new one (what
        encoders rely on to move in O(changed))."""
        state = self.registry.state()
        last = getattr(self, "last_state", None)
        if last is not None and state is not last and state.changed is not None:
            assert state.parent is last.token
            rebuilt = {w.id: w for w in last.workers}
            for worker_id, worker in state.changed.items():
                rebuilt.pop(worker_id, None)
                if worker is not None:
                    rebuilt[worker_id] = worker
            assert tuple(rebuilt[k] for k in sorted(rebuilt)) == state.workers
        if state is last:
            assert state.workers == tuple(
                self.registry.workers()[k] for k in sorted(self.registry.workers())
            )
        self.last_state = state

    def teardown(self):
        try:
            self.run(asyncio.sleep(0))

            # The watcher saw every revision once, in order, and replays to the model.
            last = self.base + self.revision

            async def settle():
                for _attempt in range(200):
                    if not self.revision or (self.seen and self.seen[-1].revision == last):
                        return
                    await asyncio.sleep(0.01)

            self.run(settle())
            revisions = [c.revision for c in self.seen]
            assert sorted(set(revisions)) == list(range(self.base + 1, last + 1))
            assert revisions == sorted(revisions)
            replay: dict[str, Worker] = {}
            for change in self.seen:
                if change.worker is None:
                    replay.pop(change.worker_id, None)
                else:
                    replay[change.worker_id] = change.worker
            assert replay == self.model
            # A replica with its own connection converges to the same view.
            replica = Registry(self.new_backend(), Upstream("127.0.0.1", 1), "rds", [STATIC])
            self.run(replica.start())
            assert replica.revision == last and replica.dynamic == self.served()
            self.run(replica.stop())
        finally:
            self.watcher.cancel()
            self.run(asyncio.gather(self.watcher, return_exceptions=True))
            self.run(self.registry.stop())
            self.loop.close()
            self.dir.cleanup()


RegistryMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestRegistry = RegistryMachine.TestCase
