"""Real processes for dhxds integration tests: the daemon, Envoy, and small backends.

Everything binds to 127.0.0.1 on ephemeral ports; every process is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import requests
from aiohttp import WSMsgType, web

HOST = "127.0.0.1"
CACHE = Path(os.environ.get("DHOPS_CACHE", Path.home() / ".cache" / "dhops-envoy"))
TOKEN = "integration-test-token"
ENVOY_MAIN = "1.40.0"  # every integration test
ENVOY_OLD = "1.36.4"  # the main routing test and resource validation too


def envoy_binary(version: str) -> Path:
    path = CACHE / "envoy" / version / "envoy"
    if not path.is_file():
        raise FileNotFoundError(
            f"Envoy {version} not found at {path}: run scripts/harness/envoy-binaries.sh {version}"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll until check() returns a truthy value; raise with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing polled is not up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def run_dhxds(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the dhxds CLI to completion, as an operator would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "dhxds", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


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

    def __init__(self, workdir: Path, web_api_port: int, extra: dict | None = None) -> None:
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
            "web_api_service": {"host": HOST, "port": web_api_port},
            "log_level": "DEBUG",
            **(extra or {}),
        }
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = workdir / "dhxds.log"
        self.proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://{HOST}:{self.api_port}"

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

    def put_worker(self, worker_id: str, port: int, **fields) -> dict:
        resp = self.call("PUT", f"/v1/workers/{worker_id}", {"host": HOST, "port": port, **fields})
        assert resp.status_code in (200, 201), resp.text
        return resp.json()


# --- Envoy -----------------------------------------------------------------------------------
def _grpc_source(resource_api: str = "V3", transport: str = "V3", ads: bool = False) -> dict:
    if ads:
        return {"ads": {}, "resource_api_version": resource_api}
    return {
        "resource_api_version": resource_api,
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": transport,
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_service"}}],
            "set_node_on_first_message_only": True,
        },
    }


def envoy_bootstrap(mode: str, xds_port: int, listen_port: int, admin_port: int) -> dict:
    """mode: 'ads' (what roles/envoy deploys) or 'separate' (CDS and RDS streams)."""
    ads = mode == "ads"
    dynamic: dict = {"cds_config": _grpc_source(ads=ads)}
    if ads:
        dynamic["ads_config"] = {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_service"}}],
            "set_node_on_first_message_only": True,
        }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "rds": {"route_config_name": "rds_config", "config_source": _grpc_source(ads=ads)},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "node": {"id": f"test-envoy-{listen_port}", "cluster": "front-proxy"},
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin_port}}},
        "dynamic_resources": dynamic,
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": HOST, "port_value": listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "xds_service",
                    "connect_timeout": "1s",
                    "type": "STATIC",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                            "HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds_service",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": HOST,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


class Envoy:
    def __init__(self, version: str, workdir: Path, xds_port: int, mode: str = "ads") -> None:
        self.binary = envoy_binary(version)
        self.version = version
        self.listen_port = free_port()
        self.admin_port = free_port()
        self.config_path = workdir / f"envoy-{mode}-{self.listen_port}.json"
        bootstrap = envoy_bootstrap(mode, xds_port, self.listen_port, self.admin_port)
        self.config_path.write_text(json.dumps(bootstrap, indent=1))
        self.log_path = workdir / f"envoy-{self.listen_port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.listen_port}"

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
        return requests.get(self.url + path, timeout=5, **kw)

    def stat(self, name: str) -> int:
        text = requests.get(
            f"http://{HOST}:{self.admin_port}/stats?filter=^{name}$", timeout=5
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


# --- a raw xDS client (for protocol-level tests, e.g. v2 which no Envoy here speaks) -----------
class XdsClient:
    """One xDS stream: send DiscoveryRequests, receive DiscoveryResponses with a timeout."""

    def __init__(self, port: int, path: str) -> None:
        import queue

        # A v2 client speaks with the v2 message classes, as Envoy 1.12 would.
        if path.startswith(("/envoy.api.v2.", "/envoy.service.discovery.v2.")):
            from envoy.api.v2 import discovery_pb2
        else:
            from envoy.service.discovery.v3 import discovery_pb2

        self.pb = discovery_pb2
        self.channel = grpc.insecure_channel(f"{HOST}:{port}")
        self._out: queue.Queue = queue.Queue()
        self._in: queue.Queue = queue.Queue()
        call = self.channel.stream_stream(
            path,
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
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
        self._out.put(self.pb.DiscoveryRequest(**fields))

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
