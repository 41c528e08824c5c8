"""The CLI's waiting and node listing against the real API (in a thread) with a fake core."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from aiohttp import web
from dhxds.api import Api
from dhxds.metrics import Metrics
from dhxds.model import Upstream
from dhxds.registry import Registry, SqliteBackend
from fake_xds import FakeXds

from dhxds import cli

TOKEN = "t0ken"


@pytest.fixture
def api_url(tmp_path, monkeypatch):
    """The API on 127.0.0.1 in a background loop: w1 routable after 50 ms, others never."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    registry = Registry(SqliteBackend(tmp_path / "w.db"), Upstream("127.0.0.1", 1), "rds")
    asyncio.run_coroutine_threadsafe(registry.start(), loop).result(10)
    api = Api(registry, Metrics(), TOKEN, FakeXds({"w1": 0.05}))
    api.ready = True

    async def start():
        runner = web.AppRunner(api.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("DHXDS_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DHXDS_TOKEN_FILE", str(token_file))
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    asyncio.run_coroutine_threadsafe(registry.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_add_wait_routable(api_url, capsys):
    assert cli.main(["workers", "add", "w1", "--host", "10.0.0.1", "--port", "1", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "registered w1 -> 10.0.0.1:1" in out and "w1 is routable on every connected" in out


def test_add_wait_timeout_exits_3_and_lists_the_pending_nodes(api_url, capsys):
    argv = ["workers", "add", "w2", "--host", "10.0.0.2", "--port", "2", "--wait"]
    assert cli.main([*argv, "--timeout", "0.2"]) == cli.EXIT_PENDING == 3
    captured = capsys.readouterr()
    assert "registered w2 -> 10.0.0.2:2" in captured.out
    assert "w2 is stored but not routable after 0.2s; 1 Envoy node(s)" in captured.err
    assert captured.err.rstrip().endswith("envoy-1")


def test_add_without_wait_does_not_wait(api_url, capsys):
    assert cli.main(["workers", "add", "w3", "--host", "10.0.0.3", "--port", "3"]) == 0
    assert "routable" not in capsys.readouterr().out


@pytest.mark.parametrize("timeout", ["-1", "61", "nan"])
def test_bad_wait_timeouts(api_url, capsys, timeout):
    argv = ["workers", "add", "w4", "--host", "10.0.0.4", "--port", "4", "--wait"]
    assert cli.main([*argv, "--timeout", timeout]) == 2
    assert "--timeout must be from 0 to 60" in capsys.readouterr().err


def test_nodes_table_and_json(api_url, capsys):
    assert cli.main(["nodes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["NODE", "API", "TRANSPORT"]
    assert lines[1].split()[:4] == ["envoy-1", "v3", "ads", "2026-11-29T18:00:00Z"]
    assert "Cluster=abc" in lines[1]
    assert cli.main(["nodes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [FakeXds.NODE]


def test_add_ttl_is_sent_and_the_daemons_refusal_printed(api_url, capsys):
    argv = ["workers", "add", "w4", "--host", "10.0.0.4", "--port", "4", "--ttl", "30"]
    assert cli.main(argv) == 1  # this API runs on SQLite: no leases
    assert "ttl (a worker lease) needs state.backend etcd" in capsys.readouterr().err


def test_the_client_sends_the_last_token_of_a_rotating_file(api_url, tmp_path, monkeypatch, capsys):
    tokens = tmp_path / "rotating"
    tokens.write_text(f"# new token below\nretired-token\n{TOKEN}\n")
    monkeypatch.setenv("DHXDS_TOKEN_FILE", str(tokens))
    assert cli.main(["workers", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
