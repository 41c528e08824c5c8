"""The SQLite registry backend and the in-memory view built from its watch: revisions, the
watch, wait_revision, envoy_prefix uniqueness, crash safety, the JSON import/export format,
static workers merged in."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from dhxds.model import Upstream, Worker
from dhxds.registry import (
    Compacted,
    Conflict,
    Registry,
    RegistryError,
    SqliteBackend,
    Stored,
    dump_state,
    open_backend,
    read_state_file,
    sqlite_paths,
)

from dhxds import cli

WEB = Upstream("127.0.0.1", 8123)


def worker(worker_id: str, port: int = 9000, **extra) -> Worker:
    return Worker.from_dict({"host": "127.0.0.1", "port": port, **extra}, worker_id=worker_id)


def run(coro):
    return asyncio.run(coro)


async def collect(backend, after: int, count: int) -> list:
    """The first `count` changes after `after`, flattened from the batches."""
    out: list = []
    async for batch in backend.watch(after):
        out.extend(batch)
        if len(out) >= count:
            return out
    return out


def test_put_delete_and_reload_with_revisions(tmp_path):
    path = tmp_path / "state" / "workers.db"

    async def main():
        backend = SqliteBackend(path)
        assert await backend.load() == (0, {})
        assert await backend.put(worker("w1")) == Stored(1, True, True)
        assert await backend.put(worker("w1")) == Stored(1, False, False)  # nothing written
        assert await backend.put(worker("w1", 9001)) == Stored(2, False, True)
        assert await backend.put(worker("w2", 9002, envoy_prefix="/x/y")) == Stored(3, True, True)
        assert await backend.delete("w1") == 4
        assert await backend.delete("w1") is None
        await backend.close()
        again = SqliteBackend(path)
        assert await again.load() == (4, {"w2": worker("w2", 9002, envoy_prefix="/x/y")})
        await again.close()

    run(main())
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_envoy_prefix_is_unique_and_a_conflict_changes_nothing(tmp_path):
    async def main():
        backend = SqliteBackend(tmp_path / "workers.db")
        await backend.put(worker("w1", envoy_prefix="/shared"))
        with pytest.raises(Conflict, match="envoy_prefix /shared is already used by worker w1"):
            await backend.put(worker("w2", envoy_prefix="/shared"))
        assert await backend.load() == (1, {"w1": worker("w1", envoy_prefix="/shared")})
        # The owner may move away; then the prefix is free.
        await backend.put(worker("w1", envoy_prefix="/elsewhere"))
        assert (await backend.put(worker("w2", envoy_prefix="/shared"))).revision == 3
        await backend.close()

    run(main())


def test_watch_delivers_every_change_once_in_order_to_every_watcher(tmp_path):
    async def main():
        backend = SqliteBackend(tmp_path / "workers.db")
        await backend.put(worker("w0"))
        watchers = [asyncio.create_task(collect(backend, 1, 40)) for _ in range(2)]
        late = asyncio.create_task(collect(backend, 0, 41))
        expected = []
        for i in range(20):
            stored = await backend.put(worker(f"w{i % 7}", 9100 + i))
            expected.append((stored.revision, f"w{i % 7}", 9100 + i))
            revision = await backend.delete(f"w{i % 7}")
            expected.append((revision, f"w{i % 7}", None))
        for task in [*watchers, late]:
            changes = await asyncio.wait_for(task, 10)
            seen = [(c.revision, c.worker_id, c.worker and c.worker.port) for c in changes]
            assert seen[-40:] == expected
        assert [c.revision for c in late.result()] == list(range(1, 42))
        await backend.close()

    run(main())


def test_the_watch_follows_writes_of_another_process(tmp_path):
    """`dhxds state import` writes the file while the daemon runs: the daemon follows."""
    path = tmp_path / "workers.db"

    async def main():
        daemon = SqliteBackend(path)
        await daemon.load()
        watcher = asyncio.create_task(collect(daemon, 0, 1))
        await asyncio.sleep(0.05)
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import asyncio, sys; from dhxds.registry import SqliteBackend; "
                "from dhxds.model import Worker; b = SqliteBackend(sys.argv[1]); "
                "asyncio.run(b.put(Worker.from_dict({'host': 'h', 'port': 1}, worker_id='x')))",
                str(path),
            ],
            check=True,
        )
        assert other.returncode == 0
        changes = await asyncio.wait_for(watcher, 10)
        assert [(c.revision, c.worker_id) for c in changes] == [(1, "x")]
        await daemon.close()

    run(main())


def test_an_old_revision_is_compacted_and_the_registry_re_lists(tmp_path):
    async def main():
        backend = SqliteBackend(tmp_path / "workers.db", keep_changes=10)
        for i in range(30):
            await backend.put(worker(f"w{i}", envoy_prefix=f"/p{i}"))
        with pytest.raises(Compacted, match="compacted; cannot watch from 0"):
            await collect(backend, 0, 1)
        assert [c.revision for c in await collect(backend, 25, 5)] == [26, 27, 28, 29, 30]
        # A registry whose view is older than the horizon re-lists instead of missing changes.
        registry = Registry(backend, WEB, "rds")
        await registry.start()
        notified = []
        registry.on_change(lambda: notified.append(registry.revision))
        registry.revision = 0  # as if it had fallen behind
        registry.dynamic = {}
        await backend.put(worker("late"))
        await registry.wait_revision(31)
        assert len(registry.workers()) == 31 and notified
        await registry.stop()

    run(main())


def test_registry_answers_once_its_view_holds_the_write(tmp_path):
    async def main():
        registry = Registry(SqliteBackend(tmp_path / "workers.db"), WEB, "rds")
        await registry.start()
        seen = []
        registry.on_change(lambda: seen.append(set(registry.workers())))
        assert await registry.put(worker("w1")) == (True, True)
        assert registry.revision == 1 and seen == [{"w1"}]  # the listener ran before the answer
        assert await registry.put(worker("w1")) == (False, False)
        assert await registry.put(worker("w1", 7)) == (False, True)
        assert registry.get("w1").port == 7
        assert await registry.delete("w1") is True
        assert await registry.delete("w1") is False
        assert registry.revision == 3 and seen[-1] == set()
        # wait_revision: returns for reached revisions, waits for future ones, times out clearly.
        await registry.wait_revision(2)
        waiting = asyncio.create_task(registry.wait_revision(4))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await registry.backend.put(worker("w9"))  # a write by "another replica"
        await asyncio.wait_for(waiting, 5)
        with pytest.raises(RegistryError, match=r"local view is still at 4 after 0\.1s"):
            await registry.wait_revision(99, timeout=0.1)
        await registry.stop()

    run(main())


def test_registry_merges_static_workers_and_guards_them(tmp_path):
    async def main():
        backend = SqliteBackend(tmp_path / "workers.db")
        await backend.put(worker("s1", 1))  # shadowed by the static one below
        await backend.put(worker("d1", 2))
        static = Worker.from_dict({"host": "127.0.0.1", "port": 3}, worker_id="s1", static=True)
        registry = Registry(backend, WEB, "rds_config", [static])
        await registry.start()
        assert {w.id: w.port for w in registry.workers().values()} == {"s1": 3, "d1": 2}
        assert [w.id for w in registry.state().workers] == ["d1", "s1"]
        with pytest.raises(Conflict, match="defined in the config file"):
            await registry.put(worker("s1", 5))
        with pytest.raises(Conflict, match="defined in the config file"):
            await registry.delete("s1")
        with pytest.raises(Conflict, match="envoy_prefix /worker/d1 is already used by worker d1"):
            await registry.put(worker("d2", envoy_prefix="/worker/d1"))
        with pytest.raises(Conflict, match="envoy_prefix /worker/s1 is already used by worker s1"):
            await registry.put(worker("d2", envoy_prefix="/worker/s1"))
        assert await registry.put(worker("d2")) == (True, True)
        assert await registry.delete("d2") is True
        await registry.stop()

    run(main())


def test_a_stored_worker_clashing_with_a_static_prefix_is_ignored(tmp_path, caplog):
    async def main():
        backend = SqliteBackend(tmp_path / "workers.db")
        await backend.put(worker("d1", envoy_prefix="/shared"))
        await backend.put(worker("d2"))
        static = Worker.from_dict(
            {"host": "127.0.0.1", "port": 3, "envoy_prefix": "/shared"}, worker_id="s1", static=True
        )
        registry = Registry(backend, WEB, "rds_config", [static])
        with caplog.at_level("ERROR"):
            await registry.start()
        assert set(registry.workers()) == {"s1", "d2"}
        await registry.stop()

    run(main())
    assert "stored worker d1 is ignored: its envoy_prefix /shared is used by worker s1" in (
        caplog.text
    )


CRASHER = textwrap.dedent(
    """
    import asyncio, sys
    from dhxds.model import Worker
    from dhxds.registry import SqliteBackend

    async def main():
        backend = SqliteBackend(sys.argv[1])
        await backend.load()
        for i in range(100000):
            body = {"host": "127.0.0.1", "port": 1 + i % 60000}
            await backend.put(Worker.from_dict(body, worker_id=f"w{i}"))
            if i % 3 == 0:
                await backend.delete(f"w{i}")
            print(i, flush=True)  # acknowledged: stored durably

    asyncio.run(main())
    """
)


def test_kill9_during_writes_loses_no_acknowledged_change(tmp_path):
    """A real crash (SIGKILL) in the middle of a stream of writes, several times over."""
    path = tmp_path / "workers.db"
    for round_no in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASHER, str(path)], stdout=subprocess.PIPE, text=True
        )
        acknowledged = -1
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 30 + 17 * round_no:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        proc.stdout.close()

        async def check():
            backend = SqliteBackend(path)  # integrity check passes: never a torn database
            revision, stored = await backend.load()
            changes = await collect(backend, 0, revision) if revision else []
            await backend.close()
            return revision, stored, changes

        revision, stored, changes = run(check())
        acked = {f"w{i}" for i in range(acknowledged + 1) if i % 3}
        assert acked <= set(stored)
        assert not {f"w{i}" for i in range(acknowledged + 1) if i % 3 == 0} & set(stored)
        # The change log replays to exactly the stored rows, revisions without gaps.
        replay: dict[str, Worker] = {}
        for change in changes:
            if change.worker is None:
                replay.pop(change.worker_id, None)
            else:
                replay[change.worker_id] = change.worker
        assert replay == stored
        assert [c.revision for c in changes] == list(range(1, revision + 1))


def test_a_damaged_or_foreign_file_is_a_clear_error(tmp_path):
    foreign = tmp_path / "foreign.db"
    foreign.write_text("this is not a database, it is a note\n" * 100)
    with pytest.raises(RegistryError, match=f"registry database {foreign}.*not a database"):
        run(SqliteBackend(foreign).load())

    damaged = tmp_path / "damaged.db"

    async def fill():
        backend = SqliteBackend(damaged)
        for i in range(300):
            await backend.put(worker(f"w{i}", envoy_prefix=f"/some/long/prefix/{i:05d}" * 3))
        await backend.close()

    run(fill())
    with sqlite3.connect(damaged) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(damaged.read_bytes())
    raw[4096 * 3 : 4096 * 3 + 200] = b"\x07" * 200  # scribble over an index page
    damaged.write_bytes(bytes(raw))
    with pytest.raises(RegistryError, match=f"registry database {damaged}") as raised:
        run(SqliteBackend(damaged).load())
    assert "damaged" in str(raised.value) or "malformed" in str(raised.value)


def test_a_json_state_file_is_imported_on_first_start_only(tmp_path, caplog):
    json_path = tmp_path / "workers.json"
    json_path.write_text(dump_state({"w1": worker("w1"), "w2": worker("w2", 2)}))
    assert sqlite_paths(json_path) == (tmp_path / "workers.db", json_path)
    assert sqlite_paths(tmp_path / "workers.db") == (tmp_path / "workers.db", json_path)

    async def load(path):
        backend = open_backend(path)
        try:
            return await backend.load()
        finally:
            await backend.close()

    with caplog.at_level("WARNING"):
        assert run(load(json_path)) == (1, {"w1": worker("w1"), "w2": worker("w2", 2)})
    assert f"IMPORTED 2 worker(s) from the JSON state file {json_path}" in caplog.text
    assert not json_path.exists() and (tmp_path / "workers.json.imported").exists()
    # A JSON file that appears later is not imported again: the database is the registry.
    json_path.write_text(dump_state({}))
    assert set(run(load(tmp_path / "workers.db"))[1]) == {"w1", "w2"}


def test_a_bad_json_state_file_stops_the_first_start_and_imports_nothing(tmp_path):
    json_path = tmp_path / "workers.json"
    w1 = worker("w1").stored_dict()
    json_path.write_text(json.dumps({"format": "dhxds-workers/1", "workers": [w1, w1]}))
    with pytest.raises(RegistryError, match=f"state file {json_path}, worker #1: duplicate id w1"):
        run(open_backend(json_path).load())
    assert not (tmp_path / "workers.db").exists() and json_path.exists()


def test_replace_all_is_one_revision_and_may_swap_prefixes(tmp_path):
    async def main():
        backend = SqliteBackend(tmp_path / "workers.db")
        await backend.put(worker("a", envoy_prefix="/one"))
        await backend.put(worker("b", envoy_prefix="/two"))
        await backend.put(worker("c"))
        target = {"a": worker("a", envoy_prefix="/two"), "b": worker("b", envoy_prefix="/one")}
        assert await backend.replace_all(target) == 4
        assert await backend.replace_all(target) is None
        assert await backend.load() == (4, target)
        changes = await collect(backend, 3, 3)
        assert {(c.revision, c.worker_id, c.worker is None) for c in changes} == {
            (4, "a", False),
            (4, "b", False),
            (4, "c", True),
        }
        await backend.close()

    run(main())


W1 = {"id": "w1", "host": "127.0.0.1", "port": 1}
W2 = {"id": "w2", "host": "127.0.0.1", "port": 2}


def _state(*items) -> str:
    return json.dumps({"format": "dhxds-workers/1", "workers": list(items)})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"workers": []}', "is not a dhxds-workers/1 file"),
        (
            '{"format": "dhxds-workers/1", "workers": {"w1": {}}}',
            "'workers' must be a list, not dict",
        ),
        (
            _state(W1, {**W2, "envoy_prefix": "/worker/w1"}),
            "worker #1 \\(w2\\): envoy_prefix /worker/w1 is also used by worker w1",
        ),
        (_state(W1, {**W1, "port": 3}), "worker #1: duplicate id w1"),
        (_state(W1, ["not", "an", "object"]), "worker #1: worker must be a JSON object"),
        (_state({**W1, "id": "w1\n"}), "worker #0: worker id 'w1\\\\n' is invalid"),
        (_state({**W1, "host": "bad host"}), "worker #0: host 'bad host' is neither"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        (
            '{"format": "dhxds-workers/1", "workers": [{"port": ' + "1" * 5000 + "}]}",
            "not valid JSON",
        ),
        ("\udcff", "not valid JSON|not UTF-8"),
    ],
)
def test_bad_state_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "workers.json"
    path.write_text(content, errors="surrogateescape")
    with pytest.raises(RegistryError, match=message) as raised:
        read_state_file(path)
    assert str(path) in str(raised.value)


def test_stored_hosts_refused_since_an_upgrade_only_warn(tmp_path, caplog):
    """An older dhxds accepted 0.0.0.0 (Linux connects it to localhost): keep serving it."""
    path = tmp_path / "workers.json"
    path.write_text(_state({**W1, "host": "0.0.0.0"}))
    with caplog.at_level("WARNING"):
        assert read_state_file(path)["w1"].host == "0.0.0.0"
    assert "stored host '0.0.0.0' is the unspecified address" in caplog.text


def _config(tmp_path) -> str:
    config = tmp_path / "dhxds.yml"
    config.write_text(json.dumps({"state": {"path": str(tmp_path / "workers.db")}}))
    return str(config)


def test_state_export_import_round_trip(tmp_path, capsys):
    config = _config(tmp_path)

    async def fill():
        backend = SqliteBackend(tmp_path / "workers.db")
        await backend.put(worker("w1", tls=True, tls_sni="w1.example"))
        await backend.put(worker("w2", 2, envoy_prefix="/x", strip_prefix=False))
        await backend.close()

    run(fill())
    assert cli.main(["state", "export", "--config", config]) == 0
    exported = capsys.readouterr().out
    assert json.loads(exported)["format"] == "dhxds-workers/1"
    backup = tmp_path / "backup.json"
    backup.write_text(exported)

    run(SqliteBackend(tmp_path / "workers.db").replace_all({"w3": worker("w3")}))
    assert cli.main(["state", "import", "--config", config, str(backup)]) == 0
    assert "2 added, 0 replaced, 1 removed" in capsys.readouterr().out
    assert cli.main(["state", "export", "--config", config]) == 0
    assert capsys.readouterr().out == exported
    assert cli.main(["state", "import", "--config", config, str(backup)]) == 0
    assert "(nothing changed)" in capsys.readouterr().out


def test_state_import_of_a_bad_file_changes_nothing(tmp_path, capsys):
    config = _config(tmp_path)
    run(SqliteBackend(tmp_path / "workers.db").put(worker("keep")))
    bad = tmp_path / "bad.json"
    bad.write_text(_state(W1, {**W2, "envoy_prefix": "/worker/w1"}))
    assert cli.main(["state", "import", "--config", config, str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"state file {bad}, worker #1 (w2): envoy_prefix /worker/w1 is also used" in err
    assert cli.main(["state", "export", "--config", config]) == 0
    assert [w["id"] for w in json.loads(capsys.readouterr().out)["workers"]] == ["keep"]


def test_state_export_without_a_database_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["state", "export", "--config", _config(tmp_path)]) == 2
    assert f"there is no registry database {tmp_path / 'workers.db'}" in capsys.readouterr().err


def test_a_failing_listener_does_not_stop_the_view(tmp_path, caplog):
    async def main():
        registry = Registry(SqliteBackend(tmp_path / "workers.db"), WEB, "rds")
        await registry.start()
        calls = []

        def broken():
            calls.append(1)
            raise RuntimeError("bug")

        registry.on_change(broken)
        assert await registry.put(worker("w1")) == (True, True)
        assert await registry.put(worker("w2")) == (True, True)
        assert set(registry.workers()) == {"w1", "w2"} and len(calls) == 2
        assert registry.degraded is None
        await registry.stop()

    with caplog.at_level("ERROR"):
        run(main())
    assert "registry listener" in caplog.text and "RuntimeError: bug" in caplog.text
