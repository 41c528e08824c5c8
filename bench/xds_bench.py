"""dhxds benchmark: registration-to-routable latency through a real Envoy, daemon memory, and
the cost of building CDS+RDS. Writes reports/xds-bench.md. Numbers only; nothing is asserted.

    source scripts/harness/env.sh && python bench/xds_bench.py [--registrations 200]

Everything runs on 127.0.0.1 (ephemeral ports) and every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests
from aiohttp import web
from dhops_testkit import (
    ENVOY_MAIN,
    HOST,
    AckingAds,
    Backends,
    Daemon,
    Envoy,
    XdsClient,
    wait_for,
)
from dhxds.model import Upstream, Worker
from dhxds.registry import STATE_FORMAT
from dhxds.resources import RegistryState
from dhxds.snapshot import (
    ResourceSet,
    Snapshot,
    encode_delta_response,
    encode_response,
    new_encoders,
)
from dhxds.xds_types import V2, V3
from registry_bench import registry_report, registry_writes

ROOT = Path(__file__).resolve().parents[1]


class PortEcho(Backends):
    """Backends that answer with the local port they were reached on."""

    def _handler(self, name: str, port: int):
        async def handle(request: web.Request) -> web.Response:
            return web.json_response({"backend": name, "port": port})

        return handle


def write_state(path: Path, count: int, ports: list[int]) -> None:
    workers = [
        {
            "id": f"pre{i}",
            "host": HOST,
            "port": ports[i % len(ports)],
            "envoy_prefix": f"/worker/pre{i}",
            "strip_prefix": True,
            "upstream_protocol": "downstream",
            "tls": False,
        }
        for i in range(count)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": STATE_FORMAT, "workers": workers}))


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _sep, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def envoy_update_durations(envoy: Envoy) -> dict[str, str]:
    """Envoy's own time to apply CDS / RDS updates (P50 and P99 from its histograms, ms)."""
    text = requests.get(
        f"http://{HOST}:{envoy.admin_port}/stats?filter=update_duration", timeout=5
    ).text
    out = {}
    for line in text.splitlines():
        name, _sep, values = line.partition(": ")
        kind = "cds" if "cds" in name else "rds"
        pcts = dict(p.strip("()").split("(") for p in values.split() if p.startswith("P"))
        p50, p99 = (float(pcts.get(p, "nan,nan").split(",")[-1]) for p in ("P50", "P99"))
        out[kind] = f"{p50:.0f} / {p99:.0f}"
    return out


def push_latency_means(daemon: Daemon) -> dict[str, float]:
    """Mean of dhxds_push_latency_seconds per type: registry change -> Envoy's ACK (ms)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in daemon.call("GET", "/metrics").text.splitlines():
        for kind in ("cds", "rds"):
            if line.startswith(f'dhxds_push_latency_seconds_sum{{type="{kind}"}}'):
                sums[kind] = float(line.rsplit(" ", 1)[1])
            if line.startswith(f'dhxds_push_latency_seconds_count{{type="{kind}"}}'):
                counts[kind] = float(line.rsplit(" ", 1)[1])
    return {k: 1000 * sums[k] / counts[k] for k in sums if counts.get(k)}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def registration_latency(workdir: Path, mode: str, preregistered: int, count: int) -> dict:
    backends = PortEcho()
    daemon = envoy = None
    try:
        web_port = backends.start("web_api_service")
        pool = [backends.start(f"pool{i}") for i in range(20)]
        new_ports = [backends.start(f"new{i}") for i in range(count)]
        daemon = Daemon(workdir, web_port, {"log_level": "WARNING"})
        write_state(daemon.state_path, preregistered, pool)
        daemon.start()
        envoy = Envoy(ENVOY_MAIN, workdir, daemon.xds_port, mode)
        envoy.start()
        wait_for(lambda: envoy.backend_of("/worker/pre0/") == "pool0", 60, "pre-registered routes")
        session = requests.Session()
        latencies: list[float] = []
        answers: Counter[str] = Counter()
        url = f"{envoy.url}/worker/new{{i}}/probe"
        for i, port in enumerate(new_ports):
            target = url.format(i=i)
            resp = daemon.call("PUT", f"/v1/workers/new{i}", {"host": HOST, "port": port})
            assert resp.status_code == 201, resp.text
            start = time.perf_counter()
            deadline = start + 30
            while True:
                answer = session.get(target, timeout=5)
                now = time.perf_counter()
                if answer.status_code != 200:
                    answers[f"HTTP {answer.status_code}"] += 1
                else:
                    body = answer.json()
                    if body["port"] == port:
                        answers["new worker"] += 1
                        latencies.append((now - start) * 1000)
                        break
                    answers[
                        "web_api_service (route not there yet)"
                        if body["backend"] == "web_api_service"
                        else f"other backend {body['backend']}"
                    ] += 1
                if now > deadline:
                    raise RuntimeError(f"new{i} not routable after 30 s")
                time.sleep(0.001)  # leave the 2 cores to Envoy and the daemon between probes
        daemon_rss = rss_mb(daemon.proc.pid)
        rejected = envoy.stat("cluster_manager.cds.update_rejected")
        time.sleep(6)  # Envoy publishes histograms at its stats flush (every 5 s)
        envoy_side = envoy_update_durations(envoy)
        push_to_ack = push_latency_means(daemon)
        return {
            "mode": mode,
            "preregistered": preregistered,
            "count": count,
            "p50": statistics.median(latencies),
            "p90": percentile(latencies, 90),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
            "answers": dict(answers),
            "daemon_rss": daemon_rss,
            "cds_rejected": rejected,
            "envoy_update_ms": envoy_side,
            "change_to_ack_ms": push_to_ack,
        }
    finally:
        if envoy:
            envoy.stop()
        if daemon:
            daemon.stop()
        backends.close()


def burst_propagation(workdir: Path, preregistered: int, count: int = 60) -> dict:
    """The churn replay (issue 9): `count` registrations 15 ms apart while an ADS client ACKs
    every response 40 ms after receiving it; per worker, PUT sent -> its route on the stream."""
    daemon = client = None
    try:
        daemon = Daemon(workdir, 8123, {"log_level": "WARNING"})
        write_state(daemon.state_path, preregistered, [9000])
        daemon.start()
        client = AckingAds(daemon, "burst-bench", delay=0.040)
        wait_for(lambda: "worker_pre0" in client.routed, 60, "the pre-registered routes")
        sent: dict[str, float] = {}
        for i in range(count):
            sent[f"worker_burst{i}"] = time.monotonic()
            resp = daemon.call("PUT", f"/v1/workers/burst{i}", {"host": HOST, "port": 9001})
            assert resp.status_code == 201, resp.text
            time.sleep(0.015)
        last_put = time.monotonic()
        wait_for(lambda: sent.keys() <= client.routed.keys(), 60, "every burst route")
        delays = [(client.routed[c] - t) * 1000 for c, t in sent.items()]
        return {
            "preregistered": preregistered,
            "count": count,
            "p50": statistics.median(delays),
            "p99": percentile(delays, 99),
            "max": max(delays),
            "during_burst": sum(client.routed[c] < last_put for c in sent),
            "route_responses": client.route_responses,
        }
    finally:
        if client:
            client.close()
        if daemon:
            daemon.stop()


def daemon_memory(workdir: Path, workers: int) -> dict:
    """RSS of a daemon holding `workers`, after serving full CDS+RDS to v3 and v2 clients."""
    daemon = Daemon(workdir, 8123, {"log_level": "WARNING"})
    write_state(daemon.state_path, workers, [9000])
    start = time.perf_counter()
    daemon.start()
    startup = time.perf_counter() - start
    clients = []
    try:
        idle = rss_mb(daemon.proc.pid)
        first_response = {}
        for api, path, cds_type, rds_type in (
            (
                "v3",
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                V3.cluster_type,
                V3.route_type,
            ),
            (
                "v2",
                "/envoy.service.discovery.v2.AggregatedDiscoveryService/StreamAggregatedResources",
                V2.cluster_type,
                V2.route_type,
            ),
        ):
            client = XdsClient(daemon.xds_port, path)
            clients.append(client)
            t0 = time.perf_counter()
            client.send(node={"id": f"bench-{api}"}, type_url=cds_type)
            cds = client.recv(60)
            client.ack(cds)
            client.send(type_url=rds_type, resource_names=["rds_config"])
            rds = client.recv(60)
            first_response[api] = (time.perf_counter() - t0, len(cds.resources), len(rds.resources))
            if api == "v3":
                v3_served = rss_mb(daemon.proc.pid)
        both = rss_mb(daemon.proc.pid)
        return {
            "workers": workers,
            "startup_s": startup,
            "idle": idle,
            "v3": v3_served,
            "both": both,
            "first_response": first_response,
        }
    finally:
        for client in clients:
            client.close()
        daemon.stop()


def build_cost(workers: int, rounds: int = 5) -> dict:
    ws = tuple(
        Worker(id=f"w{i}", host=HOST, port=10000 + i % 50000, envoy_prefix=f"/worker/w{i}")
        for i in range(workers)
    )
    state = RegistryState(ws, Upstream(HOST, 8123), "rds_config")
    out: dict[str, list[float]] = {"cold_v3": [], "cold_v2": [], "one_change_v3": []}
    sizes = {}
    for _round in range(rounds):
        for key, flavour in (("cold_v3", V3), ("cold_v2", V2)):
            t0 = time.perf_counter()
            snap = Snapshot(state, new_encoders())
            for url in (flavour.cluster_type, flavour.route_type):
                res = ResourceSet(snap.resources(url))
                payload = encode_response(res.version, "1", url, res)
                sizes[(key, url)] = len(payload)
            out[key].append((time.perf_counter() - t0) * 1000)
        encoders = new_encoders()
        warm = Snapshot(state, encoders)
        warm.resources(V3.cluster_type), warm.resources(V3.route_type)
        changed = RegistryState(
            (*ws[:-1], Worker(id="zz", host=HOST, port=1, envoy_prefix="/worker/zz")),
            state.web_api,
            "rds_config",
        )
        t0 = time.perf_counter()
        snap = Snapshot(changed, encoders)
        for url in (V3.cluster_type, V3.route_type):
            res = ResourceSet(snap.resources(url))
            encode_response(res.version, "1", url, res)
        out["one_change_v3"].append((time.perf_counter() - t0) * 1000)
    # One change as it goes to one Envoy: full-state CDS vs delta CDS (only the new cluster).
    changed_set = ResourceSet(snap.resources(V3.cluster_type))
    new_cluster = changed_set.by_name["worker_zz"]
    delta = encode_delta_response(changed_set.version, "2", V3.cluster_type, [new_cluster], [])
    return {
        "workers": workers,
        **{k: statistics.median(v) for k, v in out.items()},
        "cds_bytes": sizes[("cold_v3", V3.cluster_type)],
        "rds_bytes": sizes[("cold_v3", V3.route_type)],
        "delta_cds_bytes": len(delta),
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(results: dict) -> str:
    lines = [
        "# dhxds benchmark",
        "",
        f"Generated by `bench/xds_bench.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f", "
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Envoy {ENVOY_MAIN}. Not asserted anywhere.",
        f"Load average when it started: {results['load_before']}; when it ended: "
        f"{results['load_after']} (the machine is shared: other test suites may run meanwhile); "
        f"niceness {results['nice']}.",
        "",
        "## Registration to first routed request",
        "",
        "Time from `PUT /v1/workers/<id>` returning to the first request through Envoy that",
        "reaches the new worker's own backend (polled every ~1 ms on one keep-alive connection).",
        "Targets: p99 <= 50 ms, and no request ever answered 503.",
        "",
        "| transport | workers before | registrations | p50 ms | p90 ms | p99 ms | max ms | "
        "answers while waiting | CDS rejected | change->ACK mean ms (cds, rds) | "
        "Envoy apply P50/P99 ms (cds; rds) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["latency"]:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["answers"].items()))
        lines.append(
            f"| {r['mode']} | {r['preregistered']} | {r['count']} | {r['p50']:.1f} | "
            f"{r['p90']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {answers} | {r['cds_rejected']} | "
            f"{r['change_to_ack_ms'].get('cds', 0):.0f}, "
            f"{r['change_to_ack_ms'].get('rds', 0):.0f} | "
            f"{r['envoy_update_ms'].get('cds', '?')}; {r['envoy_update_ms'].get('rds', '?')} |"
        )
    lines += [
        "",
        "## Burst: routes while registrations keep coming",
        "",
        "60 registrations 15 ms apart; an ADS client ACKs each response 40 ms after receiving",
        "it. Per worker: PUT sent -> its route on the stream. Goal (issue 9): every route within",
        "500 ms (before the rework: p50 1.8 s, max 2.4 s, none during the burst).",
        "",
        "| workers before | registrations | p50 ms | p99 ms | max ms | routed during the burst | "
        "RDS responses |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in results["burst"]:
        lines.append(
            f"| {b['preregistered']} | {b['count']} | {b['p50']:.0f} | {b['p99']:.0f} | "
            f"{b['max']:.0f} | {b['during_burst']} of {b['count']} | {b['route_responses']} |"
        )
    lines += [
        "",
        "`change->ACK` is dhxds_push_latency_seconds: from the registry change to Envoy's ACK of",
        "the CDS response, and of the RDS response that waits for that ACK (make-before-break).",
        "`Envoy apply` is Envoy's own cluster_manager.cds / rds update_duration. Full-state",
        "(SotW) CDS resends every cluster and RDS the whole route table (3 routes per worker), so",
        "Envoy's share grows with the number of workers; the daemon's own share is the",
        "`one change` column below plus one gRPC write.",
        "",
        "## Daemon memory (RSS, MB)",
        "",
        "Workers loaded from the state file; then a v3 ADS client and a v2 ADS client each receive",
        "full CDS + RDS. Target: <= 250 MB at 10,000 workers.",
        "",
        "| workers | startup s | idle | after v3 CDS+RDS | after v3 + v2 | peak (VmHWM) | "
        "first CDS+RDS v3 s | first CDS+RDS v2 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in results["memory"]:
        lines.append(
            f"| {m['workers']} | {m['startup_s']:.1f} | {m['idle'][0]:.0f} | {m['v3'][0]:.0f} | "
            f"{m['both'][0]:.0f} | {m['both'][1]:.0f} | {m['first_response']['v3'][0]:.2f} | "
            f"{m['first_response']['v2'][0]:.2f} |"
        )
    lines += [
        "",
        "## Building and serialising CDS + RDS (in process, median of 5)",
        "",
        "Target: <= 500 ms for 10,000 workers.",
        "",
        "| workers | cold v3 ms | cold v2 ms | one change, v3 ms | CDS bytes | RDS bytes | "
        "delta CDS bytes for one new worker (share of full CDS) |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in results["build"]:
        lines.append(
            f"| {b['workers']} | {b['cold_v3']:.0f} | {b['cold_v2']:.0f} | "
            f"{b['one_change_v3']:.1f} | "
            f"{b['cds_bytes']:,} | {b['rds_bytes']:,} | "
            f"{b['delta_cds_bytes']:,} ({100 * b['delta_cds_bytes'] / b['cds_bytes']:.3f} %) |"
        )
    lines += [
        "",
        "With `envoy_xds_delta: true` a registration sends Envoy one cluster instead of all of",
        "them; the route configuration is still sent whole (3 routes per worker), which is what",
        "the route-layout work of issue 10 is about.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=200)
    parser.add_argument("--preregistered", type=int, default=1000)
    parser.add_argument("--modes", default="ads,separate")
    parser.add_argument("--output", default=str(ROOT / "reports" / "xds-bench.md"))
    parser.add_argument("--registry-workers", type=int, default=10000, help="0: skip")
    args = parser.parse_args()
    results: dict = {
        "latency": [],
        "burst": [],
        "memory": [],
        "build": [],
        "load_before": load_average(),
        "nice": os.nice(0),
    }
    with tempfile.TemporaryDirectory(prefix="xds-bench-") as tmp:
        for mode in args.modes.split(","):
            workdir = Path(tmp) / f"latency-{mode}"
            workdir.mkdir()
            print(
                f"latency: {mode}, {args.preregistered} workers, {args.registrations} registrations"
            )
            results["latency"].append(
                registration_latency(workdir, mode, args.preregistered, args.registrations)
            )
            print(results["latency"][-1])
        for workers in (args.preregistered,):
            workdir = Path(tmp) / f"burst-{workers}"
            workdir.mkdir()
            results["burst"].append(burst_propagation(workdir, workers))
            print(results["burst"][-1])
        for workers in (1000, 10000):
            workdir = Path(tmp) / f"memory-{workers}"
            workdir.mkdir()
            results["memory"].append(daemon_memory(workdir, workers))
            print(results["memory"][-1])
        if args.registry_workers:
            results["registry"] = registry_writes(Path(tmp) / "registry", args.registry_workers)
            print(results["registry"])
    for workers in (1000, 10000):
        results["build"].append(build_cost(workers))
        print(results["build"][-1])
    results["load_after"] = load_average()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    registry = registry_report(results["registry"]) if "registry" in results else []
    output.write_text(report(results) + "".join(line + "\n" for line in registry))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
