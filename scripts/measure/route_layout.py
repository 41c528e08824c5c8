"""Requests/s through a real Envoy to the first and the last of N workers, for the ordered
route list (v2's layout, and v3's before the matcher) and the virtual host's matcher (v3).

Envoy gets the route configuration dhxds builds, inline (no xDS), and one STATIC cluster per
worker, each pointing at a second listener of the same Envoy that answers with a direct
response, so the layouts differ in Envoy's route lookup and nothing else. The client
pipelines keep-alive HTTP/1.1 requests over a few connections. A measurement, not a test:
run it on a quiet box.

    python scripts/measure/route_layout.py [--workers 10000] [--seconds 2] [--rounds 3]
        [--envoy 1.40.0]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dhops_testkit import envoy_binary, free_port, stop_process, wait_for
from dhxds.dialect import V3
from dhxds.model import Upstream, Worker
from dhxds.resources import RegistryState, build_route_config, fallback_routes, worker_routes
from google.protobuf import json_format

HOST = "127.0.0.1"
BACKEND = "backend"


def workers(count: int) -> tuple[Worker, ...]:
    width = len(str(count - 1))
    return tuple(
        Worker(id=f"w{i:0{width}d}", host=HOST, port=1, envoy_prefix=f"/worker/w{i:0{width}d}")
        for i in range(count)
    )


def route_config(layout: str, ws: tuple[Worker, ...]) -> dict:
    if layout == "matcher":
        config = build_route_config(RegistryState(ws, Upstream(HOST, 1), "rds_config"))
    else:  # the ordered list, spelt in v3
        config = build_route_config(RegistryState((), Upstream(HOST, 1), "rds_config"))
        vhost = config.virtual_hosts[0]
        del vhost.routes[:]
        for worker in ws:
            vhost.routes.extend(worker_routes(worker, V3).routes)
        vhost.routes.extend(fallback_routes(V3))
    text = json.dumps(json_format.MessageToDict(config))
    # Renamed so that no cluster name suggests a real worker; every cluster reaches `answer`.
    return json.loads(text.replace('"worker_', '"backend_of_').replace("web_api_service", BACKEND))


def bootstrap(routes: dict, listen: int, backend: int) -> dict:
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

    def listener(name: str, port: int, route_config: dict) -> dict:
        return {
            "name": name,
            "address": {"socket_address": {"address": HOST, "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": {
                                "@type": hcm + "HttpConnectionManager",
                                "stat_prefix": name,
                                "route_config": route_config,
                                "http_filters": [
                                    {"name": "router", "typed_config": {"@type": router}}
                                ],
                            },
                        }
                    ]
                }
            ],
        }

    answer = {
        "name": "answer",
        "virtual_hosts": [
            {
                "name": "answer",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                    }
                ],
            }
        ],
    }
    text = json.dumps(routes)
    names = sorted({BACKEND, *(part.split('"')[0] for part in text.split('"cluster": "')[1:])})
    clusters = [
        {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": HOST, "port_value": backend}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
        for name in names
    ]
    return {
        "static_resources": {
            "listeners": [listener("front", listen, routes), listener("answer", backend, answer)],
            "clusters": clusters,
        }
    }


def _connection_loop(port, request, depth, stop, counts, index):
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    batch = request * depth
    done = 0
    while not stop.is_set():
        sock.sendall(batch)
        seen, buf = 0, b""
        while seen < depth:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            buf += chunk
            seen = buf.count(b"HTTP/1.1 200")
            if b"HTTP/1.1 " in buf and seen == 0 and b"\r\n\r\n" in buf:
                raise RuntimeError(buf[:200].decode(errors="replace"))
        done += depth
    counts[index] = done
    sock.close()


def requests_per_second(port: int, path: str, headers: dict, seconds: float) -> float:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
    connections, depth = 4, 32
    stop, counts = threading.Event(), [0] * connections
    threads = [
        threading.Thread(
            target=_connection_loop, args=(port, request, depth, stop, counts, i), daemon=True
        )
        for i in range(connections)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def measure(version: str, layout: str, ws, seconds: float, rounds: int, workdir: Path) -> dict:
    listen, backend = free_port(), free_port()
    config = workdir / f"envoy-{layout}.json"
    config.write_text(json.dumps(bootstrap(route_config(layout, ws), listen, backend)))
    log = (workdir / f"envoy-{layout}.log").open("wb")
    proc = subprocess.Popen(
        [str(envoy_binary(version)), "-c", str(config), "--concurrency", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = time.perf_counter()
        wait_for(lambda: _answers(listen), 120, f"envoy {version} with the {layout} layout")
        ready = time.perf_counter() - started
        first, last = ws[0], ws[-1]
        cases = {
            "path_first": (f"/worker/{first.id}/x", {}),
            "path_last": (f"/worker/{last.id}/x", {}),
            "header_first": ("/svc/Method", {"envoy-prefix": first.envoy_prefix}),
            "header_last": ("/svc/Method", {"envoy-prefix": last.envoy_prefix}),
            "default": ("/iriside/", {}),
        }
        out = {"layout": layout, "ready_s": round(ready, 2)}
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _round in range(rounds):  # interleaved, so a busy moment hits every case alike
            for name, (path, headers) in cases.items():
                samples[name].append(requests_per_second(listen, path, headers, seconds))
        for name, values in samples.items():
            out[name] = round(statistics.median(values))
        return out
    finally:
        stop_process(proc)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="median of this many runs")
    parser.add_argument("--envoy", default="1.40.0")
    args = parser.parse_args()
    ws = workers(args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            measure(args.envoy, layout, ws, args.seconds, args.rounds, Path(tmp))
            for layout in ("ordered", "matcher")
        ]
    print(json.dumps({"envoy": args.envoy, "workers": args.workers, "results": results}))
    for r in results:
        print(
            f"{r['layout']:8} path first {r['path_first']:>7} last {r['path_last']:>7} "
            f"({100 * r['path_last'] / r['path_first']:.0f} %)   header first "
            f"{r['header_first']:>7} last {r['header_last']:>7} "
            f"({100 * r['header_last'] / r['header_first']:.0f} %)   default {r['default']:>7} "
            f"  ready {r['ready_s']} s",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
