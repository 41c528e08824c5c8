"""Regression tests for what fuzzing the API (tests/integration/security) found."""

from __future__ import annotations

import asyncio

import pytest
from test_api import AUTH, TOKEN, run_api


@pytest.mark.parametrize("timeout", ["2.1317263481726354e-05", "0.000000000000000000001", "5.0"])
def test_a_long_but_valid_timeout_is_accepted(tmp_path, timeout):
    """A float as Python or JavaScript prints it can be 24 characters long; the API refused
    every timeout over 20 characters with a 400 although the schema allows any number 0-60."""

    async def scenario(client, registry, changes):
        resp = await client.put(
            f"/v1/workers/w1?wait=routable&timeout={timeout}",
            json={"host": "127.0.0.1", "port": 9},
            headers=AUTH,
        )
        assert resp.status == 201, await resp.text()

    run_api(tmp_path, scenario)


@pytest.mark.parametrize("value", [b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode() + b"\xff"])
def test_an_authorization_header_that_is_not_utf8_is_a_401(tmp_path, value):
    """aiohttp keeps header bytes that are not UTF-8 as surrogates; encoding the token for
    the comparison raised UnicodeEncodeError: a 500 instead of a 401."""

    async def scenario(client, registry, changes):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"GET /v1/workers HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + value
            + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
        status_line, _sep, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 401 Unauthorized", answer
        assert b'{"error": "invalid bearer token"}' in rest

    run_api(tmp_path, scenario)
