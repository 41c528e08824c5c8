"""A small stand-in for the xDS core's view (dhxds.api.XdsView) for API-level unit tests."""

from __future__ import annotations

import asyncio
from typing import ClassVar


class FakeXds:
    """Implements dhxds.api.XdsView for API-level tests: nodes as given, and each worker
    routable after `delays[worker_id]` seconds (never when missing), on node `envoy-1`."""

    NODE: ClassVar[dict] = {
        "id": "envoy-1",
        "api": "v3",
        "transport": "ads",
        "acked": {"type.googleapis.com/envoy.config.cluster.v3.Cluster": "abc"},
        "nack": None,
        "connected_since": "2026-11-29T18:00:00Z",
    }

    def __init__(self, delays=None):
        self.delays = delays or {}
        self.calls = []

    def nodes(self):
        return [dict(self.NODE)]

    async def wait_routable(self, worker_id, timeout):
        self.calls.append((worker_id, timeout))
        delay = self.delays.get(worker_id)
        if delay is not None and delay <= timeout:
            await asyncio.sleep(delay)
            return []
        await asyncio.sleep(timeout)
        return ["envoy-1"]


def real_xds(registry):
    """The real xDS server around the registry's current state, with no Envoy connected:
    no nodes, and every worker routable at once (nobody to wait for)."""
    from dhxds.grpc_server import XdsServer
    from dhxds.metrics import Metrics
    from dhxds.protocol import XdsCore
    from dhxds.snapshot import Snapshot, new_encoders

    return XdsServer(XdsCore(Snapshot(registry.state(), new_encoders())), Metrics())
