"""`dhxds serve`: wires registry, resolver, xDS core, gRPC server and HTTP API, and runs until
SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time

import grpc
from aiohttp import web

from . import sd_notify
from .api import Api, Tokens
from .backends import open_state
from .config import Config, check_files, split_listen, xds_tls_files
from .grpc_server import XdsServer, start_grpc
from .host_names import HostNames
from .metrics import Metrics
from .protocol import XdsCore
from .registry import Registry, Unavailable
from .resolver import Resolver
from .resources import RegistryState
from .snapshot import Snapshot, new_encoders
from .xds_types import V3

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 1  # xDS streams never end by themselves; Envoy reconnects
STARTUP_RESOLVE_S = 5  # how long start-up waits for worker host names to resolve
START_RETRY_S = 2  # a shared registry (etcd) not reachable yet: no xDS until the first load


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        check_files(config)  # every file, before anything starts: one clear line, exit 2
        self.tokens = Tokens.from_file(config.token_file)
        # Read before anything starts: a missing or bad file is one clear line, exit 2.
        self.xds_credentials: grpc.ServerCredentials | None = None
        if config.xds_tls is not None:
            chain, key, client_ca = xds_tls_files(config.xds_tls)
            self.xds_credentials = grpc.ssl_server_credentials(
                [(key, chain)], root_certificates=client_ca, require_client_auth=True
            )
        self.registry = Registry(
            open_state(config),
            config.web_api_service,
            config.route_config_name,
            config.static_workers,
        )
        self._encoders = new_encoders()
        self._host_names = HostNames()
        self.xds: XdsServer | None = None
        self.resolver: Resolver | None = None

    def _state(self) -> RegistryState:
        """The registry's state with the worker host names resolved so far."""
        assert self.resolver is not None
        state = self.registry.state()
        names = self._host_names.of(state)
        self.resolver.want(names)
        known = self.resolver.addresses
        addresses = tuple(sorted((n, known[n]) for n in names if n in known))
        return dataclasses.replace(state, addresses=addresses)

    def _snapshot(self, state: RegistryState) -> Snapshot:
        """Build the new snapshot now (v3 clusters; route configurations and v2 when a stream
        asks for them)."""
        start = time.perf_counter()
        snapshot = Snapshot(state, self._encoders)
        snapshot.clusters(V3.cluster_type)  # route configurations: when a stream needs one
        self.metrics.build_seconds.observe(time.perf_counter() - start)
        self.metrics.workers.set(len(state.workers))
        self.metrics.unresolved.clear()
        if snapshot.unresolved:
            hosts = {worker.id: worker.host for worker in state.workers}
            for worker_id in snapshot.unresolved:
                self.metrics.unresolved.labels(worker_id, hosts[worker_id]).set(1)
        return snapshot

    def _publish(self) -> None:
        """Registry or name resolution changed: hand the new snapshot to the xDS server."""
        if self.xds is None:
            return  # still starting: run() builds the first snapshot itself
        state = self._state()
        if state != self.xds.core.snapshot.state:
            self.xds.set_snapshot(self._snapshot(state))

    async def run(self) -> None:
        while True:  # serve no xDS before the first successful load; wait, do not exit
            try:
                await self.registry.start()
                break
            except Unavailable as exc:
                log.warning(
                    "registry not reachable yet, serving nothing until it is (retry in %ss): %s",
                    START_RETRY_S,
                    exc,
                )
                await asyncio.sleep(START_RETRY_S)
        try:
            await self._serve()
        finally:
            await self.registry.stop()

    async def _serve(self) -> None:
        self.resolver = Resolver(self._publish)
        self._state()  # starts resolving the stored workers' host names
        await self.resolver.settle(STARTUP_RESOLVE_S)
        self.xds = XdsServer(XdsCore(self._snapshot(self._state())), self.metrics)
        self.registry.on_change(self._publish)
        self.resolver.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        grpc_server = await start_grpc(self.xds, self.config.xds_listen, self.xds_credentials)
        api = Api(
            self.registry, self.metrics, self.tokens, self.xds, self.config.metrics_require_token
        )
        runner = web.AppRunner(api.app(), access_log=None)
        await runner.setup()
        try:
            host, port = split_listen(self.config.api_listen, "api.listen")
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise OSError(
                    f"cannot listen for the API on {self.config.api_listen}: {exc}"
                ) from exc
            api.ready = True
            workers = len(self.registry.workers())
            log.info(
                "dhxds serving: xDS on %s%s, API on %s, %d worker(s), state %s",
                self.config.xds_listen,
                " (mutual TLS)" if self.xds_credentials else "",
                self.config.api_listen,
                workers,
                self.registry.backend.location,
            )
            sd_notify.notify(f"READY=1\nSTATUS=serving {workers} worker(s)")
            await stop.wait()
            log.info("shutting down: closing API, then xDS streams (grace %ss)", SHUTDOWN_GRACE_S)
            sd_notify.notify("STOPPING=1")
            api.ready = False
        finally:
            await runner.cleanup()
            await grpc_server.stop(SHUTDOWN_GRACE_S)
            await self.resolver.stop()
        log.info("stopped")


def serve(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level_number,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # grpc and asyncio debug output is about their internals, not about dhxds.
    for noisy in ("grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(max(config.log_level_number, logging.INFO))
    asyncio.run(Daemon(config).run())
