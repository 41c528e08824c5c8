"""Real processes for integration tests: the dhxds daemon, Envoy, and small backends.

Everything binds to 127.0.0.1 on ephemeral ports; every process is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import requests
from aiohttp import WSMsgType, web
from envoy.config.route.v3 import route_components_pb2, route_pb2

from .base import CACHE, HOST, TOKEN, free_port, stop_process, wait_for
from .roles import write_envoy_bootstrap

ENVOY_MAIN = "1.40.0"  # every integration test
ENVOY_OLD = "1.36.4"  # the main routing test and resource validation too


def envoy_binary(version: str) -> Path:
    path = CACHE / "envoy" / version / "envoy"
    if not path.is_file():
        raise FileNotFoundError(
            f"Envoy {version} not found at {path}: run scripts/harness/envoy-binaries.sh {version}"
        )
    return path


# --- backends -------------------------------------------------------------------------------
class Backends:
    """HTTP + websocket echo servers, one per name, all in one background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def start(self, name: str, port: int | None = None) -> int:
        port = port or free_port()
        future = asyncio.run_coroutine_threadsafe(self._start(name, port), self.loop)
        future.result(10)
        return port

    def _handler(self, name: str, port: int):
        """The request handler of one backend; subclasses change what it answers."""

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        await ws.send_str(f"{name}:{msg.data}")
                return ws
            return web.json_response(
                {
                    "backend": name,
                    "path": request.path_qs,
                    "original_path": request.headers.get("x-envoy-original-path"),
                    "envoy_prefix": request.headers.get("envoy-prefix"),
                    "http_version": f"{request.version.major}.{request.version.minor}",
                }
            )

        return handle

    async def _start(self, name: str, port: int) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handler(name, port))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        self.runners.append(runner)

    def close(self) -> None:
        async def cleanup() -> None:
            for runner in self.runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def text_backend(name: str) -> http.server.ThreadingHTTPServer:
    """A plain HTTP/1.1 server (stdlib) on 127.0.0.1 that answers GET with '<name> <path>'."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{name} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class GrpcBackend:
    """A gRPC server (HTTP/2) answering /test.Echo/Say with its name and the request."""

    def __init__(self, name: str) -> None:
        def say(request: bytes, context) -> bytes:
            return f"{name}:".encode() + request

        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
        )
        self.server = grpc.server(_thread_pool(), handlers=[handler])
        self.port = self.server.add_insecure_port(f"{HOST}:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(0).wait(5)


def _thread_pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=4)


# --- the daemon ------------------------------------------------------------------------------
class Daemon:
    """`dhxds serve` as a real subprocess (so it can be killed with SIGKILL)."""

    def __init__(
        self, workdir: Path, web_api_port: int | None = None, extra: dict | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.xds_port = free_port()
        self.api_port = free_port()
        self.state_path = workdir / "state" / "workers.json"
        self.token_file = workdir / "api-token"
        self.token_file.write_text(TOKEN + "\n")
        self.config_path = workdir / "dhxds.yml"
        config = {
            "xds": {"listen": f"{HOST}:{self.xds_port}"},
            "api": {"listen": f"{HOST}:{self.api_port}", "token_file": str(self.token_file)},
            "state": {"path": str(self.state_path)},
            "route_config_name": "rds_config",
            "web_api_service": {"host": HOST, "port": web_api_port or free_port()},
            "log_level": "DEBUG",
            **(extra or {}),
        }
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = workdir / "dhxds.log"
        self.proc: subprocess.Popen | None = None

    @property
    def db_path(self) -> Path:
        """The SQLite registry: state.path names workers.json, which is imported into the
        workers.db next to it on the first start."""
        return self.state_path.with_suffix(".db")

    def stored(self) -> tuple[int, dict[str, dict]]:
        """(revision, {id: stored worker}) read from the registry database itself."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            revision = db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
            rows = db.execute("SELECT id, data FROM workers ORDER BY id").fetchall()
        return int(revision), {worker_id: json.loads(data) for worker_id, data in rows}

    @property
    def api(self) -> str:
        """The registration API's base URL."""
        return f"http://{HOST}:{self.api_port}"

    url = api

    def start(self, env: dict | None = None) -> Daemon:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dhxds", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        wait_for(self._healthy, 60, "dhxds /healthz")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dhxds exited with {self.proc.returncode}: {self.log()}")
        return requests.get(f"{self.api}/healthz", timeout=1).status_code == 200

    def kill9(self) -> None:
        assert self.proc is not None
        stop_process(self.proc, signal.SIGKILL)

    def stop(self) -> int | None:
        return None if self.proc is None else stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def call(self, method: str, path: str, body=None, token: str | None = TOKEN, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(
            method, f"{self.api}{path}", json=body, headers=headers, timeout=10, **kw
        )

    def worker(self, worker_id: str) -> dict | None:
        """What the daemon holds for `worker_id` (None when it holds nothing)."""
        resp = self.call("GET", f"/v1/workers/{worker_id}")
        return resp.json() if resp.status_code == 200 else None

    def put_worker(self, worker_id: str, port: int, **fields) -> dict:
        resp = self.call("PUT", f"/v1/workers/{worker_id}", {"host": HOST, "port": port, **fields})
        assert resp.status_code in (200, 201), resp.text
        return resp.json()


# --- Envoy -----------------------------------------------------------------------------------
class Envoy:
    """A real Envoy running the envoy role's own bootstrap (roles/envoy/templates), rendered
    with the role's defaults and these loopback ports; `role_vars` overrides more defaults
    (e.g. envoy_grpc_web_enabled). `tls` = (cert, key) PEM paths turns the role's TLS on."""

    def __init__(
        self,
        version: str,
        workdir: Path,
        xds_port: int,
        mode: str = "ads",
        tls: tuple[Path, Path] | None = None,
        **role_vars: Any,
    ) -> None:
        self.binary = envoy_binary(version)
        self.version = version
        self.listen_port = free_port()
        self.admin_port = free_port()
        self.tls = tls
        self.config_path = workdir / f"envoy-{mode}-{self.listen_port}.yaml"
        self.access_log_path = workdir / f"envoy-{self.listen_port}-access.log"
        overrides = {
            "envoy_node_id": f"test-envoy-{self.listen_port}",
            "envoy_node_cluster": "front-proxy",
            "envoy_admin_address": HOST,
            "envoy_admin_port": self.admin_port,
            "envoy_listener_address": HOST,
            "envoy_listener_port": self.listen_port,
            "envoy_xds_hosts": [HOST],
            "envoy_xds_port": xds_port,
            "envoy_xds_use_ads": mode == "ads",
            "envoy_access_log_path": str(self.access_log_path),
            "envoy_tls_enabled": tls is not None,
            **(
                {"envoy_tls_cert_path": str(tls[0]), "envoy_tls_key_path": str(tls[1])}
                if tls
                else {}
            ),
            **role_vars,
        }
        write_envoy_bootstrap(self.config_path, version, overrides)
        self.log_path = workdir / f"envoy-{self.listen_port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{HOST}:{self.listen_port}"

    def start(self) -> Envoy:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "-c",
                str(self.config_path),
                "--disable-hot-restart",
                "--drain-time-s",
                "1",
                "--parent-shutdown-time-s",
                "2",
                "--concurrency",
                "1",
                "-l",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 90, f"Envoy {self.version} /ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {self.proc.returncode}: {self.log()}")
        resp = requests.get(f"http://{HOST}:{self.admin_port}/ready", timeout=1)
        return resp.status_code == 200

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def get(self, path: str, **kw) -> requests.Response:
        if self.tls:
            kw.setdefault("verify", str(self.tls[0]))
        timeout = kw.pop("timeout", 5)
        return requests.get(self.url + path, timeout=timeout, **kw)

    def stat(self, name: str, timeout: float = 5) -> int:
        """One counter or gauge (0 when absent). The admin API shares Envoy's main thread with
        applying xDS updates: give a longer `timeout` right after many updates."""
        text = requests.get(
            f"http://{HOST}:{self.admin_port}/stats?filter=^{name}$", timeout=timeout
        ).text
        for line in text.splitlines():
            key, _sep, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def connected(self) -> bool:
        """Every xDS subscription (ADS, or CDS and RDS streams) reports a live control plane."""
        text = requests.get(
            f"http://{HOST}:{self.admin_port}/stats?filter=control_plane.connected_state$",
            timeout=5,
        ).text
        values = [line.rpartition(": ")[2] for line in text.splitlines() if line]
        return bool(values) and all(v == "1" for v in values)

    def clusters(self) -> set[str]:
        """Names of the clusters Envoy currently has (static and from CDS)."""
        data = requests.get(
            f"http://{HOST}:{self.admin_port}/clusters?format=json", timeout=5
        ).json()
        return {c["name"] for c in data.get("cluster_statuses", [])}

    def backend_of(self, path: str, **kw) -> str | None:
        """Which backend answered `path` (None for a non-JSON or non-200 answer)."""
        resp = self.get(path, **kw)
        if resp.status_code != 200:
            return None
        return resp.json().get("backend")

    def answers_until(self, path: str, until: str, timeout: float = 60) -> list[int | str]:
        """Request `path` until backend `until` answers; every answer on the way (a backend
        name, or an HTTP status when it was not a 200)."""
        seen: list[int | str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = self.get(path)
            seen.append(resp.json()["backend"] if resp.status_code == 200 else resp.status_code)
            if seen[-1] == until:
                return seen
        raise AssertionError(f"{path} never reached {until}: last answers {seen[-5:]}")


# --- a raw xDS client (for protocol-level tests, e.g. v2 which no Envoy here speaks) -----------
class XdsClient:
    """One xDS stream: send DiscoveryRequests, receive DiscoveryResponses with a timeout."""

    def __init__(self, port: int, path: str, delta: bool = False) -> None:
        import queue

        # A v2 client speaks with the v2 message classes, as Envoy 1.12 would.
        if path.startswith(("/envoy.api.v2.", "/envoy.service.discovery.v2.")):
            from envoy.api.v2 import discovery_pb2
        else:
            from envoy.service.discovery.v3 import discovery_pb2

        self.pb = discovery_pb2
        request, response = (
            (discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse)
            if delta
            else (discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse)
        )
        self.request = request
        # Envoy takes any size; a full RDS at 10,000 workers is ~7 MB (gRPC's default: 4 MB)
        self.channel = grpc.insecure_channel(
            f"{HOST}:{port}", options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
        )
        self._out: queue.Queue = queue.Queue()
        self._in: queue.Queue = queue.Queue()
        call = self.channel.stream_stream(
            path,
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        self._responses = call(iter(self._out.get, None))
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        try:
            for response in self._responses:
                self._in.put(response)
        except grpc.RpcError as exc:
            self._in.put(exc)

    def send(self, **fields) -> None:
        self._out.put(self.request(**fields))

    def recv(self, timeout: float = 30):
        import queue

        try:
            item = self._in.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no DiscoveryResponse within {timeout}s") from None
        if isinstance(item, Exception):
            raise item
        return item

    def nothing_within(self, seconds: float) -> bool:
        import queue

        try:
            self._in.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def ack(self, response, **fields) -> None:
        self.send(
            version_info=response.version_info,
            response_nonce=response.nonce,
            type_url=response.type_url,
            **fields,
        )

    def close(self) -> None:
        self._out.put(None)
        self._responses.cancel()
        self.channel.close()


# --- an ADS client that ACKs like Envoy, with a delay (churn tests, benchmark) ---------------
ADS_V3 = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
CDS_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
RDS_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def route_clusters(response) -> set[str]:
    """Clusters the routes of an RDS response name: in the ordered route list, or in the
    actions of the virtual host's matcher (dhxds' v3 layout)."""
    [res] = response.resources
    config = route_pb2.RouteConfiguration.FromString(res.value)
    routes = [r for vh in config.virtual_hosts for r in vh.routes]
    for vh in config.virtual_hosts:
        routes.extend(_matcher_routes(vh.matcher))
    return {r.route.cluster for r in routes if r.HasField("route")}


def _matcher_routes(matcher) -> list:
    out = []
    on_matches = [matcher.on_no_match]
    for tree_map in (matcher.matcher_tree.exact_match_map, matcher.matcher_tree.prefix_match_map):
        on_matches.extend(tree_map.map.values())
    for on_match in on_matches:
        if on_match.HasField("matcher"):
            out.extend(_matcher_routes(on_match.matcher))
        elif on_match.action.typed_config.Is(route_components_pb2.Route.DESCRIPTOR):
            route = route_components_pb2.Route()
            on_match.action.typed_config.Unpack(route)
            out.append(route)
        elif on_match.action.typed_config.Is(route_components_pb2.RouteList.DESCRIPTOR):
            routes = route_components_pb2.RouteList()
            on_match.action.typed_config.Unpack(routes)
            out.extend(routes.routes)
    return out


def open_ads(daemon, node_id: str) -> XdsClient:
    client = XdsClient(daemon.xds_port, ADS_V3)
    client.send(node={"id": node_id, "cluster": "front"}, type_url=CDS_TYPE)
    client.send(
        node={"id": node_id, "cluster": "front"}, type_url=RDS_TYPE, resource_names=["rds_config"]
    )
    return client


class AckingAds:
    """An ADS client that ACKs every response `delay` seconds after receiving it, like an
    Envoy; it notes when each worker's route first arrived, how many responses came and the
    last one of each type."""

    def __init__(self, daemon, node_id: str, delay: float = 0.0) -> None:
        self.client = open_ads(daemon, node_id)
        self.delay = delay
        self.routed: dict[str, float] = {}
        self.route_responses = 0
        self.lock = threading.Lock()
        self.received = 0
        self.last: dict[str, object] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.client.recv(timeout=0.5)
            except AssertionError:
                continue
            now = time.monotonic()
            with self.lock:
                self.received += 1
                self.last[resp.type_url] = resp
            if resp.type_url == RDS_TYPE:
                self.route_responses += 1
                for cluster in route_clusters(resp):
                    self.routed.setdefault(cluster, now)
            if self.delay:
                time.sleep(self.delay)
            self.client.ack(
                resp, resource_names=["rds_config"] if resp.type_url == RDS_TYPE else []
            )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()
