"""Resolves worker host names, so Envoy gets STATIC clusters with addresses.

Why: Envoy ACKs a STRICT_DNS cluster before its first resolution, and the cluster only
serves after warming; a route sent on that ACK could answer 503. A STATIC cluster of
addresses is ready when ACKed. A name that does not resolve keeps its worker out of Envoy
(requests go to web_api_service, as for any unknown worker) and shows in /metrics and the
log; names are resolved again every `refresh` seconds and retried sooner while they fail.
Like Envoy's default (V4_PREFERRED): the IPv4 addresses if there are any, else IPv6.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)
REFRESH_S = 30.0
RETRY_S = 5.0


def pick_addresses(infos: Iterable[tuple]) -> tuple[str, ...]:
    v4 = sorted({info[4][0] for info in infos if info[0] == socket.AF_INET})
    v6 = sorted({info[4][0] for info in infos if info[0] == socket.AF_INET6})
    return tuple(v4 or v6)


class Resolver:
    def __init__(self, on_change: Callable[[], None], refresh: float = REFRESH_S) -> None:
        self.on_change = on_change
        self.refresh = refresh
        self.addresses: dict[str, tuple[str, ...]] = {}
        self.errors: dict[str, str] = {}
        self._names: set[str] = set()
        self._inflight: dict[str, asyncio.Task] = {}
        self._task: asyncio.Task | None = None

    def want(self, names: Iterable[str]) -> None:
        """The names in use now: resolve new ones at once, forget ones no longer used."""
        names = set(names)
        for gone in self._names - names:
            self.addresses.pop(gone, None)
            self.errors.pop(gone, None)
        self._names = names
        new = names - self.addresses.keys() - self.errors.keys() - self._inflight.keys()
        for name in new:
            task = asyncio.get_running_loop().create_task(self._resolve_and_report(name))
            self._inflight[name] = task

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) for the resolutions under way, e.g. before serving xDS at start."""
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=timeout)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _resolve_and_report(self, name: str) -> None:
        try:
            if await self._resolve(name):
                self.on_change()
        finally:
            self._inflight.pop(name, None)

    async def _resolve(self, name: str) -> bool:
        """Resolve one name; True when what Envoy should get changed."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            found = pick_addresses(infos)
            if not found:
                raise OSError("no IPv4 or IPv6 address")
        except OSError as exc:
            message = exc.strerror or str(exc)
            if self.errors.get(name) != message:
                log.error("cannot resolve worker host %s: %s (not routable)", name, message)
            self.errors[name] = message
            return self.addresses.pop(name, None) is not None
        if name not in self._names:
            return False
        if self.errors.pop(name, None) is not None:
            log.info("worker host %s resolves now: %s", name, ", ".join(found))
        changed = self.addresses.get(name) != found
        self.addresses[name] = found
        return changed

    async def _refresh_loop(self) -> None:
        waited = 0.0
        while True:
            await asyncio.sleep(RETRY_S)
            waited += RETRY_S
            due = set(self.errors)
            if waited >= self.refresh:
                due |= set(self.addresses)
                waited = 0.0
            changed = False
            for name in sorted(due & self._names):
                changed |= await self._resolve(name)
            if changed:
                self.on_change()
