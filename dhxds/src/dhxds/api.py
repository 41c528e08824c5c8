"""HTTP registration API (aiohttp): /v1/workers, /healthz, /metrics.

Every error is JSON `{"error": "..."}` with a 4xx/5xx status, and a rejected request changes
nothing: validation happens completely before the registry is touched.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .metrics import Metrics
from .model import ValidationError, Worker, validate_worker_id
from .registry import Conflict, Registry, RegistryError

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 64 * 1024
OPEN_PATHS = {"/healthz"}


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _worker_json(worker: Worker) -> dict:
    return worker.to_dict()


class Api:
    def __init__(
        self, registry: Registry, metrics: Metrics, token: str, metrics_require_token: bool = True
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self._token = token.encode()
        self._open = OPEN_PATHS | ({"/metrics"} if not metrics_require_token else set())
        self.ready = False

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_view)
        app.router.add_get("/v1/workers", self.list_workers)
        app.router.add_get("/v1/workers/{id}", self.get_worker)
        app.router.add_put("/v1/workers/{id}", self.put_worker)
        app.router.add_delete("/v1/workers/{id}", self.delete_worker)
        # Anything else below /v1/workers/ (ids with '/', empty ids) gets a clear 400.
        app.router.add_route("*", "/v1/workers/{rest:.*}", self.bad_worker_path)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn aiohttp's own HTTP errors (404, 405, 413) into the JSON error shape."""
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
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            log.warning("rejected API request with a wrong token from %s", request.remote)
            return error(401, "invalid bearer token")
        return await handler(request)

    async def healthz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return error(503, "starting")
        return web.json_response({"status": "ok", "workers": len(self.registry.workers())})

    async def metrics_view(self, request: web.Request) -> web.Response:
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
        except _Reject as rej:
            return rej.response()
        worker = self.registry.get(worker_id)
        if worker is None:
            return error(404, f"worker {worker_id} is not registered")
        return web.json_response(_worker_json(worker))

    async def put_worker(self, request: web.Request) -> web.Response:
        try:
            worker_id = self._id(request)
            body = await self._json_body(request)
            worker = Worker.from_dict(body, worker_id=worker_id)
        except _Reject as rej:
            return rej.response()
        except ValidationError as exc:
            return error(400, str(exc))
        try:
            created, _changed = await self.registry.put(worker)
        except Conflict as exc:
            return error(409, str(exc))
        except RegistryError as exc:
            log.error("%s", exc)
            return error(500, f"worker not stored: {exc}")
        return web.json_response(_worker_json(worker), status=201 if created else 200)

    async def delete_worker(self, request: web.Request) -> web.Response:
        try:
            worker_id = self._id(request)
        except _Reject as rej:
            return rej.response()
        try:
            removed = await self.registry.delete(worker_id)
        except Conflict as exc:
            return error(409, str(exc))
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
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Reject(400, f"request body is not valid JSON: {exc}") from exc


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        return error(self.status, self.message)
