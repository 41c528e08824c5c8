"""Regression tests for what fuzzing the API (tests/integration/security) found."""

from __future__ import annotations

import pytest
from test_api import AUTH, run_api


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
