"""The etcd registry backend against a real 3-member etcd cluster on loopback (Debian's
etcd-server): revisions, the watch, envoy_prefix uniqueness across two replicas, compaction,
losing a member and losing all of them."""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest
from dhops_testkit.etcd import EtcdCluster, require_etcd
from dhops_testkit.tls import make_pki
from dhxds.config import ConfigError, EtcdSettings, parse_config
from dhxds.etcd_backend import EtcdBackend
from dhxds.model import Upstream, Worker
from dhxds.registry import Compacted, Conflict, Registry, Stored, Unavailable
from hypothesis import settings
from test_registry_stateful import RegistryMachine

WEB = Upstream("127.0.0.1", 8123)
_prefixes = itertools.count()

require_etcd(allow_module_level=True)


@pytest.fixture
def cluster():
    """The module's cluster (setup_module): unittest-style state machines need it too."""
    assert _STATEFUL is not None
    return _STATEFUL


def backend(cluster, prefix: str | None = None) -> EtcdBackend:
    prefix = prefix or f"/test{next(_prefixes)}-{os.getpid()}/"
    return EtcdBackend(EtcdSettings(tuple(cluster.endpoints), prefix))


def worker(worker_id: str, port: int = 9000, **extra) -> Worker:
    return Worker.from_dict({"host": "127.0.0.1", "port": port, **extra}, worker_id=worker_id)


async def collect(backend, after: int, count: int, timeout: float = 10) -> list:
    out: list = []

    async def run():
        async for batch in backend.watch(after):
            revisions = {c.revision for c in batch}
            out.append(sorted(revisions))
            out.extend(batch)
            if sum(1 for x in out if not isinstance(x, list)) >= count:
                return

    await asyncio.wait_for(run(), timeout)
    return out


def test_put_delete_load_with_revisions(cluster):
    async def main():
        b = backend(cluster)
        try:
            rev0, workers = await b.load()
            assert workers == {}
            s1 = await b.put(worker("w1"))
            assert s1.created and s1.changed and s1.revision > rev0
            assert await b.put(worker("w1")) == Stored(s1.revision, False, False)
            s2 = await b.put(worker("w1", 9001))
            assert (s2.created, s2.changed) == (False, True) and s2.revision == s1.revision + 1
            rev, workers = await b.load()
            assert rev == s2.revision and workers == {"w1": worker("w1", 9001)}
            deleted = await b.delete("w1")
            assert deleted == s2.revision + 1
            assert await b.delete("w1") is None
            assert (await b.load())[1] == {}
            # the prefix key went with the worker: another id may take the prefix now
            assert (await b.put(worker("w2", envoy_prefix="/worker/w1"))).created
        finally:
            await b.close()

    asyncio.run(main())


def test_envoy_prefix_is_unique_and_moves_with_the_worker(cluster):
    async def main():
        b = backend(cluster)
        try:
            await b.put(worker("a"))
            with pytest.raises(Conflict, match="/worker/a is already used by worker a"):
                await b.put(worker("b", envoy_prefix="/worker/a"))
            await b.put(worker("a", envoy_prefix="/moved"))  # frees /worker/a
            await b.put(worker("b", envoy_prefix="/worker/a"))
            with pytest.raises(Conflict, match="worker a"):
                await b.put(worker("c", envoy_prefix="/moved"))
            assert set((await b.load())[1]) == {"a", "b"}
        finally:
            await b.close()

    asyncio.run(main())


def test_watch_delivers_every_change_once_in_order_and_replace_all_is_one_revision(cluster):
    async def main():
        writer, reader = backend(cluster), None
        try:
            start = (await writer.load())[0]
            reader = EtcdBackend(writer.settings)
            expected = []
            for i in range(10):
                expected.append((await writer.put(worker(f"w{i}", 9000 + i))).revision)
            expected.append(await writer.delete("w3"))
            replaced = await writer.replace_all({"w0": worker("w0"), "x": worker("x")})
            got = await collect(reader, start, 11 + 9)
            changes = [c for c in got if not isinstance(c, list)]
            assert [c.revision for c in changes[:11]] == expected
            assert changes[10].worker is None and changes[10].worker_id == "w3"
            tail = changes[11:]
            assert {c.revision for c in tail} == {replaced}  # one revision, one batch
            batches = [set(r) for r in got if isinstance(r, list)]
            for first, second in itertools.combinations(batches, 2):
                assert not first & second, "a batch split a revision"
            assert {c.worker_id for c in tail if c.worker is None} == {
                f"w{i}" for i in (1, 2, 4, 5, 6, 7, 8, 9)
            }
            # from the middle: exactly what follows
            later = await collect(reader, expected[4], 6 + 9)
            assert [c.revision for c in later if not isinstance(c, list)][:6] == expected[5:]
            assert (await writer.load())[1] == {"w0": worker("w0"), "x": worker("x")}
        finally:
            await writer.close()
            if reader:
                await reader.close()

    asyncio.run(main())


def test_two_replicas_racing_for_one_envoy_prefix_never_both_win(cluster):
    """Two backends (as two dhxds replicas) race, round after round, to register different
    ids with the same envoy_prefix: exactly one wins each round."""
    rounds = 30

    async def main():
        prefix = f"/race{os.getpid()}/"
        a, b = backend(cluster, prefix), backend(cluster, prefix)
        try:
            wins = {"a": 0, "b": 0}
            for r in range(rounds):
                results = await asyncio.gather(
                    a.put(worker(f"a{r}", envoy_prefix=f"/p{r}")),
                    b.put(worker(f"b{r}", envoy_prefix=f"/p{r}")),
                    return_exceptions=True,
                )
                ok = [isinstance(x, Stored) for x in results]
                assert ok.count(True) == 1, results
                assert isinstance(results[ok.index(False)], Conflict)
                wins["a" if ok[0] else "b"] += 1
            stored = (await a.load())[1]
            assert len(stored) == rounds
            assert len({w.envoy_prefix for w in stored.values()}) == rounds
            return wins
        finally:
            await a.close()
            await b.close()

    wins = asyncio.run(main())
    print(f"race: {rounds} rounds, wins {wins}")


def test_compacted_history_raises_compacted_and_the_registry_re_lists(cluster):
    async def main():
        b = backend(cluster)
        registry = Registry(EtcdBackend(b.settings), WEB, "rds_config")
        try:
            start = (await b.load())[0]
            await b.put(worker("old"))
            await b.put(worker("old2"))
            await b.delete("old")
            head = (await b.put(worker("new"))).revision
            await b.compact(head)
            with pytest.raises(Compacted, match="compacted"):
                await collect(b, start, 1)
            # A view that starts now follows from head; one left at `start` re-lists.
            await registry.start()
            registry.revision = start  # as if it had been disconnected since `start`
            registry._task.cancel()
            await asyncio.gather(registry._task, return_exceptions=True)
            notified = asyncio.Event()
            registry.on_change(notified.set)
            registry._task = asyncio.create_task(registry._follow())
            await asyncio.wait_for(notified.wait(), 10)
            assert set(registry.workers()) == {"old2", "new"}
            assert registry.revision >= head
            await registry.put(worker("after"))
            assert "after" in registry.workers()
        finally:
            await registry.stop()
            await b.close()

    asyncio.run(main())


def test_unreachable_etcd_is_unavailable_and_degraded():
    async def main():
        b = EtcdBackend(EtcdSettings(("http://127.0.0.1:9",), "/x/"))
        try:
            with pytest.raises(Unavailable, match="etcd unavailable"):
                await b.put(worker("w"))
            assert "etcd unavailable" in b.degraded
        finally:
            await b.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("etcd", "message"),
    [
        (None, "needs state.etcd"),
        ({"endpoints": []}, "non-empty list"),
        ({"endpoints": ["127.0.0.1:2379"]}, r"http\(s\)://host:port"),
        ({"endpoints": ["http://a:1", "http://a:1"]}, "twice"),
        ({"endpoints": ["http://a:1"], "prefix": "dhxds"}, "start and end with '/'"),
        ({"endpoints": ["http://a:1"], "cert_file": "/c"}, "go together"),
        ({"endpoints": ["http://a:1"], "ca_file": "/ca"}, "https://"),
        ({"endpoints": ["http://a:1"], "user": "x"}, "unknown key"),
    ],
)
def test_etcd_config_is_validated(etcd, message):
    state = {"backend": "etcd"} | ({"etcd": etcd} if etcd is not None else {})
    with pytest.raises(ConfigError, match=message):
        parse_config({"state": state})


def test_etcd_config_parses():
    config = parse_config(
        {
            "state": {
                "backend": "etcd",
                "etcd": {
                    "endpoints": ["https://e1:2379", "https://e2:2379"],
                    "ca_file": "/ca",
                    "cert_file": "/c",
                    "key_file": "/k",
                },
            }
        }
    )
    assert config.etcd == EtcdSettings(
        ("https://e1:2379", "https://e2:2379"), "/dhxds/", "/ca", "/c", "/k"
    )
    with pytest.raises(ConfigError, match="not etcd"):
        parse_config({"state": {"etcd": {"endpoints": ["http://a:1"]}}})


# --- the registry state machine (test_registry_stateful.py) on etcd ---------------------------
class EtcdRegistryMachine(RegistryMachine):
    """The same rules and checks, with every connection an EtcdBackend on one key prefix of
    the real cluster (a new prefix per example). Revisions are etcd's: the machine counts from
    the revision at its start (nothing else writes to this cluster meanwhile)."""

    def new_backend(self):
        if not hasattr(self, "prefix"):
            self.prefix = f"/stateful{next(_prefixes)}-{os.getpid()}/"
        return EtcdBackend(EtcdSettings(tuple(_STATEFUL.endpoints), self.prefix))


_STATEFUL: EtcdCluster | None = None


def setup_module(module):
    global _STATEFUL
    import tempfile
    from pathlib import Path

    module._tmp = tempfile.TemporaryDirectory()
    _STATEFUL = EtcdCluster(Path(module._tmp.name)).start()


def teardown_module(module):
    if _STATEFUL is not None:
        _STATEFUL.stop()
    module._tmp.cleanup()


EtcdRegistryMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None
)
TestEtcdRegistry = EtcdRegistryMachine.TestCase


def test_tls_with_client_certificates(tmp_path):
    """ca_file, cert_file and key_file reach the gRPC channel: a one-member etcd that
    requires client certificates of its CA serves the backend; without them it is refused."""
    pki = make_pki(tmp_path / "pki")
    etcd = EtcdCluster(tmp_path / "etcd", members=1, pki=pki).start()

    async def main():
        endpoints = tuple(etcd.endpoints)
        good = EtcdBackend(
            EtcdSettings(endpoints, "/tls/", str(pki.ca), str(pki.client_cert), str(pki.client_key))
        )
        no_cert = EtcdBackend(EtcdSettings(endpoints, "/tls/", str(pki.ca)))
        try:
            stored = await good.put(worker("w1"))
            assert (await good.load()) == (stored.revision, {"w1": worker("w1")})
            with pytest.raises(Unavailable):
                await no_cert.load()
        finally:
            await good.close()
            await no_cert.close()

    try:
        asyncio.run(main())
    finally:
        etcd.stop()


def test_state_export_import_on_etcd(cluster, tmp_path, capsys):
    """`dhxds state export|import` work on the configured backend: etcd too."""
    import json

    from dhxds import cli

    prefix = f"/cli{next(_prefixes)}-{os.getpid()}/"
    config = tmp_path / "dhxds.yml"
    config.write_text(
        json.dumps(
            {
                "state": {
                    "backend": "etcd",
                    "etcd": {"endpoints": cluster.endpoints, "prefix": prefix},
                }
            }
        )
    )
    backup = tmp_path / "backup.json"
    backup.write_text(
        json.dumps(
            {
                "format": "dhxds-workers/1",
                "workers": [
                    {"id": "w1", "host": "127.0.0.1", "port": 1},
                    {"id": "w2", "host": "127.0.0.1", "port": 2, "envoy_prefix": "/x"},
                ],
            }
        )
    )
    assert cli.main(["state", "import", "--config", str(config), str(backup)]) == 0
    assert "2 added, 0 replaced, 0 removed" in capsys.readouterr().out
    assert cli.main(["state", "export", "--config", str(config)]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [w["id"] for w in exported["workers"]] == ["w1", "w2"]
    assert cli.main(["state", "import", "--config", str(config), str(backup)]) == 0
    assert "(nothing changed)" in capsys.readouterr().out


def test_a_worker_with_a_ttl_disappears_by_itself_unless_renewed(cluster):
    """Worker leases: both keys on one etcd lease; a repeated PUT renews it; the watch sees
    the expiry as a delete of the worker (the prefix is free again). Bounded waits only."""

    async def main():
        b, reader = backend(cluster), None
        try:
            start = (await b.load())[0]
            reader = EtcdBackend(b.settings)
            leased = worker("lease", ttl=5)  # renewed every second: a wide margin
            first = await b.put(leased)
            assert first.created and first.changed
            await b.put(worker("keep"))
            # Renew a few times: the lease is kept alive by the repeated (unchanged) PUT.
            for _renewal in range(3):
                await asyncio.sleep(1)
                renewed = await b.put(leased)
                assert (renewed.created, renewed.changed) == (False, False)
            assert set((await b.load())[1]) == {"lease", "keep"}
            # Stop renewing: it goes by itself, seen through another backend's watch.
            gone = []

            async def follow():
                async for batch in reader.watch(start):
                    gone.extend(c.worker_id for c in batch if c.worker is None)
                    if "lease" in gone:
                        return

            await asyncio.wait_for(follow(), 30)
            assert set((await b.load())[1]) == {"keep"}
            # Its envoy_prefix is free again.
            assert (await b.put(worker("other", envoy_prefix="/worker/lease"))).created
            # Dropping the ttl from a leased worker keeps it for good.
            await b.put(worker("was-leased", ttl=2))
            await b.put(worker("was-leased"))
            await b.put(worker("probe", ttl=2))

            async def probe_gone():
                while "probe" in (await b.load())[1]:
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(probe_gone(), 30)
            assert "was-leased" in (await b.load())[1]
        finally:
            await b.close()
            if reader is not None:
                await reader.close()

    asyncio.run(main())


def test_ttl_in_replace_all_and_conflicts_do_not_leak_leases(cluster):
    async def main():
        b = backend(cluster)
        try:
            await b.put(worker("a"))
            with pytest.raises(Conflict):
                await b.put(worker("b", envoy_prefix="/worker/a", ttl=30))
            await b.replace_all({"x": worker("x", ttl=2), "y": worker("y")})

            async def x_gone():
                while "x" in (await b.load())[1]:
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(x_gone(), 30)
            assert set((await b.load())[1]) == {"y"}
            assert (await b.put(worker("z", envoy_prefix="/worker/x"))).created
        finally:
            await b.close()

    asyncio.run(main())


def static(worker_id: str, port: int = 7000, **extra) -> Worker:
    return Worker.from_dict(
        {"id": worker_id, "host": "127.0.0.1", "port": port, **extra}, static=True
    )


def test_the_shared_config_is_published_by_the_last_replica_to_start_and_served_by_all(
    cluster, caplog
):
    """web_api_service and static workers live in etcd (<prefix>config): a replica whose
    config file differs publishes it when it starts (last writer wins, WARNING naming the
    difference); every replica serves etcd's copy, so their states (and versions) are equal."""

    async def main():
        first = backend(cluster)
        settings = first.settings
        a = Registry(first, WEB, "rds_config", [static("s1"), static("s2")])
        b = c = None
        try:
            await a.start()
            assert a.web_api == WEB and set(a.static) == {"s1", "s2"}
            # A stored worker with the id of a static worker of the NEXT config is served
            # until that config arrives.
            await a.put(worker("s3", envoy_prefix="/dyn/s3"))
            other_web = Upstream("127.0.0.1", 9999, "http1")
            b = Registry(
                EtcdBackend(settings), other_web, "rds_config", [static("s1", 7001), static("s3")]
            )
            await b.start()
            assert "differs from the shared config" in caplog.text
            assert "web_api_service 127.0.0.1:8123 (downstream) -> 127.0.0.1:9999 (http1)" in (
                caplog.text
            )
            assert (
                "static workers added: s3; static workers removed: s2; static workers "
                "changed: s1" in caplog.text
            )

            async def converged():
                while a.state() != b.state():
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(converged(), 10)
            assert a.web_api == other_web and a.static["s1"].port == 7001
            assert "s3" not in a.dynamic and a.get("s3").static  # the static one wins
            with pytest.raises(Conflict, match="defined in the config file"):
                await a.put(worker("s3"))
            # A third replica with B's file: nothing to publish, no warning for it.
            caplog.clear()
            c = Registry(
                EtcdBackend(settings), other_web, "rds_config", [static("s3"), static("s1", 7001)]
            )
            await c.start()
            assert "differs" not in caplog.text and c.state() == b.state()
            # Back to A's file (a restart of A): everyone follows again; s3 is dynamic again.
            await a.stop()
            a = Registry(EtcdBackend(settings), WEB, "rds_config", [static("s1"), static("s2")])
            await a.start()

            async def back():
                while b.static.keys() != {"s1", "s2"} or c.state() != a.state():
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(back(), 10)
            assert b.web_api == WEB and b.dynamic["s3"].envoy_prefix == "/dyn/s3"
        finally:
            for registry in (a, b, c):
                if registry is not None:
                    await registry.stop()

    asyncio.run(main())
