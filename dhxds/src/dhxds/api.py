"""HTTP registration API (aiohttp): /v1/workers, /v1/nodes, /healthz, /metrics, /openapi.json.

Every error is JSON `{"error": "..."}` with a 4xx/5xx status, and a rejected request changes
nothing: validation happens completely before the registry is touched.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from . import openapi
from .config import ConfigError, read_tokens
from .metrics import Metrics
from .model import ValidationError, Worker, validate_worker_id
from .registry import TTL_NEEDS_ETCD, Conflict, Registry, RegistryError, Unavailable

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 64 * 1024
OPEN_PATHS = {"/healthz", "/openapi.json"}
WAIT_TIMEOUT_DEFAULT = 5.0
WAIT_TIMEOUT_MAX = 60.0
WAIT_VALUES = ("routable", "none")
WORKER_QUERY = ("wait", "timeout")
WAIT_GRACE = 5.0  # seconds past the timeout before the API stops waiting for a stuck core


class XdsView(Protocol):
    """What the API needs from the xDS core; the daemon passes the core as `Api(..., xds=)`.

    Both are called on the event loop that serves the API."""

    def nodes(self) -> list[dict[str, Any]]:
        """One dict per connected node (one entry per node id and stream group), in the shape
        of ARCHITECTURE.md and the `Node` schema of /openapi.json:
        {"id": str, "api": "v2" | "v3", "transport": "ads" | "cds" | "rds" | "delta",
         "acked": {type_url: version}, "nack": None | {"version": str, "message": str},
         "connected_since": RFC 3339 UTC, e.g. "2026-11-29T18:00:00Z"}.
        JSON-serialisable; the API returns it unchanged."""

    async def wait_routable(self, worker_id: str, timeout: float) -> list[str]:
        """Wait until every connected Envoy node has ACKed the worker's cluster and a route
        to it (a node without a CDS subscription: the route), then return []; or return the
        ids of the nodes still pending once `timeout` seconds (0 to 60; 0 = check once) have
        passed. Called after the registry stored the change (the snapshot already holds it).
        Must return by itself at the timeout: the API stops waiting WAIT_GRACE seconds later
        and then reports every node in nodes() as pending."""


class Tokens:
    """The accepted bearer tokens. From api.token_file (`Tokens.from_file`) the file is
    checked for changes (inode, size, mtime) at most once a second, when a request needs a
    token, and re-read when it changed: rotation without a restart. A file that cannot be
    read or holds no token keeps the tokens read before (WARNING, and /healthz says why).
    Tokens never reach a log or a message; comparison is constant-time per token and every
    token is compared."""

    CHECK_S = 1.0

    def __init__(self, tokens: tuple[str, ...] | str, path: str | None = None) -> None:
        self._tokens = self._encode((tokens,) if isinstance(tokens, str) else tokens)
        self.path = path
        self.problem: str | None = None
        self._checked = time.monotonic()
        self._signature = self._stat() if path else None

    @staticmethod
    def _encode(tokens: tuple[str, ...]) -> tuple[bytes, ...]:
        if not tokens or not all(tokens):
            raise ConfigError("at least one non-empty API token is needed")
        return tuple(t.encode() for t in tokens)

    @classmethod
    def from_file(cls, path: str) -> Tokens:
        return cls(read_tokens(path), path)

    def __len__(self) -> int:
        return len(self._tokens)

    def _stat(self) -> tuple[int, ...] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._checked < self.CHECK_S):
            return
        self._checked = now
        signature = self._stat()
        if signature == self._signature and not force:
            return
        self._signature = signature
        try:
            tokens = self._encode(read_tokens(self.path))
        except ConfigError as exc:
            problem = f"{exc}; still accepting the {len(self._tokens)} token(s) read before"
            if problem != self.problem:
                log.warning("%s", problem)
            self.problem = problem
            return
        if tokens != self._tokens:
            log.info("api.token_file %s re-read: %d token(s) accepted", self.path, len(tokens))
        elif self.problem:
            log.info("api.token_file %s readable again", self.path)
        self._tokens, self.problem = tokens, None

    def accepts(self, presented: bytes) -> bool:
        self.refresh()
        match = False
        for token in self._tokens:  # no early exit: the time does not tell which one matched
            match |= hmac.compare_digest(presented, token)
        return match


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _worker_json(worker: Worker) -> dict:
    return worker.to_dict()


class Api:
    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        token: str | Tokens,
        xds: XdsView,
        metrics_require_token: bool = True,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.tokens = token if isinstance(token, Tokens) else Tokens(token)
        self._open = OPEN_PATHS | ({"/metrics"} if not metrics_require_token else set())
        self.xds = xds
        self.ready = False

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_view)
        app.router.add_get("/openapi.json", self.openapi_view)
        app.router.add_get("/v1/nodes", self.list_nodes)
        app.router.add_get("/v1/workers", self.list_workers)
        app.router.add_get("/v1/workers/{id}", self.get_worker)
        app.router.add_put("/v1/workers/{id}", self.put_worker)
        app.router.add_delete("/v1/workers/{id}", self.delete_worker)
        # Anything else below /v1/workers/ (ids with '/', empty ids) gets a clear 400.
        app.router.add_route("*", "/v1/workers/{rest:.*}", self.bad_worker_path)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn aiohttp's own HTTP errors (404, 405, 413) and any bug into the JSON shape."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = {
                404: f"no such endpoint: {request.method} {request.path}",
                405: f"method {request.method} is not allowed on {request.path}",
                413: f"request body is larger than {MAX_BODY} bytes",
            }.get(exc.status, exc.reason)
            return error(exc.status, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error in %s %s", request.method, request.path)
            return error(500, f"internal error: {type(exc).__name__}: {exc}"[:500])

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self._open:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _sep, presented = header.partition(" ")
        if not header:
            return error(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if scheme.lower() != "bearer" or not presented:
            return error(401, "malformed Authorization header: expected 'Bearer <token>'")
        if not self.tokens.accepts(presented.strip().encode()):
            log.warning("rejected API request with a wrong token from %s", request.remote)
            return error(401, "invalid bearer token")
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return error(503, "starting")
        self.tokens.refresh()
        body: dict[str, Any] = {"status": "ok", "workers": len(self.registry.workers())}
        degraded = "; ".join(p for p in (self.registry.degraded, self.tokens.problem) if p)
        if degraded:
            # Still 200: the daemon serves; monitoring reads "status" and "reason".
            body.update(status="degraded", reason=degraded)
        return web.json_response(body)

    async def openapi_view(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.spec())

    async def list_nodes(self, request: web.Request) -> web.Response:
        return web.json_response({"nodes": self.xds.nodes()})

    async def metrics_view(self, request: web.Request) -> web.Response:
        self.metrics.state_degraded.set(1 if self.registry.degraded else 0)
        body = self.metrics.render()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def list_workers(self, request: web.Request) -> web.Response:
        workers = self.registry.workers()
        return web.json_response({"workers": [_worker_json(workers[k]) for k in sorted(workers)]})

    def _id(self, request: web.Request) -> str:
        try:
            return validate_worker_id(request.match_info["id"])
        except ValidationError as exc:
            raise _Reject(400, str(exc)) from exc

    async def get_worker(self, request: web.Request) -> web.Response:
        try:
            worker_id = self._id(request)
            wait = _wait_timeout(request)
        except _Reject as rej:
            return rej.response()
        worker = self.registry.get(worker_id)
        if worker is None:
            return error(404, f"worker {worker_id} is not registered")
        return await self._answer(worker, 200, wait)

    async def put_worker(self, request: web.Request) -> web.Response:
        try:
            worker_id = self._id(request)
            wait = _wait_timeout(request)
            body = await self._json_body(request)
            worker = Worker.from_dict(body, worker_id=worker_id)
        except _Reject as rej:
            return rej.response()
        except ValidationError as exc:
            return error(400, str(exc))
        if worker.ttl is not None and not self.registry.backend.supports_ttl:
            return error(400, TTL_NEEDS_ETCD)
        try:
            created, _changed = await self.registry.put(worker)
        except Conflict as exc:
            return error(409, str(exc))
        except Unavailable as exc:
            log.error("%s", exc)
            return error(503, f"worker not stored, the registry is unavailable: {exc}")
        except RegistryError as exc:
            log.error("%s", exc)
            return error(500, f"worker not stored: {exc}")
        return await self._answer(worker, 201 if created else 200, wait)

    async def _answer(self, worker: Worker, status: int, wait: float | None) -> web.Response:
        """The worker (status as given) once routable, or 202 with the pending nodes."""
        if wait is None:
            return web.json_response(_worker_json(worker), status=status)
        try:
            # The core returns by itself at the timeout; the margin only guards against a bug.
            pending = await asyncio.wait_for(
                self.xds.wait_routable(worker.id, wait), wait + WAIT_GRACE
            )
        except TimeoutError:
            log.error("wait_routable(%s, %s) did not return in time", worker.id, wait)
            pending = sorted(str(node.get("id")) for node in self.xds.nodes())
        except Exception as exc:
            log.exception("waiting for worker %s to become routable failed", worker.id)
            return error(
                500, f"worker {worker.id} is stored, but waiting for Envoy failed: {exc}"[:500]
            )
        self.metrics.waits.labels("pending" if pending else "routable").inc()
        if not pending:
            return web.json_response(_worker_json(worker), status=status)
        log.warning(
            "worker %s not routable on %d node(s) after %ss: %s",
            worker.id,
            len(pending),
            wait,
            ", ".join(pending),
        )
        return web.json_response(
            {"worker": _worker_json(worker), "pending": list(pending), "created": status == 201},
            status=202,
        )

    async def delete_worker(self, request: web.Request) -> web.Response:
        try:
            worker_id = self._id(request)
        except _Reject as rej:
            return rej.response()
        try:
            removed = await self.registry.delete(worker_id)
        except Conflict as exc:
            return error(409, str(exc))
        except Unavailable as exc:
            log.error("%s", exc)
            return error(503, f"worker not removed, the registry is unavailable: {exc}")
        except RegistryError as exc:
            log.error("%s", exc)
            return error(500, f"worker not removed: {exc}")
        if not removed:
            return error(404, f"worker {worker_id} is not registered")
        return web.Response(status=204)

    async def bad_worker_path(self, request: web.Request) -> web.Response:
        rest = request.match_info["rest"]
        if rest == "":
            return error(400, "worker id must not be empty")
        return error(400, f"invalid worker id {rest!r}: it must not contain '/'")

    @staticmethod
    async def _json_body(request: web.Request) -> object:
        raw = await request.read()
        if not raw.strip():
            raise _Reject(400, "request body is empty; send a JSON object with host and port")
        try:
            return json.loads(raw)
        except RecursionError as exc:
            raise _Reject(400, "request body is not valid JSON: nested too deeply") from exc
        except ValueError as exc:
            # JSONDecodeError, UnicodeDecodeError, and int() past its digit limit
            # ("Exceeds the limit (4300 digits) for integer string conversion").
            raise _Reject(400, f"request body is not valid JSON: {str(exc)[:200]}") from exc


def _wait_timeout(request: web.Request) -> float | None:
    """The query of a worker request: None (answer at once) or seconds to wait for routable."""
    query = request.query
    unknown = sorted(set(query) - set(WORKER_QUERY))
    if unknown:
        raise _Reject(
            400,
            f"unknown query parameter(s): {', '.join(unknown)} (allowed: wait, timeout)"[:300],
        )
    for key in WORKER_QUERY:
        if len(query.getall(key, [])) > 1:
            raise _Reject(400, f"query parameter {key} is given more than once")
    wait = query.get("wait", "none")
    if wait not in WAIT_VALUES:
        raise _Reject(400, f"wait must be one of {', '.join(WAIT_VALUES)}, not {wait[:40]!r}")
    if "timeout" not in query:
        return WAIT_TIMEOUT_DEFAULT if wait == "routable" else None
    if wait != "routable":
        raise _Reject(400, "timeout applies only with wait=routable")
    text = query["timeout"]
    try:
        # A double's shortest repr is up to 24 characters ('2.2250738585072014e-308'); the
        # cap only keeps absurdly long strings out of float().
        timeout = float(text) if len(text) <= 64 else math.nan
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and 0 <= timeout <= WAIT_TIMEOUT_MAX):
        raise _Reject(
            400,
            f"timeout must be a number of seconds from 0 to {WAIT_TIMEOUT_MAX:g}, "
            f"not {text[:40]!r}",
        )
    return timeout


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        return error(self.status, self.message)
