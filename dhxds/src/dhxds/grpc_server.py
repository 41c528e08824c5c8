"""gRPC xDS services (SotW CDS, RDS and ADS, v3 and v2) around the protocol core.

This module only moves bytes and wakes streams: every decision is XdsCore's. Each stream is
one task that sleeps on its wake event and, when woken, sends what `XdsCore.poll` returns.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from .metrics import Metrics
from .on_demand import NODE_METADATA_KEY
from .protocol import Event, Request, Response, Stream, XdsCore
from .snapshot import Snapshot, encode_delta_response, encode_response
from .xds_types import SERVICES, TYPES, Service

log = logging.getLogger(__name__)

# Server-side keepalive: a peer that vanished without closing its TCP connection (a dead
# host, a restarted Envoy behind NAT) is found and its streams closed within ~40 s.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


def _asks_on_demand(node) -> bool:
    """The envoy role sets node.metadata.dhxds_on_demand when Envoy runs the on_demand filter."""
    value = node.metadata.fields.get(NODE_METADATA_KEY)
    return value is not None and value.WhichOneof("kind") == "bool_value" and value.bool_value


def _kind(type_url: str) -> str:
    return TYPES[type_url].kind


class XdsServer:
    """The core plus one wake event per stream, and waiters for "routable"."""

    def __init__(self, core: XdsCore, metrics: Metrics) -> None:
        self.core = core
        self.metrics = metrics
        self._ids = itertools.count(1)
        self._wake: dict[int, asyncio.Event] = {}
        self._progress = asyncio.Event()  # replaced each time a node applies something

    # --- inputs from the daemon ----------------------------------------------------------
    def set_snapshot(self, snapshot: Snapshot) -> None:
        self._wake_streams(self.core.set_snapshot(snapshot))
        self._progressed()

    # --- what the API asks ---------------------------------------------------------------
    async def wait_routable(self, worker_id: str, timeout: float) -> list[str]:
        """Wait until every connected node applied the worker's cluster and route; returns
        the node ids still pending (empty when routable everywhere)."""
        deadline = time.monotonic() + timeout
        while True:
            progress = self._progress
            pending = self.core.pending_nodes(worker_id)
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                return pending
            try:
                await asyncio.wait_for(progress.wait(), remaining)
            except TimeoutError:
                pass

    def nodes(self) -> list[dict]:
        out = []
        for stream in self.core.streams.values():
            if stream.node is None:
                continue
            nack = next(
                (
                    {"version": ts.nacked_version, "message": ts.last_error}
                    for ts in stream.states.values()
                    if ts.nacked_version is not None
                ),
                None,
            )
            out.append(
                {
                    "id": stream.node[0],
                    "cluster": stream.node[1],
                    "api": stream.service.api,
                    "transport": stream.service.transport,
                    "peer": stream.peer,
                    "acked": {
                        url: ts.acked_version
                        for url, ts in stream.states.items()
                        if ts.acked_version is not None
                    },
                    "nack": nack,
                    "connected_since": datetime.fromtimestamp(stream.opened_wall, UTC)
                    .isoformat(timespec="seconds")
                    .replace("+00:00", "Z"),
                }
            )
        return sorted(out, key=lambda n: (n["id"], n["connected_since"], n["transport"]))

    # --- gRPC ----------------------------------------------------------------------------
    def handlers(self) -> list[grpc.GenericRpcHandler]:
        out = []
        for service in SERVICES:
            message = (
                discovery_pb2.DeltaDiscoveryRequest
                if service.delta
                else discovery_pb2.DiscoveryRequest
            )
            handler = grpc.stream_stream_rpc_method_handler(
                self._handler(service),
                request_deserializer=message.FromString,
                response_serializer=bytes,  # responses are pre-encoded (encode_response)
            )
            methods = {service.method: handler}
            out.append(grpc.method_handlers_generic_handler(service.name, methods))
        return out

    def _handler(self, service: Service):
        async def handle(requests: AsyncIterator, context) -> AsyncIterator[bytes]:
            stream = Stream(next(self._ids), service, context.peer(), time.monotonic(), time.time())
            async for response in self._serve(stream, requests):
                yield response

        return handle

    async def _serve(self, stream: Stream, requests: AsyncIterator) -> AsyncIterator[bytes]:
        self.core.open(stream)
        wake = self._wake[stream.id] = asyncio.Event()
        gauge = self.metrics.streams.labels(stream.service.api, stream.service.transport)
        gauge.inc()
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None
        reader = asyncio.create_task(self._read(stream, requests))
        try:
            while True:
                waiter = asyncio.create_task(wake.wait())
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if reader.done():
                    break
                wake.clear()
                now = time.monotonic()
                responses, recheck = self.core.poll(stream.id, now)
                if timer is not None:
                    timer.cancel()
                    timer = None
                if recheck is not None:
                    timer = loop.call_later(max(0.0, recheck - now), wake.set)
                for response in responses:
                    yield self._encode(stream, response)
        finally:
            reader.cancel()
            if timer is not None:
                timer.cancel()
            del self._wake[stream.id]
            self._wake_streams(self.core.close(stream.id))
            self._progressed()
            gauge.dec()
            log.info(
                "stream closed: node=%s %s/%s peer=%s",
                stream.node[0] if stream.node else "?",
                stream.service.api,
                stream.service.transport,
                stream.peer,
            )
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            log.warning("stream %d ended with error: %s", stream.id, reader.exception())

    def _encode(self, stream: Stream, response: Response) -> bytes:
        kind = _kind(response.type_url)
        self.metrics.pushes.labels(stream.service.api, kind).inc()
        delta = stream.service.delta
        log.info(
            "push %s version=%s resources=%d%s to node=%s (%s/%s stream %d, %.0f ms since change)",
            kind,
            response.version,
            len(response.changed) if delta else len(response.resources),
            f" removed={len(response.removed)}" if delta else "",
            stream.node[0] if stream.node else "?",
            stream.service.api,
            stream.service.transport,
            stream.id,
            1000 * (time.monotonic() - response.since),
        )
        if delta:
            return encode_delta_response(
                response.version,
                response.nonce,
                response.type_url,
                response.changed,
                response.removed,
            )
        return encode_response(
            response.version, response.nonce, response.type_url, response.resources
        )

    async def _read(self, stream: Stream, requests: AsyncIterator) -> None:
        async for message in requests:
            self._on_request(stream, message)

    def _on_request(self, stream: Stream, msg) -> None:
        first = stream.node is None and msg.HasField("node")
        error = None
        if msg.HasField("error_detail"):
            error = msg.error_detail.message or f"code {msg.error_detail.code}"
        node = (msg.node.id, msg.node.cluster) if msg.HasField("node") else None
        on_demand = msg.HasField("node") and _asks_on_demand(msg.node)
        type_url = msg.type_url or stream.service.default_type or ""
        if stream.service.delta:
            req = Request(
                type_url=type_url,
                nonce=msg.response_nonce,
                error=error,
                node=node,
                subscribe=tuple(msg.resource_names_subscribe),
                unsubscribe=tuple(msg.resource_names_unsubscribe),
                initial_versions=tuple(sorted(msg.initial_resource_versions.items())),
                on_demand=on_demand,
            )
        else:
            req = Request(
                type_url=type_url,
                version_info=msg.version_info,
                nonce=msg.response_nonce,
                names=tuple(msg.resource_names),
                error=error,
                node=node,
            )
        event, woken = self.core.on_request(stream.id, req)
        if first:
            log.info(
                "stream opened: node=%s cluster=%s %s/%s peer=%s",
                msg.node.id,
                msg.node.cluster,
                stream.service.api,
                stream.service.transport,
                stream.peer,
            )
        self._wake_streams(woken)
        node = stream.node[0] if stream.node else "?"
        if event is Event.UNSUPPORTED:
            log.warning(
                "node=%s asked %s/%s for unsupported type %r; ignored",
                node,
                stream.service.api,
                stream.service.transport,
                req.type_url,
            )
            return
        ts = stream.states[req.type_url]
        kind = _kind(req.type_url)
        if event is Event.ACK:
            self.metrics.acks.labels(stream.service.api, kind).inc()
            self.metrics.push_latency.labels(kind).observe(time.monotonic() - ts.sent_at)
            log.debug(
                "node=%s ACK %s version=%s (%.0f ms after the change)",
                node,
                kind,
                ts.acked_version,
                1000 * (time.monotonic() - ts.sent_at),
            )
            self._progressed()
        elif event is Event.NACK:
            self.metrics.nacks.labels(stream.service.api, kind).inc()
            log.warning(
                "node=%s rejected (NACK) %s version=%s: %s", node, kind, ts.nacked_version, error
            )
        elif event is Event.STALE:
            log.debug("node=%s stale nonce %r for %s ignored", node, req.nonce, kind)

    def _wake_streams(self, ids: set[int]) -> None:
        for stream_id in ids:
            event = self._wake.get(stream_id)
            if event is not None:
                event.set()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()


async def start_grpc(
    server_core: XdsServer, listen: str, credentials: grpc.ServerCredentials | None = None
) -> grpc.aio.Server:
    """`credentials`: TLS (xds.tls, mutual TLS) instead of plaintext."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            *KEEPALIVE_OPTIONS,
        ]
    )
    server.add_generic_rpc_handlers(server_core.handlers())
    try:
        if credentials is None:
            bound = server.add_insecure_port(listen)
        else:
            bound = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:  # newer grpcio raises instead of returning 0
        bound, reason = 0, exc
    else:
        reason = "address in use or not available"
        if credentials is not None:
            reason += ", or the xds.tls certificate and key do not match"
    if bound == 0:
        raise OSError(f"cannot listen for xDS on {listen}: {reason}")
    await server.start()
    return server
