"""The JSON file registry: atomic, durable writes; clear errors; static workers merged in."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from dhxds.model import Upstream, Worker
from dhxds.registry import Conflict, JsonFileBackend, Registry, RegistryError

WEB = Upstream("127.0.0.1", 8123)


def worker(worker_id: str, port: int = 9000, **extra) -> Worker:
    return Worker.from_dict({"host": "127.0.0.1", "port": port, **extra}, worker_id=worker_id)


def test_put_delete_and_reload(tmp_path):
    path = tmp_path / "state" / "workers.json"
    backend = JsonFileBackend(path)
    assert backend.load() == {}
    backend.put(worker("w1"))
    backend.put(worker("w2", 9002, envoy_prefix="/x/y"))
    backend.delete("w1")
    assert JsonFileBackend(path).load() == {"w2": worker("w2", 9002, envoy_prefix="/x/y")}
    data = json.loads(path.read_text())
    assert data["format"] == "dhxds-workers/1"
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "workers.json"
    backend = JsonFileBackend(path)
    backend.put(worker("w1"))
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(RegistryError, match=r"cannot write state file .*No space left"):
        backend.put(worker("w2"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workers.json", "workers.json.last-good"]
    monkeypatch.undo()
    assert set(backend.load()) == {"w1"}  # memory follows the file, not the failed attempt


def test_stale_temp_files_from_a_crash_are_ignored_and_removed(tmp_path):
    path = tmp_path / "workers.json"
    JsonFileBackend(path).put(worker("w1"))
    stale = tmp_path / ".workers.json.tmp-abc123"
    stale.write_text('{"torn')
    assert set(JsonFileBackend(path).load()) == {"w1"}
    assert not stale.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"workers": []}', "is not a dhxds-workers/1 file"),
        (
            '{"format": "dhxds-workers/1", "workers": [{"id": "a b", "host": "h", "port": 1}]}',
            "worker #0: worker id 'a b' is invalid",
        ),
    ],
)
def test_corrupt_state_is_refused_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "workers.json"
    path.write_text(content)
    with pytest.raises(RegistryError, match=message):
        JsonFileBackend(path).load()
    assert path.read_text() == content  # never overwritten


CRASHER = textwrap.dedent(
    """
    import sys
    from dhxds.model import Worker
    from dhxds.registry import JsonFileBackend
    backend = JsonFileBackend(sys.argv[1])
    backend.load()
    for i in range(100000):
        body = {"host": "127.0.0.1", "port": 1 + i % 60000}
        backend.put(Worker.from_dict(body, worker_id=f"w{i}"))
        print(i, flush=True)  # acknowledged: stored durably
    """
)


def test_kill9_during_writes_loses_no_acknowledged_worker(tmp_path):
    """A real crash (SIGKILL) in the middle of a stream of writes, several times over."""
    path = tmp_path / "workers.json"
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
        stored = JsonFileBackend(path).load()  # parses: never a torn file
        assert {f"w{i}" for i in range(acknowledged + 1)} <= set(stored)


def test_registry_merges_static_workers_and_guards_them(tmp_path):
    backend = JsonFileBackend(tmp_path / "workers.json")
    backend.put(worker("s1", 1))  # shadowed by the static one below
    backend.put(worker("d1", 2))
    static = worker("s1", 3)
    registry = Registry(backend, WEB, "rds_config", [Worker(**{**static.__dict__, "static": True})])
    registry.load()
    assert {w.id: w.port for w in registry.workers().values()} == {"s1": 3, "d1": 2}
    assert [w.id for w in registry.state().workers] == ["d1", "s1"]

    async def changes():
        with pytest.raises(Conflict, match="defined in the config file"):
            await registry.put(worker("s1", 5))
        with pytest.raises(Conflict, match="defined in the config file"):
            await registry.delete("s1")
        with pytest.raises(Conflict, match="envoy_prefix /worker/d1 is already used by worker d1"):
            await registry.put(worker("d2", envoy_prefix="/worker/d1"))
        assert await registry.put(worker("d2")) == (True, True)
        assert await registry.put(worker("d2")) == (False, False)
        assert await registry.put(worker("d2", 7)) == (False, True)
        assert await registry.delete("d2") is True
        assert await registry.delete("d2") is False

    asyncio.run(changes())


def _state(*items) -> str:
    return json.dumps({"format": "dhxds-workers/1", "workers": list(items)})


W1 = {"id": "w1", "host": "127.0.0.1", "port": 1}
W2 = {"id": "w2", "host": "127.0.0.1", "port": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"format": "dhxds-workers/1", "workers": {"w1": {}}}',
            "'workers' must be a list, not dict",
        ),
        ('{"format": "dhxds-workers/1", "workers": "w1"}', "'workers' must be a list, not str"),
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
        JsonFileBackend(path).load()
    assert str(path) in str(raised.value)
    assert "there is no last-good copy" in str(raised.value)


def test_the_last_good_copy_follows_every_load_and_write(tmp_path):
    path = tmp_path / "workers.json"
    last_good = tmp_path / "workers.json.last-good"
    backend = JsonFileBackend(path)
    backend.put(worker("w1"))
    assert last_good.read_bytes() == path.read_bytes()
    backend.delete("w1")
    assert last_good.read_bytes() == path.read_bytes()
    # A hand-written (valid) main file becomes the last-good copy when loaded.
    path.write_text(_state(W1, W2))
    assert set(JsonFileBackend(path).load()) == {"w1", "w2"}
    assert last_good.read_text() == _state(W1, W2)
    assert oct(last_good.stat().st_mode & 0o777) == "0o640"


def test_a_bad_main_file_starts_from_the_last_good_copy_loudly(tmp_path, caplog):
    path = tmp_path / "workers.json"
    JsonFileBackend(path).put(worker("w1"))
    bad = '{"format": "dhxds-workers/1", "workers": {"oops": 1}}'
    path.write_text(bad)
    backend = JsonFileBackend(path)
    with caplog.at_level("ERROR"):
        assert set(backend.load()) == {"w1"}
    assert "'workers' must be a list" in caplog.text
    assert f"started from the last-good copy {path}.last-good (1 worker(s))" in caplog.text
    assert backend.degraded and "workers.json.bad-" in backend.degraded
    kept = list(tmp_path.glob("workers.json.bad-*"))
    assert len(kept) == 1 and kept[0].read_text() == bad
    assert path.read_text() == bad  # not touched until the next change
    JsonFileBackend(path).load()  # a second start keeps no second copy of the same bad file
    assert len(list(tmp_path.glob("workers.json.bad-*"))) == 1
    # The next change writes a good main file and ends the degraded state.
    backend.put(worker("w2"))
    assert backend.degraded is None
    assert set(JsonFileBackend(path).load()) == {"w1", "w2"}


def test_a_missing_main_file_with_a_last_good_copy_is_restored_loudly(tmp_path, caplog):
    path = tmp_path / "workers.json"
    JsonFileBackend(path).put(worker("w1"))
    path.unlink()
    backend = JsonFileBackend(path)
    with caplog.at_level("ERROR"):
        assert set(backend.load()) == {"w1"}
    assert "is missing but" in caplog.text and backend.degraded


def test_both_files_bad_is_a_clear_error(tmp_path):
    path = tmp_path / "workers.json"
    path.write_text("{torn")
    (tmp_path / "workers.json.last-good").write_text('{"format": "x"}')
    with pytest.raises(RegistryError) as raised:
        JsonFileBackend(path).load()
    text = str(raised.value)
    assert f"state file {path} is not valid JSON" in text
    assert f"cannot start from the last-good copy: state file {path}.last-good is not a" in text


def test_a_stored_worker_clashing_with_a_static_prefix_is_ignored(tmp_path, caplog):
    backend = JsonFileBackend(tmp_path / "workers.json")
    backend.put(worker("d1", envoy_prefix="/shared"))
    backend.put(worker("d2"))
    static = Worker.from_dict(
        {"host": "127.0.0.1", "port": 3, "envoy_prefix": "/shared"}, worker_id="s1", static=True
    )
    registry = Registry(backend, WEB, "rds_config", [static])
    with caplog.at_level("ERROR"):
        registry.load()
    assert set(registry.workers()) == {"s1", "d2"}
    assert "stored worker d1 is ignored: its envoy_prefix /shared is used by worker s1" in (
        caplog.text
    )


def test_stored_hosts_refused_since_an_upgrade_only_warn(tmp_path, caplog):
    """An older dhxds accepted 0.0.0.0 (Linux connects it to localhost): keep serving it."""
    path = tmp_path / "workers.json"
    path.write_text(_state({**W1, "host": "0.0.0.0"}))
    with caplog.at_level("WARNING"):
        assert JsonFileBackend(path).load()["w1"].host == "0.0.0.0"
    assert "stored host '0.0.0.0' is the unspecified address" in caplog.text
