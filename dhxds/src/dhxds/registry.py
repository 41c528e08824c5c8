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
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .model import Upstream, ValidationError, Worker
from .resources import RegistryState

log = logging.getLogger(__name__)
STATE_FORMAT = "dhxds-workers/1"
LAST_GOOD_SUFFIX = ".last-good"


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
    moment leaves either the old or the new file, never a torn one.

    After every successful load and write the same content is also copied to
    `<path>.last-good`. When the main file cannot be read or is invalid (edited by hand,
    damaged), load() starts from that copy, logs an ERROR naming both files and the problem,
    keeps the bad file as `<path>.bad-<UTC time>` and sets `degraded` (shown by /healthz)
    until the next successful write replaces the main file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.last_good = self.path.with_name(self.path.name + LAST_GOOD_SUFFIX)
        self._workers: dict[str, Worker] = {}
        self.degraded: str | None = None

    def load(self) -> dict[str, Worker]:
        self._remove_stale_temp_files()
        try:
            raw = self._read(self.path)
            workers = {} if raw is None else parse_state(raw, str(self.path))
        except RegistryError as exc:
            workers = self._recover(exc)
        else:
            if raw is None and self.last_good.exists():
                workers = self._recover(
                    RegistryError(f"state file {self.path} is missing but {self.last_good} exists")
                )
            elif raw is not None:
                self._keep_last_good(raw.encode())
        self._workers = workers
        return dict(workers)

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:
            raise RegistryError(f"state file {path} is not UTF-8 text: {exc}") from exc
        except OSError as exc:
            raise RegistryError(f"cannot read state file {path}: {exc.strerror}") from exc

    def _recover(self, problem: RegistryError) -> dict[str, Worker]:
        """The main file is unusable: start from the last-good copy, loudly, or fail clearly."""
        try:
            raw = self._read(self.last_good)
            if raw is None:
                raise RegistryError(f"there is no last-good copy {self.last_good}")
            workers = parse_state(raw, str(self.last_good))
        except RegistryError as exc:
            raise RegistryError(f"{problem}; cannot start from the last-good copy: {exc}") from exc
        kept = self._keep_bad_file()
        self.degraded = (
            f"{problem}; started from the last-good copy {self.last_good} "
            f"({len(workers)} worker(s))" + (f"; the bad file is kept as {kept}" if kept else "")
        )
        log.error("%s", self.degraded)
        return workers

    def _keep_bad_file(self) -> Path | None:
        if not self.path.exists():
            return None
        try:
            content = self.path.read_bytes()
            for earlier in sorted(self.path.parent.glob(f"{self.path.name}.bad-*")):
                if earlier.read_bytes() == content:
                    return earlier  # the same bad file, kept by an earlier start
        except OSError:
            pass
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        kept = self.path.with_name(f"{self.path.name}.bad-{stamp}")
        try:
            shutil.copyfile(self.path, kept)
        except OSError as exc:
            log.error("cannot keep a copy of the bad state file %s: %s", self.path, exc)
            return None
        return kept

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
        try:
            _atomic_write(self.path, payload, durable=True)
        except OSError as exc:
            raise RegistryError(f"cannot write state file {self.path}: {exc}") from exc
        self._workers = workers
        if self.degraded:
            log.warning("state file %s written again; no longer degraded", self.path)
            self.degraded = None
        self._keep_last_good(payload)

    def _keep_last_good(self, payload: bytes) -> None:
        """Copy a state that was just loaded or written. Best effort: the main file is the
        durable truth; the copy only needs to be some valid earlier state."""
        try:
            if self.last_good.exists() and self.last_good.read_bytes() == payload:
                return
            _atomic_write(self.last_good, payload, durable=False)
        except OSError as exc:
            log.warning("cannot write the last-good copy %s: %s", self.last_good, exc)

    def _remove_stale_temp_files(self) -> None:
        # Left behind by a crash between mkstemp and rename; never the real state.
        if self.path.parent.is_dir():
            for name in (self.path.name, self.last_good.name):
                for stale in self.path.parent.glob(f".{name}.tmp-*"):
                    stale.unlink(missing_ok=True)


def _atomic_write(path: Path, payload: bytes, durable: bool) -> None:
    """Temp file in the same directory, fsync, rename over `path` (and fsync the directory
    when durable: then the rename itself survives a crash)."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def parse_state(raw: str, source: str) -> dict[str, Worker]:
    """Validate a whole state file; every problem is a RegistryError naming the file."""
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise RegistryError(f"state file {source} is nested too deeply to be a state file") from exc
    except ValueError as exc:  # JSONDecodeError, and numbers past int's digit limit
        raise RegistryError(f"state file {source} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise RegistryError(f"state file {source} is not a {STATE_FORMAT} file")
    items = data.get("workers", [])
    if not isinstance(items, list):
        raise RegistryError(
            f"state file {source}: 'workers' must be a list, not {type(items).__name__}"
        )
    workers: dict[str, Worker] = {}
    prefixes: dict[str, str] = {}
    for index, item in enumerate(items):
        try:
            worker = Worker.from_dict(item, stored=True)
        except ValidationError as exc:
            raise RegistryError(f"state file {source}, worker #{index}: {exc}") from exc
        if worker.id in workers:
            raise RegistryError(f"state file {source}, worker #{index}: duplicate id {worker.id}")
        if worker.envoy_prefix in prefixes:
            raise RegistryError(
                f"state file {source}, worker #{index} ({worker.id}): envoy_prefix "
                f"{worker.envoy_prefix} is also used by worker {prefixes[worker.envoy_prefix]}"
            )
        workers[worker.id] = worker
        prefixes[worker.envoy_prefix] = worker.id
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
        static_prefixes = {w.envoy_prefix: w.id for w in self.static.values()}
        dynamic = {}
        for worker_id, worker in sorted(stored.items()):
            if worker_id in self.static:
                continue
            owner = static_prefixes.get(worker.envoy_prefix)
            if owner is not None:
                log.error(
                    "stored worker %s is ignored: its envoy_prefix %s is used by worker %s "
                    "of the config file",
                    worker_id,
                    worker.envoy_prefix,
                    owner,
                )
                continue
            dynamic[worker_id] = worker
        self.dynamic = dynamic

    @property
    def degraded(self) -> str | None:
        """Why the registry is not in its normal state (e.g. started from a last-good copy)."""
        return getattr(self.backend, "degraded", None)

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
