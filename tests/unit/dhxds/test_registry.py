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
