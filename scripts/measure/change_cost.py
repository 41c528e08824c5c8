"""Python time for one registry change at N workers: the registry view, the new snapshot's
clusters and route configuration (v3, full and the subset a stream without the new cluster
gets), and the shared response bodies. Median of --rounds. A measurement, not a test.

    python scripts/measure/change_cost.py [--workers 1000 10000] [--rounds 20] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time

from dhxds.model import WEB_API_CLUSTER, Upstream, Worker
from dhxds.registry import Registry
from dhxds.snapshot import Snapshot, new_encoders
from dhxds.xds_types import V3

HOST = "127.0.0.1"


class _NoBackend:
    location = "memory"
    degraded = None


def worker(i: int) -> Worker:
    return Worker(id=f"w{i}", host=HOST, port=10000 + i % 50000, envoy_prefix=f"/worker/w{i}")


def one_change(registry: Registry, encoders, previous: Snapshot, i: int) -> Snapshot:
    """What the daemon does for one PUT once the watch delivers it."""
    new = worker(i)
    registry.dynamic[new.id] = new
    snap = Snapshot(registry.state(), encoders)
    clusters = snap.cluster_set(V3.cluster_type)
    clusters.body  # noqa: B018 - the shared SotW body
    config = snap.route_config(V3.route_type)
    snap.route_set(config).body  # noqa: B018
    # A stream whose CDS view has not ACKed the new cluster yet gets the routes without it.
    have = frozenset(previous.clusters(V3.cluster_type)) | {WEB_API_CLUSTER}
    snap.route_config(V3.route_type, have)
    return snap


def measure(count: int, rounds: int, profile: bool) -> float:
    registry = Registry(_NoBackend(), Upstream(HOST, 8123), "rds_config")
    registry.dynamic = {w.id: w for w in map(worker, range(count))}
    encoders = new_encoders()
    snap = one_change(registry, encoders, Snapshot(registry.state(), encoders), count)
    times = []
    profiler = cProfile.Profile() if profile else None
    for r in range(rounds):
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        snap = one_change(registry, encoders, snap, count + 1 + r)
        if profiler:
            profiler.disable()
        times.append(time.perf_counter() - start)
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for count in args.workers:
        ms = measure(count, args.rounds, args.profile)
        print(f"{count:>6} workers: one change {ms:.2f} ms (median of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
