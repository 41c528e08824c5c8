"""api.token_file with several tokens, re-read when it changes (rotation without restart)."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dhxds.api import Api, Tokens
from dhxds.config import ConfigError, parse_tokens, read_token, read_tokens
from dhxds.metrics import Metrics
from dhxds.model import Upstream
from dhxds.registry import Registry, SqliteBackend
from fake_xds import real_xds

OLD, NEW = "old-t0ken-aaaa", "new-t0ken-bbbb"


def test_parse_tokens_ignores_blank_lines_and_comments():
    text = f"# rotated 2026-11-29\n\n  {OLD}  \n# the new one\n{NEW}\n{OLD}\n"
    assert parse_tokens(text, "f") == (OLD, NEW)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("\n  \n# only a comment\n", "is empty"),
        ("two words\n", "line 1: a token must be one word"),
        ("ok\nbad\x00token\n", "line 2: a token must be one word"),
    ],
)
def test_bad_token_files_are_one_clear_line_without_the_token(text, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_tokens(text, "/etc/dhxds/api-token")
    assert "\n" not in str(info.value) and "words" not in str(info.value)
    assert "/etc/dhxds/api-token" in str(info.value)


def test_clients_send_the_last_token(tmp_path):
    path = tmp_path / "api-token"
    path.write_text(f"{OLD}\n{NEW}\n")
    assert read_token(str(path)) == NEW
    assert read_tokens(str(path)) == (OLD, NEW)
    with pytest.raises(ConfigError, match=r"cannot read api\.token_file"):
        read_tokens(str(tmp_path / "missing"))


def test_the_file_is_re_read_when_it_changes(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(Tokens, "CHECK_S", 0.0)
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "api-token"
    path.write_text(f"{OLD}\n")
    tokens = Tokens.from_file(str(path))
    assert tokens.accepts(OLD.encode()) and not tokens.accepts(NEW.encode())
    path.write_text(f"{OLD}\n{NEW}\n")  # rollover: both valid
    assert tokens.accepts(OLD.encode()) and tokens.accepts(NEW.encode())
    path.write_text(f"# {OLD} removed\n{NEW}\n")
    assert not tokens.accepts(OLD.encode()) and tokens.accepts(NEW.encode())
    # An empty or missing file keeps the tokens read before and says so.
    path.write_text("\n")
    assert tokens.accepts(NEW.encode())
    assert "is empty" in tokens.problem and "1 token(s) read before" in tokens.problem
    os.unlink(path)
    assert tokens.accepts(NEW.encode()) and "cannot read" in tokens.problem
    path.write_text(f"{NEW}\n")
    assert tokens.accepts(NEW.encode()) and tokens.problem is None
    assert OLD not in caplog.text and NEW not in caplog.text


def test_a_rotation_through_the_api_without_restart(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(Tokens, "CHECK_S", 0.0)
    path = tmp_path / "api-token"
    path.write_text(f"{OLD}\n")

    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def main():
        registry = Registry(SqliteBackend(tmp_path / "w.db"), Upstream("127.0.0.1", 8123), "rds")
        await registry.start()
        api = Api(registry, Metrics(), Tokens.from_file(str(path)), real_xds(registry))
        api.ready = True
        try:
            async with TestClient(TestServer(api.app())) as client:
                assert (await client.get("/v1/workers", headers=auth(OLD))).status == 200
                assert (await client.get("/v1/workers", headers=auth(NEW))).status == 401
                path.write_text(f"{OLD}\n{NEW}\n")
                for token in (OLD, NEW):
                    assert (await client.get("/v1/workers", headers=auth(token))).status == 200
                path.write_text(f"{NEW}\n")
                assert (await client.get("/v1/workers", headers=auth(OLD))).status == 401
                assert (await client.get("/v1/workers", headers=auth(NEW))).status == 200
                path.write_text("")  # a broken file: the tokens read before still work
                body = await (await client.get("/healthz")).json()
                assert (await client.get("/v1/workers", headers=auth(NEW))).status == 200
                assert body["status"] == "degraded" and "api.token_file" in body["reason"]
        finally:
            await registry.stop()

    asyncio.run(main())
    assert OLD not in caplog.text and NEW not in caplog.text
