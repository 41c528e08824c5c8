"""The HA control plane of issue 11 as real processes, for fault tests: a 3-member etcd
cluster, two dhxds replicas sharing one etcd prefix, Envoys with ADS whose `xds_service`
cluster lists both replicas, stand-in workers and web_api_service, and a background load
generator that sends requests through every Envoy the whole time and counts them per phase.

The replicas listen for xDS on the same port of two loopback addresses (127.0.0.1 and
127.0.0.2), so the envoy role's own bootstrap (one `envoy_xds_port`, a list of
`envoy_xds_hosts`) lists both of them unchanged. Everything is stopped by its PID.
"""

from __future__ import annotations

import collections
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from .base import TOKEN, free_port, wait_for
from .etcd import EtcdCluster
from .xds import Backends, Daemon, Envoy

REPLICA_HOSTS = ("127.0.0.1", "127.0.0.2")
# Workers every fault test starts with; the load generator requests them and web_api_service.
BASE_WORKERS = ("w1", "w2", "w3")
PATHS = {**{f"/worker/{w}/": w for w in BASE_WORKERS}, "/": "web_api_service"}


def shared_free_port(hosts: tuple[str, ...] = REPLICA_HOSTS) -> int:
    """A TCP port free on every one of `hosts` (loopback addresses)."""
    for _attempt in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


class Replica(Daemon):
    """A dhxds replica in etcd mode, its xDS port on its own loopback address."""

    def __init__(
        self, name: str, workdir: Path, xds_host: str, xds_port: int, web_api_port: int, etcd
    ) -> None:
        state = {"backend": "etcd", "etcd": {"endpoints": etcd.endpoints, "prefix": "/faults/"}}
        extra = {"state": state, "xds": {"listen": f"{xds_host}:{xds_port}"}}
        super().__init__(workdir, web_api_port, extra=extra)
        self.name = name
        self.xds_host = xds_host
        self.xds_port = xds_port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start without waiting (the daemon itself waits for etcd before serving)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dhxds", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        wait_for(self._healthy, timeout, f"dhxds {self.name} /healthz", interval=0.1)

    def _get(self, path: str) -> Any:
        """GET with a short timeout; None when the replica does not answer with JSON."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            return requests.get(f"{self.api}{path}", headers=headers, timeout=2).json()
        except (requests.RequestException, ValueError):
            return None

    def health(self) -> dict:
        return self._get("/healthz") or {}

    def nodes(self) -> list[dict]:
        return (self._get("/v1/nodes") or {}).get("nodes", [])

    def worker_ids(self) -> set[str]:
        return {w["id"] for w in self.call("GET", "/v1/workers").json()["workers"]}

    def metric(self, name: str) -> float:
        for line in self.call("GET", "/metrics").text.splitlines():
            key, _sep, value = line.rpartition(" ")
            if key == name:
                return float(value)
        return 0.0


def etcd_status(member) -> dict:
    """A member's /v3/maintenance/status (through etcd's gRPC gateway)."""
    return requests.post(f"{member.client_url}/v3/maintenance/status", json={}, timeout=2).json()


def etcd_make_leader(etcd, index: int) -> None:
    """Move the raft leadership to member `index` (etcdctl move-leader), and wait for it."""
    target = etcd.members[index]
    target_id = etcd_status(target)["header"]["member_id"]

    def moved() -> bool:
        statuses = [etcd_status(m) for m in etcd.members]
        if all(s["leader"] == target_id for s in statuses):
            return True
        leader = next(
            m
            for m, s in zip(etcd.members, statuses, strict=True)
            if s["header"]["member_id"] == s["leader"]
        )
        requests.post(
            f"{leader.client_url}/v3/maintenance/transfer-leadership",
            json={"targetID": target_id},
            timeout=10,
        )
        return False

    wait_for(moved, 30, f"etcd leadership on {target.name}", interval=0.2)


# --- load ------------------------------------------------------------------------------------
@dataclass
class Tally:
    sent: int = 0
    failed: int = 0
    kinds: collections.Counter = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed, "failures": dict(self.kinds)}


class LoadGen:
    """One thread per Envoy, each cycling through `paths` ({path: expected backend}) with a
    short pause; every answer that is not a 200 from the expected backend is a failure. Counts
    are kept per phase (`phase(name)`) and per Envoy; an Envoy can be paused (e.g. while it
    is restarted on purpose and probed by the test itself)."""

    def __init__(self, envoys: dict[str, Envoy], paths: dict[str, str], pause: float = 0.01):
        self.envoys = envoys
        self.paths = paths
        self.pause_s = pause
        self.current = "idle"
        self.tallies: dict[str, dict[str, Tally]] = collections.defaultdict(
            lambda: collections.defaultdict(Tally)
        )
        self.paused: set[str] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(name,), daemon=True) for name in envoys
        ]

    def start(self) -> LoadGen:
        for thread in self.threads:
            thread.start()
        return self

    def phase(self, name: str) -> None:
        with self.lock:
            self.current = name

    def pause(self, envoy: str) -> None:
        with self.lock:
            self.paused.add(envoy)

    def resume(self, envoy: str) -> None:
        with self.lock:
            self.paused.discard(envoy)

    def counts(self, phase: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {envoy: t.as_dict() for envoy, t in self.tallies.get(phase, {}).items()}

    def totals(self, phase: str) -> tuple[int, int]:
        counts = self.counts(phase).values()
        return sum(c["sent"] for c in counts), sum(c["failed"] for c in counts)

    def _run(self, name: str) -> None:
        envoy = self.envoys[name]
        session = requests.Session()
        i = 0
        while not self._stop.is_set():
            with self.lock:
                paused = name in self.paused
                cycle = list(self.paths.items())
            if paused:
                time.sleep(0.05)
                continue
            path, expected = cycle[i % len(cycle)]
            i += 1
            kind = None
            try:
                resp = session.get(envoy.url + path, timeout=5)
                if resp.status_code != 200:
                    kind = f"HTTP {resp.status_code}"
                elif resp.json().get("backend") != expected:
                    kind = f"wrong backend {resp.json().get('backend')}"
            except requests.RequestException as exc:
                kind = type(exc).__name__
                session = requests.Session()
            except ValueError:
                kind = "not JSON"
            with self.lock:
                if name in self.paused:
                    continue  # paused while in flight: not counted
                tally = self.tallies[self.current][name]
                tally.sent += 1
                if kind:
                    tally.failed += 1
                    tally.kinds[f"{path} {kind}"] += 1
            time.sleep(self.pause_s)

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            if thread.ident is not None:  # started
                thread.join(10)


def probe(envoy: Envoy, path: str) -> str:
    """What one request answers: the backend's name, 'HTTP <status>', or the error's name."""
    try:
        resp = envoy.get(path, timeout=2)
    except requests.RequestException as exc:
        return type(exc).__name__
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}"
    try:
        return resp.json().get("backend", "?")
    except ValueError:
        return "not JSON"


# --- Envoy -----------------------------------------------------------------------------------
def ha_envoy(version: str, workdir: Path, xds_port: int, **role_vars: Any) -> Envoy:
    """An Envoy running the envoy role's bootstrap with ADS and both replicas in the
    `xds_service` cluster (the role's multi-host shape)."""
    return Envoy(
        version, workdir, xds_port, "ads", envoy_xds_hosts=list(REPLICA_HOSTS), **role_vars
    )


def xds_peer(envoy: Envoy, replicas: list[Replica]) -> Replica | None:
    """The replica whose /v1/nodes lists this Envoy's node id (None: connected to none)."""
    node_id = f"test-envoy-{envoy.listen_port}"
    for replica in replicas:
        if replica.running and any(n["id"] == node_id for n in replica.nodes()):
            return replica
    return None


# --- the whole plane ---------------------------------------------------------------------------
@dataclass
class Plane:
    etcd: EtcdCluster
    replicas: list[Replica]
    envoys: dict[str, Envoy]  # by Envoy version
    backends: Backends
    load: LoadGen
    acknowledged: set[str] = field(default_factory=set)  # every worker a 2xx confirmed

    def register(self, replica: Replica, worker_id: str, wait: bool = True) -> int:
        """Register a new stand-in worker through `replica`; it must be acknowledged (with
        `wait`: 200/201 routable on every Envoy connected to `replica`, 202 pending). Returns
        the status."""
        port = self.backends.start(worker_id)
        query = "?wait=routable&timeout=20" if wait else ""
        resp = replica.call(
            "PUT", f"/v1/workers/{worker_id}{query}", {"host": "127.0.0.1", "port": port}
        )
        assert resp.status_code in (200, 201, 202), (resp.status_code, resp.text)
        self.acknowledged.add(worker_id)
        return resp.status_code

    def routable_everywhere(self, worker_id: str, timeout: float = 60) -> None:
        for envoy in self.envoys.values():
            wait_for(
                lambda e=envoy: e.backend_of(f"/worker/{worker_id}/") == worker_id,
                timeout,
                f"{worker_id} through Envoy {envoy.version}",
                interval=0.1,
            )

    def connected_to(self, replica: Replica) -> bool:
        return all(
            e.connected() and xds_peer(e, self.replicas) is replica for e in self.envoys.values()
        )

    def all_connected(self) -> bool:
        return all(e.connected() and xds_peer(e, self.replicas) for e in self.envoys.values())

    def ensure_up(self) -> None:
        """Every etcd member, both replicas and both Envoys running; Envoys connected."""
        for index, member in enumerate(self.etcd.members):
            if not member.running:
                self.etcd.restart(index, wait=False)
        for member in self.etcd.members:
            self.etcd.wait_healthy(member, 60)
        for replica in self.replicas:
            if not replica.running:
                replica.spawn()
        for replica in self.replicas:
            replica.wait_healthy(60)
            wait_for(lambda r=replica: r.health().get("status") == "ok", 60, f"{replica.name} ok")
        for name, envoy in self.envoys.items():
            if envoy.proc is None or envoy.proc.poll() is not None:
                envoy.start()
            self.load.resume(name)
        wait_for(self.all_connected, 90, "every Envoy connected to a replica", interval=0.2)
        for worker_id in BASE_WORKERS:
            self.routable_everywhere(worker_id)

    def acked_versions(self) -> dict[str, dict[str, str]]:
        """{node id: acked versions} over both replicas."""
        out: dict[str, dict[str, str]] = {}
        for replica in self.replicas:
            if replica.running:
                for node in replica.nodes():
                    out[node["id"]] = node["acked"]
        return out

    def converged(self) -> bool:
        """Both replicas hold exactly the acknowledged workers, and every Envoy ACKed the
        same versions."""
        for replica in self.replicas:
            try:
                if replica.worker_ids() != self.acknowledged:
                    return False
            except Exception:
                return False
        versions = self.acked_versions()
        values = list(versions.values())
        return len(values) == len(self.envoys) and all(
            v == values[0] and len(v) == 2 for v in values
        )

    def hold(self, phase: str, seconds: float) -> None:
        """Keep the load going for `seconds` in `phase`."""
        self.load.phase(phase)
        time.sleep(seconds)

    def phases(self, *names: str) -> dict[str, dict]:
        """{phase: {sent, failed, per_envoy}} for the report."""
        out = {}
        for name in names:
            sent, failed = self.load.totals(name)
            out[name] = {"sent": sent, "failed": failed, "per_envoy": self.load.counts(name)}
        return out


def assert_no_failures(phases: dict[str, dict]) -> None:
    for name, figures in phases.items():
        assert figures["sent"] > 0, f"no requests were sent in phase {name!r}"
        assert figures["failed"] == 0, (name, figures)


# --- the report --------------------------------------------------------------------------------
class FaultReport:
    """Figures of every fault test, written to reports/faults.json (and .md) at session end."""

    def __init__(self) -> None:
        self.faults: list[dict[str, Any]] = []

    def add(self, fault: str, expected: str, **figures: Any) -> None:
        self.faults.append({"fault": fault, "expected": expected, **figures})

    def write(self, json_path: Path, md_path: Path | None = None) -> None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "faults": self.faults,
        }
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        if md_path is not None:
            md_path.write_text(render_markdown(data))


def _cell(fault: dict[str, Any], key: str) -> str:
    return "; ".join(f"{phase}: {f[key]}" for phase, f in fault.get("phases", {}).items())


def render_markdown(data: dict[str, Any]) -> str:
    """The fault table (one row per fault, figures per phase) and the notes under it."""
    lines = [
        "| fault | expected | requests sent (per phase) | failed (per phase) "
        "| seconds to converge | Envoy |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for number, fault in enumerate(data["faults"], 1):
        converge = "; ".join(f"{k}: {v:.2f}" for k, v in fault.get("converge_s", {}).items())
        lines.append(
            f"| {fault['fault']} | {fault['expected']} | {_cell(fault, 'sent')} "
            f"| {_cell(fault, 'failed')} | {converge} | {fault.get('envoy', '')} |"
        )
        if fault.get("notes"):
            notes.append(f"{number}. {fault['fault']}: {fault['notes']}")
    return "\n".join([*lines, "", *notes]) + "\n"


if __name__ == "__main__":  # python -m dhops_testkit.ha reports/faults.json: the table
    print(render_markdown(json.loads(Path(sys.argv[1]).read_text())), end="")
