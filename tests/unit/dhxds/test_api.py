"""The HTTP API in-process: status codes, messages, auth; a rejected request changes nothing."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dhxds.api import Api
from dhxds.metrics import Metrics
from dhxds.model import Upstream, Worker
from dhxds.registry import Registry, SqliteBackend
from fake_xds import FakeXds, real_xds

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STATIC = Worker(host="10.0.0.9", port=1, id="s1", envoy_prefix="/worker/s1", static=True)


def run_api(tmp_path, scenario, metrics_require_token=True, xds=None):
    """Run `scenario(client, registry, changes)` against a fresh API on a real socket."""

    async def main():
        registry = Registry(
            SqliteBackend(tmp_path / "workers.db"), Upstream("127.0.0.1", 8123), "rds", [STATIC]
        )
        await registry.start()
        changes: list[int] = []
        registry.on_change(lambda: changes.append(1))
        api = Api(registry, Metrics(), TOKEN, xds or real_xds(registry), metrics_require_token)
        api.ready = True
        try:
            async with TestClient(TestServer(api.app())) as client:
                await scenario(client, registry, changes)
        finally:
            await registry.stop()

    asyncio.run(main())


def test_crud(tmp_path):
    async def scenario(client, registry, changes):
        resp = await client.put(
            "/v1/workers/w1", json={"host": "127.0.0.1", "port": 9}, headers=AUTH
        )
        assert resp.status == 201
        assert (await resp.json())["envoy_prefix"] == "/worker/w1"
        resp = await client.put(
            "/v1/workers/w1", json={"host": "127.0.0.1", "port": 9}, headers=AUTH
        )
        assert resp.status == 200 and len(changes) == 1  # unchanged: no new push
        resp = await client.put(
            "/v1/workers/w1", json={"id": "w1", "host": "h.example", "port": 10}, headers=AUTH
        )
        assert resp.status == 200 and len(changes) == 2
        assert (await (await client.get("/v1/workers/w1", headers=AUTH)).json())["port"] == 10
        listed = await (await client.get("/v1/workers", headers=AUTH)).json()
        assert [(w["id"], w["static"]) for w in listed["workers"]] == [("s1", True), ("w1", False)]
        assert (await client.delete("/v1/workers/w1", headers=AUTH)).status == 204
        resp = await client.get("/v1/workers/w1", headers=AUTH)
        assert resp.status == 404
        assert await resp.json() == {"error": "worker w1 is not registered"}
        assert (await client.get("/healthz")).status == 200
        metrics = await (await client.get("/metrics", headers=AUTH)).text()
        assert "dhxds_connected_streams" in metrics and "dhxds_push_latency_seconds" in metrics

    run_api(tmp_path, scenario)


BAD = [
    ("PUT", "/v1/workers/a%2Fb", {"host": "h", "port": 1}, 400, "'a/b' is invalid"),
    ("PUT", "/v1/workers/x/y", {"host": "h", "port": 1}, 400, "must not contain '/'"),
    ("PUT", "/v1/workers/", {"host": "h", "port": 1}, 400, "must not be empty"),
    ("PUT", "/v1/workers/a..b", {"host": "h", "port": 1}, 400, "without '..'"),
    ("PUT", "/v1/workers/a%20b", {"host": "h", "port": 1}, 400, "'a b' is invalid"),
    ("PUT", "/v1/workers/" + "x" * 129, {"host": "h", "port": 1}, 400, "the limit is 128"),
    ("PUT", "/v1/workers/%E2%9C%93", {"host": "h", "port": 1}, 400, "must be ASCII"),
    ("PUT", "/v1/workers/w", {"host": "h", "port": -1}, 400, "outside 1-65535"),
    ("PUT", "/v1/workers/w", {"host": "h", "port": 70000}, 400, "outside 1-65535"),
    ("PUT", "/v1/workers/w", {"port": 1}, 400, "missing required field(s) in worker: host"),
    (
        "PUT",
        "/v1/workers/w",
        {"host": "h", "port": 1, "x": 1},
        400,
        "unknown field(s) in worker: x",
    ),
    ("PUT", "/v1/workers/w", b"{bad", 400, "not valid JSON"),
    ("PUT", "/v1/workers/w", b"", 400, "request body is empty"),
    ("PUT", "/v1/workers/w", b"\xff\xfe", 400, "not valid JSON"),
    ("PUT", "/v1/workers/w", b"x" * 70000, 413, "larger than"),
    ("PUT", "/v1/workers/w", b"[" * 60000 + b"]" * 60000, 413, "larger than"),
    ("PUT", "/v1/workers/w", b"[" * 30000 + b"]" * 30000, 400, "nested too deeply"),
    ("PUT", "/v1/workers/w", b'{"host": "h", "port": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),
    ("PUT", "/v1/workers/w", b'{"host": "h", "port": ' + b"9" * 4000 + b"}", 400, "12 digits"),
    ("PUT", "/v1/workers/w", {"host": "0.0.0.0", "port": 1}, 400, "unspecified address"),
    ("PUT", "/v1/workers/w", {"host": "::", "port": 1}, 400, "unspecified address"),
    ("PUT", "/v1/workers/w", {"host": "fe80::1%eth0", "port": 1}, 400, "has a zone"),
    ("PUT", "/v1/workers/w", {"host": "239.1.1.1", "port": 1}, 400, "multicast"),
    ("PUT", "/v1/workers/w", {"host": "255.255.255.255", "port": 1}, 400, "broadcast"),
    ("PUT", "/v1/workers/w", {"host": "h\n", "port": 1}, 400, "neither an IP"),
    ("PUT", "/v1/workers/w%0A", {"host": "h", "port": 1}, 400, "is invalid"),
    (
        "PUT",
        "/v1/workers/w",
        {"host": "h", "port": 1, "envoy_prefix": "/worker/w\n"},
        400,
        "envoy_prefix must look like",
    ),
    ("PUT", "/v1/workers/w?wait=soon", {"host": "h", "port": 1}, 400, "wait must be one of"),
    ("PUT", "/v1/workers/w?wait=routable&timeout=x", {"host": "h", "port": 1}, 400, "timeout"),
    ("PUT", "/v1/workers/w?wait=routable&timeout=-1", {"host": "h", "port": 1}, 400, "timeout"),
    ("PUT", "/v1/workers/w?wait=routable&timeout=61", {"host": "h", "port": 1}, 400, "0 to 60"),
    ("PUT", "/v1/workers/w?wait=routable&timeout=nan", {"host": "h", "port": 1}, 400, "timeout"),
    ("PUT", "/v1/workers/w?wait=routable&timeout=inf", {"host": "h", "port": 1}, 400, "timeout"),
    (
        "PUT",
        "/v1/workers/w?wait=routable&timeout=" + "1" * 5000,
        {"host": "h", "port": 1},
        400,
        "timeout",
    ),
    ("PUT", "/v1/workers/w?timeout=3", {"host": "h", "port": 1}, 400, "only with wait=routable"),
    ("PUT", "/v1/workers/w?wiat=routable", {"host": "h", "port": 1}, 400, "unknown query"),
    (
        "PUT",
        "/v1/workers/w?wait=routable&wait=none",
        {"host": "h", "port": 1},
        400,
        "more than once",
    ),
    ("GET", "/v1/workers/keep?wait=maybe", None, 400, "wait must be one of"),
    ("PUT", "/v1/workers/s1", {"host": "h", "port": 1}, 409, "defined in the config file"),
    (
        "PUT",
        "/v1/workers/w",
        {"host": "h", "port": 1, "envoy_prefix": "/worker/s1"},
        409,
        "already used",
    ),
    ("DELETE", "/v1/workers/s1", None, 409, "defined in the config file"),
    ("DELETE", "/v1/workers/nope", None, 404, "not registered"),
    ("POST", "/v1/workers/w", {"host": "h", "port": 1}, 400, "invalid worker id"),
    ("PATCH", "/v1/workers", None, 405, "not allowed"),
    ("GET", "/v2/anything", None, 404, "no such endpoint"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD)
def test_bad_requests_are_refused_and_change_nothing(tmp_path, method, path, body, status, message):
    async def scenario(client, registry, changes):
        await client.put("/v1/workers/keep", json={"host": "h", "port": 1}, headers=AUTH)
        state_before = (registry.revision, await registry.backend.load())
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        resp = await client.request(method, path, headers=AUTH, **kwargs)
        assert resp.status == status
        payload = await resp.json()
        assert message in payload["error"]
        assert set(registry.workers()) == {"keep", "s1"}
        assert (registry.revision, await registry.backend.load()) == state_before
        assert len(changes) == 1

    run_api(tmp_path, scenario)


@pytest.mark.parametrize("path", ["/v1/workers/..", "/v1/workers/%2E%2E", "/v1/workers/a/../b"])
def test_dot_segments_are_refused(tmp_path, path):
    """Sent raw: HTTP client libraries would collapse the dots before sending."""

    async def scenario(client, registry, changes):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        body = b'{"host": "h", "port": 1}'
        writer.write(
            f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        response = (await reader.read()).decode()
        writer.close()
        assert response.startswith("HTTP/1.1 400"), response
        assert "invalid worker id" in response or "is invalid" in response, response
        assert set(registry.workers()) == {"s1"} and changes == []

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, "invalid bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "malformed Authorization header"),
        ({"Authorization": "Bearer"}, "malformed Authorization header"),
    ],
)
def test_token_is_required(tmp_path, headers, message):
    async def scenario(client, registry, changes):
        for method, path in (("PUT", "/v1/workers/w"), ("GET", "/v1/workers"), ("GET", "/metrics")):
            resp = await client.request(
                method, path, json={"host": "h", "port": 1}, headers=headers
            )
            assert resp.status == 401
            assert message in (await resp.json())["error"]
        assert set(registry.workers()) == {"s1"} and changes == []
        assert (await client.get("/healthz")).status == 200

    run_api(tmp_path, scenario)


def test_metrics_can_be_opened(tmp_path):
    async def scenario(client, registry, changes):
        assert (await client.get("/metrics")).status == 200
        assert (await client.get("/v1/workers")).status == 401

    run_api(tmp_path, scenario, metrics_require_token=False)


def test_deeply_nested_json_at_the_size_limit_is_a_json_400(tmp_path):
    async def scenario(client, registry, changes):
        body = b'{"host": "h", "port": 1, "x": ' + b"[" * 32000 + b"]" * 32000 + b"}"
        resp = await client.put("/v1/workers/w", data=body, headers=AUTH)
        assert resp.status == 400 and resp.content_type == "application/json"
        assert "nested too deeply" in (await resp.json())["error"]

    run_api(tmp_path, scenario)


def test_an_unexpected_error_is_a_json_500(tmp_path, monkeypatch):
    async def scenario(client, registry, changes):
        def broken():
            raise KeyError("boom")

        monkeypatch.setattr(registry, "workers", broken)
        resp = await client.get("/v1/workers", headers=AUTH)
        assert resp.status == 500 and resp.content_type == "application/json"
        assert "internal error: KeyError" in (await resp.json())["error"]

    run_api(tmp_path, scenario)


def test_wait_routable_answers_201_200_once_routable(tmp_path):
    xds = FakeXds({"w1": 0.05})

    async def scenario(client, registry, changes):
        body = {"host": "127.0.0.1", "port": 9}
        resp = await client.put("/v1/workers/w1?wait=routable&timeout=2", json=body, headers=AUTH)
        assert resp.status == 201 and (await resp.json())["id"] == "w1"
        resp = await client.put("/v1/workers/w1?wait=routable", json=body, headers=AUTH)
        assert resp.status == 200  # unchanged: still waits (default timeout), still routable
        resp = await client.get("/v1/workers/w1?wait=routable&timeout=1", headers=AUTH)
        assert resp.status == 200 and (await resp.json())["port"] == 9
        assert xds.calls == [("w1", 2.0), ("w1", 5.0), ("w1", 1.0)]
        # Without wait, as before: no call to the core.
        resp = await client.put("/v1/workers/w1?wait=none", json=body, headers=AUTH)
        assert resp.status == 200 and len(xds.calls) == 3
        metrics = await (await client.get("/metrics", headers=AUTH)).text()
        assert 'dhxds_routable_waits_total{result="routable"} 3.0' in metrics

    run_api(tmp_path, scenario, xds=xds)


def test_wait_routable_timeout_is_202_with_the_pending_nodes(tmp_path):
    xds = FakeXds()

    async def scenario(client, registry, changes):
        body = {"host": "127.0.0.1", "port": 9}
        resp = await client.put("/v1/workers/w2?wait=routable&timeout=0.1", json=body, headers=AUTH)
        assert resp.status == 202
        answer = await resp.json()
        assert answer["pending"] == ["envoy-1"] and answer["created"] is True
        assert answer["worker"]["id"] == "w2" and answer["worker"]["port"] == 9
        assert registry.get("w2") is not None and len(changes) == 1  # stored all the same
        resp = await client.get("/v1/workers/w2?wait=routable&timeout=0", headers=AUTH)
        assert resp.status == 202 and (await resp.json())["pending"] == ["envoy-1"]
        resp = await client.get("/v1/workers/nope?wait=routable&timeout=0", headers=AUTH)
        assert resp.status == 404 and xds.calls[-1] == ("w2", 0.0)

    run_api(tmp_path, scenario, xds=xds)


def test_a_core_that_never_returns_still_gets_an_answer(tmp_path, monkeypatch):
    class Stuck(FakeXds):
        async def wait_routable(self, worker_id, timeout):
            await asyncio.sleep(3600)

    monkeypatch.setattr("dhxds.api.WAIT_GRACE", 0.1)

    async def scenario(client, registry, changes):
        resp = await client.put(
            "/v1/workers/w3?wait=routable&timeout=0.1",
            json={"host": "127.0.0.1", "port": 9},
            headers=AUTH,
        )
        assert resp.status == 202 and (await resp.json())["pending"] == ["envoy-1"]

    run_api(tmp_path, scenario, xds=Stuck())


def test_without_an_xds_view_nothing_is_pending(tmp_path):
    async def scenario(client, registry, changes):
        resp = await client.put(
            "/v1/workers/w1?wait=routable", json={"host": "127.0.0.1", "port": 9}, headers=AUTH
        )
        assert resp.status == 201
        assert await (await client.get("/v1/nodes", headers=AUTH)).json() == {"nodes": []}

    run_api(tmp_path, scenario)


def test_nodes_need_the_token(tmp_path):
    async def scenario(client, registry, changes):
        assert (await client.get("/v1/nodes")).status == 401
        resp = await client.get("/v1/nodes", headers=AUTH)
        assert resp.status == 200
        assert await resp.json() == {"nodes": [FakeXds.NODE]}

    run_api(tmp_path, scenario, xds=FakeXds())


def test_openapi_needs_no_token(tmp_path):
    async def scenario(client, registry, changes):
        resp = await client.get("/openapi.json")
        assert resp.status == 200
        assert (await resp.json())["openapi"].startswith("3.")

    run_api(tmp_path, scenario)


def test_healthz_shows_a_degraded_registry(tmp_path):
    path = tmp_path / "workers.db"
    backend = SqliteBackend(path)
    for worker_id in ("w1", "w2"):
        body = {"host": "h", "port": 1}
        asyncio.run(backend.put(Worker.from_dict(body, worker_id=worker_id)))
    asyncio.run(backend.close())
    with sqlite3.connect(path) as db:  # a hand edit that breaks one row
        db.execute("UPDATE workers SET data = '{\"host\": \"bad host\"}' WHERE id = 'w1'")

    async def scenario(client, registry, changes):
        health = await (await client.get("/healthz")).json()
        assert health["status"] == "degraded" and health["workers"] == 2  # w2 and static s1
        assert "1 stored worker(s) are invalid and not served" in health["reason"]
        assert f"{path}" in health["reason"] and "w1" in health["reason"]
        metrics = await (await client.get("/metrics", headers=AUTH)).text()
        assert "dhxds_state_degraded 1.0" in metrics
        # Registering the broken worker again repairs it.
        await client.put("/v1/workers/w1", json={"host": "h", "port": 2}, headers=AUTH)
        health = await (await client.get("/healthz")).json()
        assert health == {"status": "ok", "workers": 3}

    run_api(tmp_path, scenario)


def test_a_failing_core_wait_is_a_json_500_that_says_the_worker_is_stored(tmp_path):
    class Broken(FakeXds):
        async def wait_routable(self, worker_id, timeout):
            raise RuntimeError("core bug")

    async def scenario(client, registry, changes):
        resp = await client.put(
            "/v1/workers/w4?wait=routable", json={"host": "127.0.0.1", "port": 9}, headers=AUTH
        )
        assert resp.status == 500
        assert (await resp.json())["error"] == (
            "worker w4 is stored, but waiting for Envoy failed: core bug"
        )
        assert registry.get("w4") is not None

    run_api(tmp_path, scenario, xds=Broken())


def test_ttl_with_the_sqlite_registry_is_a_clear_400_and_changes_nothing(tmp_path):
    async def scenario(client, registry, changes):
        resp = await client.put(
            "/v1/workers/w1", json={"host": "127.0.0.1", "port": 9, "ttl": 30}, headers=AUTH
        )
        assert resp.status == 400
        assert "ttl (a worker lease) needs state.backend etcd" in (await resp.json())["error"]
        resp = await client.put(
            "/v1/workers/w1", json={"host": "127.0.0.1", "port": 9, "ttl": 1}, headers=AUTH
        )
        assert resp.status == 400 and "outside 2-86400" in (await resp.json())["error"]
        assert set(registry.workers()) == {"s1"} and changes == []

    run_api(tmp_path, scenario)
