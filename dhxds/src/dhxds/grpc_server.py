"""gRPC xDS services: SotW CDS, RDS and ADS, for v3 and v2 transports from one cache.

v2 and v3 DiscoveryRequest/DiscoveryResponse are wire-compatible, so both transports use the
v3 message classes; the type URL a client asks for picks the resource encoding. All six
services are registered as generic handlers (xds-protos ships no v2 CDS/RDS stubs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from .cache import Session, XdsCache
from .metrics import Metrics
from .snapshot import CDS, TYPES, V2, V3, encode_response
from .stream import Event, TypeState

log = logging.getLogger(__name__)

# (gRPC service, method, transport, service kind, default type URL)
SERVICES = (
    (
        "envoy.service.cluster.v3.ClusterDiscoveryService",
        "StreamClusters",
        "v3",
        "cds",
        V3.cluster_type,
    ),
    ("envoy.service.route.v3.RouteDiscoveryService", "StreamRoutes", "v3", "rds", V3.route_type),
    (
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "StreamAggregatedResources",
        "v3",
        "ads",
        None,
    ),
    ("envoy.api.v2.ClusterDiscoveryService", "StreamClusters", "v2", "cds", V2.cluster_type),
    ("envoy.api.v2.RouteDiscoveryService", "StreamRoutes", "v2", "rds", V2.route_type),
    (
        "envoy.service.discovery.v2.AggregatedDiscoveryService",
        "StreamAggregatedResources",
        "v2",
        "ads",
        None,
    ),
)


def _short(type_url: str) -> str:
    return TYPES[type_url][1]


class XdsServicer:
    def __init__(self, cache: XdsCache, metrics: Metrics) -> None:
        self.cache = cache
        self.metrics = metrics

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        out = []
        for service, method, transport, kind, default_type in SERVICES:
            handler = grpc.stream_stream_rpc_method_handler(
                self._stream_handler(transport, kind, default_type),
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=bytes,  # responses are pre-encoded (encode_response)
            )
            out.append(grpc.method_handlers_generic_handler(service, {method: handler}))
        return out

    def _stream_handler(self, transport: str, kind: str, default_type: str | None):
        async def handle(requests: AsyncIterator, context) -> AsyncIterator:
            session = Session(transport, kind, peer=context.peer())
            async for response in self._serve(session, requests, default_type):
                yield response

        return handle

    async def _serve(self, session: Session, requests: AsyncIterator, default_type: str | None):
        self.cache.open(session)
        gauge = self.metrics.streams.labels(session.transport, session.service)
        gauge.inc()
        reader = asyncio.create_task(self._read(session, requests, default_type))
        try:
            while True:
                waiter = asyncio.create_task(session.wake.wait())
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if reader.done():
                    break
                session.wake.clear()
                # CDS before RDS on ADS: a new cluster must be known before a route uses it.
                for ts in sorted(session.states.values(), key=lambda t: _short(t.type_url) != CDS):
                    response = self.cache.next_response(session, ts)
                    if response is not None:
                        yield self._send(session, ts, response)
        finally:
            reader.cancel()
            self.cache.close(session)
            gauge.dec()
            log.info(
                "stream closed: node=%s %s/%s peer=%s",
                session.node_id,
                session.transport,
                session.service,
                session.peer,
            )
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            log.warning("stream %d ended with error: %s", session.id, reader.exception())

    def _send(self, session: Session, ts: TypeState, response) -> bytes:
        kind = _short(ts.type_url)
        self.metrics.pushes.labels(session.transport, kind).inc()
        log.info(
            "push %s version=%s resources=%d to node=%s (%s/%s stream %d, %.0f ms since change)",
            kind,
            response.version,
            len(response.resources),
            session.node_id,
            session.transport,
            session.service,
            session.id,
            1000 * (time.monotonic() - ts.sent_at),
        )
        return encode_response(response.version, response.nonce, ts.type_url, response.resources)

    async def _read(self, session: Session, requests: AsyncIterator, default_type: str | None):
        async for request in requests:
            self._on_request(session, request, default_type)

    def _on_request(self, session: Session, req, default_type: str | None) -> None:
        if session.node_key is None and req.HasField("node"):
            self.cache.set_node(session, (req.node.id, req.node.cluster))
            log.info(
                "stream opened: node=%s cluster=%s %s/%s peer=%s",
                req.node.id,
                req.node.cluster,
                session.transport,
                session.service,
                session.peer,
            )
        type_url = req.type_url or default_type
        if type_url not in TYPES or (
            session.service != "ads" and TYPES[type_url][1] != session.service
        ):
            log.warning(
                "node=%s asked %s/%s for unsupported type %r; ignored",
                session.node_id,
                session.transport,
                session.service,
                type_url,
            )
            return
        ts = session.states.get(type_url)
        if ts is None:
            ts = session.states[type_url] = TypeState(type_url, wildcard=_short(type_url) == CDS)
        error = None
        if req.HasField("error_detail"):
            error = req.error_detail.message or f"code {req.error_detail.code}"
        event = ts.on_request(req.version_info, req.response_nonce, list(req.resource_names), error)
        kind = _short(type_url)
        if event is Event.ACK:
            self.metrics.acks.labels(session.transport, kind).inc()
            self.metrics.push_latency.labels(kind).observe(time.monotonic() - ts.sent_at)
            log.debug(
                "node=%s ACK %s version=%s (%.0f ms after the change)",
                session.node_id,
                kind,
                ts.acked_version,
                1000 * (time.monotonic() - ts.sent_at),
            )
            self.cache.node_changed(session)
        elif event is Event.NACK:
            self.metrics.nacks.labels(session.transport, kind).inc()
            log.warning(
                "node=%s rejected (NACK) %s version=%s: %s",
                session.node_id,
                kind,
                ts.nacked_version,
                error,
            )
        elif event is Event.STALE:
            log.debug(
                "node=%s stale nonce %r for %s ignored", session.node_id, req.response_nonce, kind
            )
        session.wake.set()


async def start_grpc(servicer: XdsServicer, listen: str) -> grpc.aio.Server:
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", 256 * 1024 * 1024),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ]
    )
    server.add_generic_rpc_handlers(servicer.handlers())
    try:
        bound = server.add_insecure_port(listen)
    except RuntimeError as exc:  # newer grpcio raises instead of returning 0
        bound, reason = 0, exc
    else:
        reason = "address in use or not available"
    if bound == 0:
        raise OSError(f"cannot listen for xDS on {listen}: {reason}")
    await server.start()
    return server
