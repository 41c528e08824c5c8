"""Prometheus metrics of one daemon (own registry, so tests can run several daemons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.streams = Gauge(
            "dhxds_connected_streams",
            "xDS streams currently open",
            ["transport", "service"],
            registry=self.registry,
        )
        self.pushes = Counter(
            "dhxds_pushes", "xDS responses sent", ["transport", "type"], registry=self.registry
        )
        self.acks = Counter(
            "dhxds_acks", "xDS responses ACKed", ["transport", "type"], registry=self.registry
        )
        self.nacks = Counter(
            "dhxds_nacks",
            "xDS responses rejected by Envoy (NACK)",
            ["transport", "type"],
            registry=self.registry,
        )
        self.workers = Gauge("dhxds_workers", "Registered workers", registry=self.registry)
        self.unresolved = Gauge(
            "dhxds_worker_unresolved",
            "1 for each worker whose host name dhxds cannot resolve (not routable until it does)",
            ["worker", "host"],
            registry=self.registry,
        )
        self.push_latency = Histogram(
            "dhxds_push_latency_seconds",
            "From a registry change to Envoy's ACK of the resulting response",
            ["type"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.build_seconds = Histogram(
            "dhxds_snapshot_build_seconds",
            "Time to encode the resources of one registry state",
            registry=self.registry,
        )

        self.waits = Counter(
            "dhxds_routable_waits",
            "Worker requests with wait=routable, by outcome (routable, or pending at the timeout)",
            ["result"],
            registry=self.registry,
        )
        self.state_degraded = Gauge(
            "dhxds_state_degraded",
            "1 while the registry is degraded (a failed write or watch, invalid stored workers)",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
