"""`dhxds serve`: wires registry, xDS cache, gRPC server and HTTP API, and runs until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import web

from . import sd_notify
from .api import Api
from .cache import XdsCache
from .config import Config, read_token, split_listen
from .grpc_server import XdsServicer, start_grpc
from .metrics import Metrics
from .registry import JsonFileBackend, Registry
from .snapshot import V3

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 1  # xDS streams never end by themselves; Envoy reconnects


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.registry = Registry(
            JsonFileBackend(config.state_path),
            config.web_api_service,
            config.route_config_name,
            config.static_workers,
        )
        self.token = read_token(config.token_file)
        self.cache: XdsCache | None = None

    def _publish(self) -> None:
        """Registry changed: build the new snapshot now (v3 eagerly, v2 on demand)."""
        assert self.cache is not None
        start = time.perf_counter()
        self.cache.set_state(self.registry.state())
        self.cache.snapshot.resources(V3.cluster_type)
        self.cache.snapshot.resources(V3.route_type)
        self.metrics.build_seconds.observe(time.perf_counter() - start)
        self.metrics.workers.set(len(self.registry.workers()))

    async def run(self) -> None:
        self.registry.load()
        self.cache = XdsCache(self.registry.state())
        self._publish()
        self.registry.on_change(self._publish)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        grpc_server = await start_grpc(
            XdsServicer(self.cache, self.metrics), self.config.xds_listen
        )
        api = Api(self.registry, self.metrics, self.token, self.config.metrics_require_token)
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
                "dhxds serving: xDS on %s, API on %s, %d worker(s), state %s",
                self.config.xds_listen,
                self.config.api_listen,
                workers,
                self.config.state_path,
            )
            sd_notify.notify(f"READY=1\nSTATUS=serving {workers} worker(s)")
            await stop.wait()
            log.info("shutting down: closing API, then xDS streams (grace %ss)", SHUTDOWN_GRACE_S)
            sd_notify.notify("STOPPING=1")
            api.ready = False
        finally:
            await runner.cleanup()
            await grpc_server.stop(SHUTDOWN_GRACE_S)
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
