"""The issue 10 benchmark: dhxds at fleet scale, with real processes, every figure next to its
target. Run it with `bench/run` (or `bench/run --quick` for a smoke run of about a minute).

Writes reports/fleet-bench.md and reports/fleet-bench.json, and (full runs) a dated copy
docs/benchmarks/xds-<date>.md. Numbers only; nothing is asserted.

Processes: one real `dhxds serve` holding N workers (imported from a JSON state file), real
Envoy (testkit binaries, the envoy role's own bootstrap, delta ADS), small HTTP backends that
answer with their own name (each new worker has its own port, so a wrong-worker answer is
seen), a process of simulated delta-ADS Envoys (bench/xds_fanout.py) and sovereign
(bench/sovereign_peer.py). Everything is on 127.0.0.1, ephemeral ports, stopped by PID.

Two route layouts are measured side by side: "delta" (every Envoy holds every worker cluster
and the route table, delta ADS) and "on-demand" (envoy_xds_on_demand: a fixed route table,
only web_api_service up front, a worker's cluster fetched by the first request naming it:
ODCDS over delta ADS). The on-demand sections are named od-<section>; at 10,000 workers they
run on a daemon of their own (fresh, so its RSS is that of an on-demand fleet).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import requests
from common import PortEcho, load_average, rss_mb, write_state
from dhops_testkit import (
    CDS_TYPE,
    ENVOY_MAIN,
    HOST,
    RDS_TYPE,
    TOKEN,
    Daemon,
    Envoy,
    XdsClient,
    open_ads,
    stop_process,
    wait_for,
)
from report import markdown, summary

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
DELTA_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


ON_DEMAND_SECTIONS = (
    "od-latency",
    "od-put",
    "od-throughput",
    "od-bytes",
    "od-burst",
    "od-fanout",
    "od-sovereign",
)
ON_DEMAND_META = {"dhxds_on_demand": True}  # the node metadata the envoy role sets


@dataclass
class Profile:
    """How much of everything a run does (full: the issue's sizes; quick: a smoke run)."""

    small: int = 1000
    large: int = 10000
    registrations: int = 50
    puts: int = 200
    burst: int = 1000
    burst_window_s: float = 1.0
    streams: int = 500
    fanout_changes: int = 5
    throughput_s: float = 3.0
    sovereign_new: int = 50
    budget_s: float = 14 * 60  # the fan-out does fewer changes rather than run past this
    sections: set[str] = field(
        default_factory=lambda: {
            "latency",
            "memory",
            "throughput",
            "bytes",
            "put",
            "burst",
            "fanout",
            "sovereign",
            *ON_DEMAND_SECTIONS,
        }
    )


FULL = Profile()
QUICK = Profile(
    small=100,
    large=1000,
    registrations=10,
    puts=30,
    burst=100,
    burst_window_s=0.5,
    streams=20,
    fanout_changes=2,
    throughput_s=1.0,
    sovereign_new=5,
    budget_s=5 * 60,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Fleet:
    """A dhxds daemon holding `workers` pre-registered workers (sharing a pool of backend
    ports), the backends, and Envoys attached to it."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir
        self.workers = workers
        self.backends = PortEcho()
        self.envoys: list[Envoy] = []
        self.daemon: Daemon | None = None
        self.new_ports: dict[str, int] = {}

    def start(self) -> Fleet:
        web_port = self.backends.start("web_api_service")
        pool = [self.backends.start(f"pool{i}") for i in range(20)]
        self.daemon = Daemon(self.workdir, web_port, {"log_level": "WARNING"})
        write_state(self.daemon.state_path, self.workers, pool)
        t0 = time.perf_counter()
        self.daemon.start()
        self.daemon_start_s = time.perf_counter() - t0
        return self

    def envoy(self, on_demand: bool = False, **role_vars) -> tuple[Envoy, float]:
        """A started delta-ADS Envoy holding every worker cluster, and the seconds from its
        start to that point (/ready, then all clusters active). `on_demand`: an Envoy of the
        on-demand layout (envoy_xds_on_demand), which holds no worker cluster until a request
        names it; ready = /ready and its fixed routes answering with web_api_service."""
        role_vars.setdefault("envoy_xds_delta", True)
        role_vars.setdefault("envoy_worker_cluster_stats", False)
        if on_demand:
            role_vars.setdefault("envoy_xds_on_demand", True)
        envoy = Envoy(ENVOY_MAIN, self.workdir, self.daemon.xds_port, "ads", **role_vars)
        self.envoys.append(envoy)
        t0 = time.perf_counter()
        envoy.start()
        if on_demand:
            wait_for(
                lambda: envoy.backend_of("/") == "web_api_service", 60, "the fixed routes in Envoy"
            )
        else:
            wait_for(
                lambda: envoy.stat("cluster_manager.active_clusters") >= self.workers,
                180,
                "every worker cluster in Envoy",
            )
        return envoy, time.perf_counter() - t0

    def drop(self, envoy: Envoy) -> None:
        envoy.stop()
        self.envoys.remove(envoy)

    def new_backend(self, worker_id: str) -> int:
        port = self.backends.start(worker_id)
        self.new_ports[worker_id] = port
        return port

    def stop(self) -> None:
        for envoy in self.envoys:
            envoy.stop()
        if self.daemon:
            self.daemon.stop()
        self.backends.close()


def classify(resp: requests.Response, port: int, old_ports: tuple[int, ...] = ()) -> str:
    """new (the new worker answered), web_api (route not there yet: allowed), old (the worker's
    previous backend, for a replaced worker: allowed), wrong (another worker answered), or
    the HTTP status of a non-200."""
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}"
    body = resp.json()
    if body["port"] == port:
        return "new"
    if body["port"] in old_ports:
        return "old"
    return "web_api" if body["backend"] == "web_api_service" else "wrong"


def put_to_routed(
    daemon: Daemon,
    envoy: Envoy,
    worker_id: str,
    port: int,
    answers: Counter,
    timeout=30,
    old_ports: tuple[int, ...] = (),
):
    """PUT sent -> first request through `envoy` answered by the new worker (ms), and the PUT's
    own latency (ms). Probes on one keep-alive connection, ~1 ms apart. `old_ports`: the
    worker exists already (a replace) and answered from these ports before."""
    session = requests.Session()
    url = f"{envoy.url}/worker/{worker_id}/probe"
    t0 = time.perf_counter()
    resp = daemon.call("PUT", f"/v1/workers/{worker_id}", {"host": HOST, "port": port})
    put_ms = (time.perf_counter() - t0) * 1000
    assert resp.status_code == (200 if old_ports else 201), resp.text
    deadline = t0 + timeout
    while True:
        kind = classify(session.get(url, timeout=5), port, old_ports)
        now = time.perf_counter()
        answers[kind] += 1
        if kind == "new":
            return (now - t0) * 1000, put_ms
        if now > deadline:
            raise RuntimeError(f"{worker_id} not routable after {timeout} s")
        time.sleep(0.001)


def latency(fleet: Fleet, envoy: Envoy, count: int, tag: str, layout: str = "delta") -> dict:
    answers: Counter[str] = Counter()
    routed, puts = [], []
    for i in range(count):
        worker_id = f"{tag}{i}"
        port = fleet.new_backend(worker_id)
        r, p = put_to_routed(fleet.daemon, envoy, worker_id, port, answers)
        routed.append(r)
        puts.append(p)
    return {
        "workers": fleet.workers,
        "layout": layout,
        "put_to_routed_ms": summary(routed),
        "put_ms": summary(puts),
        "answers": dict(answers),
        "status_5xx": sum(v for k, v in answers.items() if k.startswith("HTTP 5")),
        "wrong_worker": answers["wrong"],
        "web_api": answers["web_api"],
        "raw_ms": routed,
    }


def envoy_memory(envoy: Envoy) -> dict:
    status = rss_mb(envoy.proc.pid)
    mem = requests.get(f"http://{HOST}:{envoy.admin_port}/memory", timeout=10).json()
    stats = requests.get(f"http://{HOST}:{envoy.admin_port}/stats?format=json", timeout=30)
    return {
        "rss_mb": status[0],
        "peak_mb": status[1],
        "allocated_mb": int(mem["allocated"]) / 2**20,
        "heap_mb": int(mem["heap_size"]) / 2**20,
        "stats_count": len(stats.json().get("stats", [])),
    }


def route_order(envoy: Envoy) -> list[str]:
    """The clusters of Envoy's active route table, in match order (empty for a matcher)."""
    dump = requests.get(
        f"http://{HOST}:{envoy.admin_port}/config_dump?resource=dynamic_route_configs",
        timeout=60,
    ).json()
    out = []
    for config in dump.get("configs", []):
        for vh in config.get("route_config", {}).get("virtual_hosts", []):
            for route in vh.get("routes", []):
                cluster = route.get("route", {}).get("cluster", "")
                if cluster.startswith("worker_") and cluster not in out:
                    out.append(cluster)
    return out


async def _hammer(url: str, seconds: float, connections: int = 8) -> tuple[int, int]:
    ok = bad = 0
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one() -> None:
            nonlocal ok, bad
            while time.perf_counter() < stop:
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status == 200:
                        ok += 1
                    else:
                        bad += 1

        await asyncio.gather(*(one() for _connection in range(connections)))
    return ok, bad


THROUGHPUT_ROUNDS = 5


def throughput(fleet: Fleet, envoy: Envoy, seconds: float, layout: str = "delta") -> dict:
    order = route_order(envoy)
    first, last = (
        (order[0], order[-1]) if order else ("worker_pre0", f"worker_pre{fleet.workers - 1}")
    )
    ids = [c.removeprefix("worker_") for c in (first, last)]
    for worker_id in ids:  # an on-demand Envoy fetches the cluster now, not in the count
        requests.get(f"{envoy.url}/worker/{worker_id}/t", timeout=30)
    rps: dict[str, list[float]] = {ids[0]: [], ids[1]: []}
    # Short rounds, alternating, and the median of the per-round ratios: the Python client
    # is the bottleneck on this shared box, so a load change must hit both ids alike.
    span = seconds / 2
    for _round in range(THROUGHPUT_ROUNDS):
        for worker_id in ids:
            ok, _bad = asyncio.run(_hammer(f"{envoy.url}/worker/{worker_id}/t", span))
            rps[worker_id].append(ok / span)
    first_rps, last_rps = (statistics.median(rps[i]) for i in ids)
    ratios = [b / a for a, b in zip(rps[ids[0]], rps[ids[1]], strict=True)]
    return {
        "workers": fleet.workers,
        "layout": layout,
        "first": ids[0],
        "last": ids[1],
        "ordered_routes": len(order),
        "first_rps": first_rps,
        "last_rps": last_rps,
        "ratio": statistics.median(ratios),
        "round_ratios": ratios,
    }


def _ack(client: XdsClient, resp, delta: bool) -> None:
    if delta:
        client.send(type_url=resp.type_url, response_nonce=resp.nonce)
    else:
        names = ["rds_config"] if resp.type_url == RDS_TYPE else []
        client.ack(resp, resource_names=names)


def _sync(client: XdsClient, delta: bool, quiet: float) -> Counter:
    """Receive and ACK (as Envoy does) until nothing comes for `quiet` seconds; the bytes
    received per type."""
    size: Counter[str] = Counter()
    while True:
        try:
            resp = client.recv(quiet)
        except AssertionError:
            return size
        size[resp.type_url] += resp.ByteSize()
        _ack(client, resp, delta)


def bytes_per_change(fleet: Fleet) -> dict:
    """One new worker: what a state-of-the-world ADS stream and a delta ADS stream receive
    (each ACKs every response, as Envoy does)."""
    daemon = fleet.daemon
    sotw = open_ads(daemon, "bytes-sotw")
    delta = XdsClient(daemon.xds_port, DELTA_ADS, delta=True)
    try:
        delta.send(node={"id": "bytes-delta", "cluster": "front"}, type_url=CDS_TYPE)
        delta.send(type_url=RDS_TYPE, resource_names_subscribe=["rds_config"])
        initial = {
            name: _sync(c, name == "delta", 3.0) for name, c in (("sotw", sotw), ("delta", delta))
        }
        fleet.daemon.put_worker("bytesprobe", 9)
        sent = {
            name: _sync(c, name == "delta", 2.0) for name, c in (("sotw", sotw), ("delta", delta))
        }
        out = {
            "workers": fleet.workers,
            "sotw_cds": sent["sotw"][CDS_TYPE],
            "sotw_rds": sent["sotw"][RDS_TYPE],
            "delta_cds": sent["delta"][CDS_TYPE],
            "delta_rds": sent["delta"][RDS_TYPE],
            "initial_sotw_cds": initial["sotw"][CDS_TYPE],
            "initial_sotw_rds": initial["sotw"][RDS_TYPE],
            "initial_delta_cds": initial["delta"][CDS_TYPE],
            "initial_delta_rds": initial["delta"][RDS_TYPE],
        }
        out["sotw_total"] = out["sotw_cds"] + out["sotw_rds"]
        out["delta_total"] = out["delta_cds"] + out["delta_rds"]
        return out
    finally:
        sotw.close()
        delta.close()


def bytes_on_demand(fleet: Fleet, subscribed: str = "pre5") -> dict:
    """What an on-demand client (a raw delta ADS stream whose node metadata sets
    dhxds_on_demand, ACKing like Envoy) receives for (1) a registration it did not ask for and
    (2) a change of a worker it subscribed by name (ODCDS), next to a state-of-the-world
    stream on the same daemon (today's full state per change)."""
    daemon = fleet.daemon
    sotw = open_ads(daemon, "bytes-od-sotw")
    od = XdsClient(daemon.xds_port, DELTA_ADS, delta=True)
    name = f"worker_{subscribed}"
    try:
        node = {"id": "bytes-on-demand", "cluster": "front", "metadata": ON_DEMAND_META}
        od.send(node=node, type_url=CDS_TYPE)
        od.send(type_url=RDS_TYPE, resource_names_subscribe=["rds_config"])
        initial = {n: _sync(c, n == "od", 3.0) for n, c in (("sotw", sotw), ("od", od))}
        daemon.put_worker("odbytesprobe", 9)  # a registration nobody asked for
        added = {n: _sync(c, n == "od", 2.0) for n, c in (("sotw", sotw), ("od", od))}
        od.send(type_url=CDS_TYPE, resource_names_subscribe=[name])  # what Envoy's ODCDS asks
        subscribe = _sync(od, True, 2.0)
        daemon.put_worker(subscribed, 10)  # a change of the subscribed worker (new port)
        changed = {n: _sync(c, n == "od", 2.0) for n, c in (("sotw", sotw), ("od", od))}
        out = {"workers": fleet.workers, "layout": "on-demand", "subscribed": name}
        for key, got in (("initial", initial), ("register", added), ("change", changed)):
            for who in ("sotw", "od"):
                out[f"{key}_{who}_cds"] = got[who][CDS_TYPE]
                out[f"{key}_{who}_rds"] = got[who][RDS_TYPE]
                out[f"{key}_{who}_total"] = got[who][CDS_TYPE] + got[who][RDS_TYPE]
        out["subscribe_od_cds"] = subscribe[CDS_TYPE]
        out["subscribe_od_total"] = sum(subscribe.values())
        return out
    finally:
        sotw.close()
        od.close()


def put_latency(fleet: Fleet, count: int, layout: str = "delta") -> dict:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    ms = []
    for i in range(count):
        t0 = time.perf_counter()
        resp = session.put(
            f"{fleet.daemon.api}/v1/workers/putlat{i}", json={"host": HOST, "port": 9}
        )
        ms.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 201, resp.text
    return {"workers": fleet.workers, "layout": layout, "put_ms": summary(ms)}


def daemon_pushes(daemon: Daemon) -> float:
    total = 0.0
    for line in daemon.call("GET", "/metrics").text.splitlines():
        if line.startswith("dhxds_pushes_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _burst(
    fleet: Fleet, envoy: Envoy, ids: list[str], window: float, returned_only: bool = False
) -> dict:
    """`returned_only`: the sweeper asks only for workers whose PUT has returned (an
    on-demand Envoy holds a request for a worker not registered yet for dhxds' grace, then
    answers 503: asking before the PUT returned would measure that, not the layout)."""
    ports = {w: fleet.new_ports[w] for w in ids}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    routed: dict[str, float] = {}
    answers: Counter[str] = Counter()
    put_done: list[float] = []
    returned: set[str] = set()
    all_sent = asyncio.Event()
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as api,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as probe,
    ):

        async def put(i: int, worker_id: str, start: float) -> None:
            await asyncio.sleep(max(0.0, start + i * window / len(ids) - time.perf_counter()))
            body = {"host": HOST, "port": ports[worker_id]}
            async with api.put(
                f"{fleet.daemon.api}/v1/workers/{worker_id}", json=body, headers=headers
            ) as resp:
                assert resp.status == 201, await resp.text()
            put_done.append(time.perf_counter())
            returned.add(worker_id)

        async def sweeper() -> None:
            pending = list(ids)
            sem = asyncio.Semaphore(8)

            async def check(worker_id: str) -> None:
                async with sem, probe.get(f"{envoy.url}/worker/{worker_id}/b") as resp:
                    if resp.status != 200:
                        answers[f"HTTP {resp.status}"] += 1
                        return
                    body = await resp.json()
                    if body["port"] == ports[worker_id]:
                        routed.setdefault(worker_id, time.perf_counter())
                    else:
                        answers["web_api" if body["backend"] == "web_api_service" else "wrong"] += 1

            deadline = time.perf_counter() + 120
            while pending and time.perf_counter() < deadline:
                # only workers whose PUT has been sent can be routable
                if returned_only:
                    batch = [w for w in pending if w in returned]
                else:
                    batch = pending[: len(put_done) + 8] if not all_sent.is_set() else pending
                await asyncio.gather(*(check(w) for w in batch))
                pending = [w for w in pending if w not in routed]
                await asyncio.sleep(0.005)

        start = time.perf_counter()
        sweep = asyncio.create_task(sweeper())
        await asyncio.gather(*(put(i, w, start) for i, w in enumerate(ids)))
        all_sent.set()
        await sweep
    last_put = max(put_done)
    return {
        "count": len(ids),
        "put_span_s": last_put - start,
        "routed": len(routed),
        "all_routable_after_last_put_ms": (max(routed.values()) - last_put) * 1000
        if len(routed) == len(ids)
        else float("nan"),
        "answers": dict(answers),
    }


def envoy_stat(envoy: Envoy, name: str) -> int:
    """Envoy's admin API shares its main thread with applying xDS updates, so it can be slow
    to answer right after a run of route updates."""
    return envoy.stat(name, timeout=120)


def burst(fleet: Fleet, envoy: Envoy, count: int, window: float, layout: str = "delta") -> dict:
    on_demand = layout == "on-demand"
    ids = [f"{'odburst' if on_demand else 'burst'}{i}" for i in range(count)]
    for worker_id in ids:
        fleet.new_backend(worker_id)
    t0 = time.perf_counter()
    cds0 = envoy_stat(envoy, "cluster_manager.cds.update_success")
    settle_s = time.perf_counter() - t0  # Envoy still busy with earlier updates
    rds0 = envoy_stat(envoy, "http.ingress_http.rds.rds_config.update_success")
    pushes0 = daemon_pushes(fleet.daemon)
    out = asyncio.run(_burst(fleet, envoy, ids, window, returned_only=on_demand))
    time.sleep(1)
    out.update(
        workers=fleet.workers,
        layout=layout,
        envoy_cds_updates=envoy_stat(envoy, "cluster_manager.cds.update_success") - cds0,
        envoy_rds_updates=envoy_stat(envoy, "http.ingress_http.rds.rds_config.update_success")
        - rds0,
        envoy_admin_wait_before_s=settle_s,
        daemon_pushes=int(daemon_pushes(fleet.daemon) - pushes0),
    )
    return out


class FanoutHelper:
    """bench/xds_fanout.py in a process of its own: its lines read by a thread, its commands
    written to its stdin."""

    def __init__(self, xds_port: int, streams: int, out_file: Path, *extra: str) -> None:
        self.out_file = out_file
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "xds_fanout.py"),
                "--port",
                str(xds_port),
                "--streams",
                str(streams),
                "--out",
                str(out_file),
                *extra,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.incoming: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [self.incoming.put(x.strip()) for x in self.proc.stdout], daemon=True
        ).start()

    def until(self, line: str, timeout: float) -> bool:
        """Read the helper's lines until `line` (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout
        while line not in self.lines:
            if self.proc.poll() is not None and self.incoming.empty():
                raise RuntimeError(f"fanout helper exited: {self.lines[-3:]}")
            try:
                got = self.incoming.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() > deadline:
                    return False
                continue
            self.lines.append(got)
            if got.startswith(("synced", "status")):
                log(f"fanout: {got}")
        return True

    def command(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_synced(self, simulated: int, timeout: float = 150) -> tuple[int, str | None]:
        """Every stream's initial sync, or how many got it within `timeout` (and why not)."""
        if self.until("ready", timeout):
            return simulated, None
        self.command("status")
        self.until("status", 10)
        status = next((x for x in reversed(self.lines) if x.startswith("status")), "")
        synced = int(status.split("synced=")[1].split()[0]) if status else 0
        stuck = (
            f"{simulated - synced} of {simulated} simulated streams never got their "
            f"initial sync within {timeout:.0f} s ({status})"
        )
        log(f"fanout: {stuck}; measuring the {synced} that did")
        self.command(f"expect {synced}")
        return synced, stuck

    def finish(self) -> dict:
        self.proc.stdin.close()
        self.proc.wait(60)
        return json.loads(self.out_file.read_text())

    def stop(self) -> None:
        stop_process(self.proc)


def _per_stream_ms(data: dict, sent: dict[str, float]) -> list[float]:
    """Per change and stream: the change sent -> the stream's last response naming it."""
    per_stream = []
    for key in sent:
        latest: dict[int, float] = {}
        for _kind, stream, t in data["seen"][key]:
            latest[stream] = max(latest.get(stream, 0.0), t)
        per_stream += [(t - sent[key]) * 1000 for t in latest.values()]
    return per_stream


def _fanout_result(
    fleet: Fleet,
    layout: str,
    simulated: int,
    sent: dict[str, float],
    sync_s: float,
    envoy_ms: list[float],
    data: dict,
    synced: int,
    stuck: str | None,
    **extra: object,
) -> dict:
    per_stream = _per_stream_ms(data, sent)
    return {
        "workers": fleet.workers,
        "layout": layout,
        "streams": simulated + 1,
        "simulated": simulated,
        "envoys": 1,
        "changes": len(sent),
        "initial_sync_s": sync_s,
        "change_ms": summary(per_stream + envoy_ms),
        "envoy_ms": summary(envoy_ms),
        **extra,
        "responses": data["responses"],
        "synced": synced,
        "stuck": stuck,
        "reconnects": data.get("reconnects", 0),
        "stream_errors": data.get("errors", []),
        "missing_samples": len(sent) * simulated - len(per_stream),
    }


def fanout(
    fleet: Fleet, envoy: Envoy, streams: int, changes: int, workdir: Path, deadline: float
) -> dict:
    """`streams - 1` simulated delta-ADS Envoys plus the real one; per change, PUT sent ->
    the stream received it (simulated) or the new worker answers through Envoy (real)."""
    simulated = streams - 1
    ids = [f"fanout{i}" for i in range(changes)]
    helper = FanoutHelper(
        fleet.daemon.xds_port,
        simulated,
        workdir / "fanout.json",
        "--watch",
        ",".join(f"worker_{i}" for i in ids),
    )
    try:
        t0 = time.perf_counter()
        synced, stuck = helper.wait_synced(simulated)
        sync_s = time.perf_counter() - t0
        rss_connected = rss_mb(fleet.daemon.proc.pid)
        sent: dict[str, float] = {}
        envoy_ms = []
        answers: Counter[str] = Counter()
        for worker_id in ids:
            if sent and time.time() > deadline - 90:
                log(f"fanout: time budget spent after {len(sent)} changes")
                break
            port = fleet.new_backend(worker_id)
            sent[f"worker_{worker_id}"] = time.monotonic()
            routed_ms, _put = put_to_routed(
                fleet.daemon, envoy, worker_id, port, answers, timeout=120
            )
            envoy_ms.append(routed_ms)
            if not helper.until(f"all worker_{worker_id}", 60):
                log(f"fanout: not every stream had worker_{worker_id} within 60 s")
            time.sleep(0.3)
        rss_after = rss_mb(fleet.daemon.proc.pid)
        data = helper.finish()
    finally:
        helper.stop()
    return _fanout_result(
        fleet,
        "delta",
        simulated,
        sent,
        sync_s,
        envoy_ms,
        data,
        synced,
        stuck,
        daemon_rss_connected_mb=rss_connected[0],
        daemon_rss_mb=rss_after[0],
        daemon_peak_mb=rss_after[1],
    )


def fanout_on_demand(
    fleet: Fleet, envoy: Envoy, streams: int, changes: int, workdir: Path, deadline: float
) -> dict:
    """The on-demand layout: `streams - 1` simulated on-demand clients (node metadata
    dhxds_on_demand, CDS wildcard + RDS, then one cluster subscribed by name) plus the real
    on-demand Envoy, all holding one common worker (the Envoy: asked for it by a request).
    Per change of that worker (a new port): PUT sent -> the stream received the changed
    cluster (simulated) or the worker's new backend answers through Envoy (real)."""
    simulated = streams - 1
    common = "odcommon"
    ports = [fleet.backends.start(f"{common}-0")]
    fleet.daemon.put_worker(common, ports[0])
    wait_for(lambda: envoy.backend_of(f"/worker/{common}/") == f"{common}-0", 60, "odcommon")
    rss_before = rss_mb(fleet.daemon.proc.pid)
    helper = FanoutHelper(
        fleet.daemon.xds_port,
        simulated,
        workdir / "fanout-on-demand.json",
        "--on-demand",
        "--subscribe",
        f"worker_{common}",
    )
    try:
        t0 = time.perf_counter()
        synced, stuck = helper.wait_synced(simulated)
        sync_s = time.perf_counter() - t0
        rss_connected = rss_mb(fleet.daemon.proc.pid)
        sent: dict[str, float] = {}
        envoy_ms = []
        answers: Counter[str] = Counter()
        for k in range(1, changes + 1):
            if sent and time.time() > deadline - 60:
                log(f"fanout (on demand): time budget spent after {len(sent)} changes")
                break
            tag = f"change{k}"
            ports.append(fleet.backends.start(f"{common}-{k}"))
            helper.command(f"arm {tag} worker_{common}")
            if not helper.until(f"armed {tag}", 30):
                raise RuntimeError("fanout helper did not arm")
            sent[tag] = time.monotonic()
            routed_ms, _put = put_to_routed(
                fleet.daemon,
                envoy,
                common,
                ports[-1],
                answers,
                timeout=120,
                old_ports=tuple(ports[:-1]),
            )
            envoy_ms.append(routed_ms)
            if not helper.until(f"all {tag}", 60):
                log(f"fanout (on demand): not every stream had {tag} within 60 s")
            time.sleep(0.3)
        rss_after = rss_mb(fleet.daemon.proc.pid)
        data = helper.finish()
    finally:
        helper.stop()
    return _fanout_result(
        fleet,
        "on-demand",
        simulated,
        sent,
        sync_s,
        envoy_ms,
        data,
        synced,
        stuck,
        envoy_answers=dict(answers),
        daemon_rss_before_mb=rss_before[0],
        daemon_rss_connected_mb=rss_connected[0],
        daemon_rss_mb=rss_after[0],
        daemon_peak_mb=rss_after[1],
    )


def attempt(results: dict, name: str, fn, *args) -> object | None:
    """Run one section; a failure is recorded in results["errors"] and the run goes on (every
    process of the section is stopped by its own finally blocks)."""
    try:
        return fn(*args)
    except Exception as exc:  # report it, keep the other sections
        results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        log(f"{name} FAILED: {exc}")
        return None


def run_large(workdir: Path, profile: Profile, results: dict, deadline: float) -> None:
    """Every 10,000-worker section on one daemon, in an order where each leaves the next a
    clean state: Envoy memory (stats on, then the kept stats-off Envoy), latency,
    throughput, bytes, PUT latency, burst, then 500 streams."""
    n = profile.large
    sections = profile.sections
    if not sections & {"memory", "latency", "throughput", "bytes", "put", "burst", "fanout"}:
        return
    fleet = Fleet(workdir / f"fleet-{n}", n).start()
    log(f"daemon with {n} workers up in {fleet.daemon_start_s:.1f} s")

    def run(name: str, fn, *args) -> None:
        if name in sections:
            value = attempt(results, f"{name} ({n:,} workers)", fn, *args)
            if value is not None:
                if name == "latency":
                    results["latency"].append(value)
                else:
                    results[name] = value
                log(f"{name}: {value.get('put_to_routed_ms', value)}")

    try:
        mem: dict = {"workers": n}
        if "memory" in sections:
            env_on, ready_on = fleet.envoy(envoy_worker_cluster_stats=True)
            mem["stats_on"] = {**envoy_memory(env_on), "ready_s": ready_on}
            env_on.stop()
            fleet.envoys.remove(env_on)
            log(f"Envoy, per-cluster stats on: {mem['stats_on']}")
        envoy, ready_off = fleet.envoy()
        mem["stats_off"] = {**envoy_memory(envoy), "ready_s": ready_off}
        log(f"Envoy, per-cluster stats off: {mem['stats_off']}")
        if "memory" in sections:
            results["envoy_memory"] = mem
        run("latency", latency, fleet, envoy, profile.registrations, "lat")
        run("throughput", throughput, fleet, envoy, profile.throughput_s)
        run("bytes", bytes_per_change, fleet)
        run("put", put_latency, fleet, profile.puts)
        run("burst", burst, fleet, envoy, profile.burst, profile.burst_window_s)
        run(
            "fanout",
            fanout,
            fleet,
            envoy,
            profile.streams,
            profile.fanout_changes,
            workdir,
            deadline,
        )
    finally:
        fleet.stop()


def run_large_on_demand(workdir: Path, profile: Profile, results: dict, deadline: float) -> None:
    """The on-demand layout's 10,000-worker sections, on a daemon of their own with only
    on-demand clients: latency, throughput, burst, 500 streams, then bytes (last: its
    state-of-the-world stream for comparison makes the daemon build the full state)."""
    n = profile.large
    sections = profile.sections
    if not sections & {
        "od-latency",
        "od-put",
        "od-throughput",
        "od-bytes",
        "od-burst",
        "od-fanout",
    }:
        return
    fleet = Fleet(workdir / f"fleet-{n}-on-demand", n).start()
    log(f"on-demand: daemon with {n} workers up in {fleet.daemon_start_s:.1f} s")
    od = results.setdefault("on_demand", {})

    def run(name: str, fn, *args) -> None:
        if name in sections:
            value = attempt(results, f"{name} ({n:,} workers, on-demand layout)", fn, *args)
            if value is not None:
                key = name.removeprefix("od-")
                if key == "latency":
                    od.setdefault("latency", []).append(value)
                else:
                    od[key] = value
                log(f"{name}: {value.get('put_to_routed_ms', value)}")

    try:
        envoy, ready = fleet.envoy(on_demand=True)
        od["envoy"] = {
            "workers": n,
            "ready_s": ready,
            "daemon_rss_mb": rss_mb(fleet.daemon.proc.pid)[0],
            **envoy_memory(envoy),
        }
        log(f"on-demand Envoy: {od['envoy']}")
        run("od-latency", latency, fleet, envoy, profile.registrations, "odlat", "on-demand")
        run("od-put", put_latency, fleet, profile.puts, "on-demand")
        run("od-throughput", throughput, fleet, envoy, profile.throughput_s, "on-demand")
        run("od-burst", burst, fleet, envoy, profile.burst, profile.burst_window_s, "on-demand")
        run(
            "od-fanout",
            fanout_on_demand,
            fleet,
            envoy,
            profile.streams,
            profile.fanout_changes,
            workdir,
            deadline,
        )
        run("od-bytes", bytes_on_demand, fleet)
    finally:
        fleet.stop()


def run_small(workdir: Path, profile: Profile, results: dict) -> None:
    """The latency at the small size: the delta layout, then (its Envoy stopped) an on-demand
    Envoy on the same daemon."""
    fleet = Fleet(workdir / f"fleet-{profile.small}", profile.small).start()
    try:
        if "latency" in profile.sections:
            envoy, _ready = fleet.envoy()
            results["latency"].append(latency(fleet, envoy, profile.registrations, "lat"))
            log(f"latency at {profile.small}: {results['latency'][-1]['put_to_routed_ms']}")
            fleet.drop(envoy)
        if profile.sections & {"od-latency", "od-sovereign"}:
            envoy, _ready = fleet.envoy(on_demand=True)
            value = latency(fleet, envoy, profile.registrations, "odlat", "on-demand")
            results.setdefault("on_demand", {}).setdefault("latency", []).append(value)
            log(f"on-demand latency at {profile.small}: {value['put_to_routed_ms']}")
    finally:
        fleet.stop()


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections (default: all): " + ",".join(sorted(FULL.sections)),
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a size of the profile, e.g. --set streams=100 (see Profile)",
    )
    parser.add_argument("--output-dir", default=str(ROOT / "reports"))
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="measure nothing: write the reports again from a run's fleet-bench.json",
    )
    parser.add_argument(
        "--daemon-src",
        metavar="DIR",
        help="run the daemon from this dhxds source tree (e.g. an older commit's dhxds/src, "
        "via PYTHONPATH) to measure a baseline",
    )
    parser.add_argument(
        "--baseline",
        help="an earlier run's fleet-bench.json: its figures become a 'before' column",
    )
    parser.add_argument(
        "--dated",
        default=None,
        help="also write docs/benchmarks/xds-<date>.md (default: full runs)",
        action=argparse.BooleanOptionalAction,
    )
    args = parser.parse_args(argv)
    baseline = json.loads(Path(args.baseline).read_text()) if args.baseline else None
    if args.render:
        results = json.loads(Path(args.render).read_text())
        write(results, Path(args.output_dir), bool(args.dated), baseline)
        return 0
    if args.daemon_src:
        src = Path(args.daemon_src).resolve()
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    profile = QUICK if args.quick else FULL
    if args.only:
        profile.sections = set(args.only.split(","))
    for item in args.set:
        name, _sep, value = item.partition("=")
        setattr(profile, name, type(getattr(profile, name))(value))
    # SIGTERM (a timeout, a kill by PID) unwinds like Ctrl-C: every process is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    results: dict = {
        "meta": {
            "command": "bench/run" + (" --quick" if args.quick else ""),
            "quick": args.quick,
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}",
            "load_start": load_average(),
            "commit": git_commit()
            + (f" (daemon from {args.daemon_src})" if args.daemon_src else ""),
            "envoy": ENVOY_MAIN,
            "profile": {k: v for k, v in vars(profile).items() if k != "sections"},
        },
        "latency": [],
    }
    log(f"load average {results['meta']['load_start']}; profile {results['meta']['profile']}")
    # 15 minutes in all: the fan-out's changes stop early when the budget runs out
    deadline = started + profile.budget_s
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        if profile.sections & {"latency", "od-latency", "sovereign", "od-sovereign"}:
            attempt(
                results,
                f"latency ({profile.small:,} workers)",
                run_small,
                Path(tmp),
                profile,
                results,
            )
        if profile.sections & {"sovereign", "od-sovereign"}:  # before the 10,000-worker part
            from sovereign_peer import compare

            small = next((x for x in results["latency"] if x["workers"] == profile.small), None)
            od_small = next(
                (
                    x
                    for x in results.get("on_demand", {}).get("latency", [])
                    if x["workers"] == profile.small
                ),
                None,
            )
            peer = compare(Path(tmp), profile.small, profile.sovereign_new, small or od_small)
            peer["ours_layout"] = "delta" if small else "on-demand"
            if od_small is not None:
                peer["ours_on_demand_ms"] = od_small["put_to_routed_ms"]
                peer["ours_on_demand_answers"] = od_small["answers"]
            results["sovereign"] = peer
            log(f"sovereign: {results['sovereign']}")
        attempt(
            results,
            f"{profile.large:,}-worker fleet",
            run_large,
            Path(tmp),
            profile,
            results,
            deadline,
        )
        attempt(
            results,
            f"{profile.large:,}-worker fleet, on-demand layout",
            run_large_on_demand,
            Path(tmp),
            profile,
            results,
            deadline,
        )
    results["meta"]["load_end"] = load_average()
    results["meta"]["wall_s"] = time.time() - started
    dated = args.dated if args.dated is not None else not args.quick
    write(results, Path(args.output_dir), dated, baseline)
    return 0


def write(results: dict, out_dir: Path, dated: bool, baseline: dict | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(results, baseline)
    (out_dir / "fleet-bench.md").write_text(text)
    (out_dir / "fleet-bench.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    log(f"wrote {out_dir / 'fleet-bench.md'} and .json")
    if dated:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        path = ROOT / "docs" / "benchmarks" / f"xds-{day}.md"
        path.write_text(text)
        log(f"wrote {path}")
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
