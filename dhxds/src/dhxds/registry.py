"""The worker registry: a small backend interface, the JSON file backend, and the in-memory
view the API and the xDS cache share.

A change is acknowledged (the API answers) only after the backend stored it durably; the
in-memory view and the xDS snapshot follow the stored state, never run ahead of it.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .model import Upstream, ValidationError, Worker
from .resources import RegistryState

log = logging.getLogger(__name__)
STATE_FORMAT = "dhxds-workers/1"


class RegistryError(Exception):
    """Stored state cannot be read or written; the message names the file and the problem."""


class Conflict(Exception):
    """The change contradicts the registry (static worker, duplicate envoy_prefix)."""


class RegistryBackend(abc.ABC):
    """Where dynamic workers live. An etcd backend will implement the same three calls."""

    @abc.abstractmethod
    def load(self) -> dict[str, Worker]:
        """All stored workers by id."""

    @abc.abstractmethod
    def put(self, worker: Worker) -> None:
        """Store (create or replace) durably before returning."""

    @abc.abstractmethod
    def delete(self, worker_id: str) -> None:
        """Remove durably before returning."""


class JsonFileBackend(RegistryBackend):
    """All workers in one JSON file, replaced atomically: write a temp file in the same
    directory, fsync it, rename it over the old one, fsync the directory. A crash at any
    moment leaves either the old or the new file, never a torn one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._workers: dict[str, Worker] = {}

    def load(self) -> dict[str, Worker]:
        self._remove_stale_temp_files()
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._workers = {}
            return {}
        except OSError as exc:
            raise RegistryError(f"cannot read state file {self.path}: {exc.strerror}") from exc
        self._workers = parse_state(raw, str(self.path))
        return dict(self._workers)

    def put(self, worker: Worker) -> None:
        workers = dict(self._workers)
        workers[worker.id] = worker
        self._write(workers)

    def delete(self, worker_id: str) -> None:
        workers = dict(self._workers)
        workers.pop(worker_id, None)
        self._write(workers)

    def _write(self, workers: dict[str, Worker]) -> None:
        data = {
            "format": STATE_FORMAT,
            "workers": [workers[k].stored_dict() for k in sorted(workers)],
        }
        payload = json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o640)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the rename itself durable
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise RegistryError(f"cannot write state file {self.path}: {exc}") from exc
        self._workers = workers

    def _remove_stale_temp_files(self) -> None:
        # Left behind by a crash between mkstemp and rename; never the real state.
        if self.path.parent.is_dir():
            for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
                stale.unlink(missing_ok=True)


def parse_state(raw: str, source: str) -> dict[str, Worker]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"state file {source} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise RegistryError(f"state file {source} is not a {STATE_FORMAT} file")
    workers: dict[str, Worker] = {}
    for index, item in enumerate(data.get("workers", [])):
        try:
            worker = Worker.from_dict(item)
        except ValidationError as exc:
            raise RegistryError(f"state file {source}, worker #{index}: {exc}") from exc
        workers[worker.id] = worker
    return workers


class Registry:
    """Static workers (config) merged with stored ones; notifies listeners after changes."""

    def __init__(
        self,
        backend: RegistryBackend,
        web_api: Upstream,
        route_config_name: str,
        static_workers: Iterable[Worker] = (),
    ) -> None:
        self.backend = backend
        self.web_api = web_api
        self.route_config_name = route_config_name
        self.static = {w.id: w for w in static_workers}
        self.dynamic: dict[str, Worker] = {}
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []

    def load(self) -> None:
        stored = self.backend.load()
        for worker_id in sorted(stored.keys() & self.static.keys()):
            log.warning(
                "worker %s is defined in the config file; its stored entry is ignored", worker_id
            )
        self.dynamic = {k: v for k, v in stored.items() if k not in self.static}

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def workers(self) -> dict[str, Worker]:
        return {**self.dynamic, **self.static}

    def get(self, worker_id: str) -> Worker | None:
        return self.static.get(worker_id) or self.dynamic.get(worker_id)

    def state(self) -> RegistryState:
        merged = self.workers()
        return RegistryState(
            tuple(merged[k] for k in sorted(merged)), self.web_api, self.route_config_name
        )

    async def put(self, worker: Worker) -> tuple[bool, bool]:
        """Store a worker; returns (created, changed)."""
        async with self._lock:
            if worker.id in self.static:
                raise Conflict(f"worker {worker.id} is defined in the config file; change it there")
            for other in self.workers().values():
                if other.id != worker.id and other.envoy_prefix == worker.envoy_prefix:
                    raise Conflict(
                        f"envoy_prefix {worker.envoy_prefix} is already used by worker {other.id}"
                    )
            old = self.dynamic.get(worker.id)
            if old == worker:
                return False, False
            await asyncio.to_thread(self.backend.put, worker)
            self.dynamic[worker.id] = worker
        log.info(
            "worker %s %s: %s:%d",
            worker.id,
            "replaced" if old else "added",
            worker.host,
            worker.port,
        )
        self._notify()
        return old is None, True

    async def delete(self, worker_id: str) -> bool:
        async with self._lock:
            if worker_id in self.static:
                raise Conflict(f"worker {worker_id} is defined in the config file; remove it there")
            if worker_id not in self.dynamic:
                return False
            await asyncio.to_thread(self.backend.delete, worker_id)
            del self.dynamic[worker_id]
        log.info("worker %s removed", worker_id)
        self._notify()
        return True

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()
