"""The worker registry: a backend interface with revisions and a watch, the embedded SQLite
backend, and the in-memory view the API and the xDS cache share.

The in-memory view is built ONLY from `load()` and the backend's watch, so every replica of a
shared backend (etcd, issue 11) converges from the same events. A write is acknowledged (the
API answers) only after the backend stored it durably AND the local view has reached the
write's revision: the snapshot the xDS core sees already holds the change. See
docs/registry.md.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .model import Upstream, ValidationError, Worker
from .resources import RegistryState
from .sorted_ids import SortedIds

log = logging.getLogger(__name__)
STATE_FORMAT = "dhxds-workers/1"  # the JSON export/import format
DB_FORMAT = "dhxds-registry/1"  # meta 'format' of the SQLite file
WRITE_VISIBLE_S = 10.0  # a stored write must reach the local view within this time
WATCH_RETRY_S = 1.0


class RegistryError(Exception):
    """Stored state cannot be read or written; the message names the file and the problem."""


class Conflict(Exception):
    """The change contradicts the registry (static worker, duplicate envoy_prefix)."""


class Unavailable(RegistryError):
    """The backend cannot be reached (etcd: no member answers); the API answers 503."""


class Compacted(RegistryError):
    """The watch cannot resume after this revision (its changes were compacted away):
    re-list with load() and watch again from the revision it returns."""


@dataclass(frozen=True)
class Change:
    """One event of the watch: `worker` is the new value, None when it was deleted."""

    revision: int
    worker_id: str
    worker: Worker | None


@dataclass(frozen=True)
class Stored:
    """The outcome of a put: the revision that holds it (the current revision when nothing
    changed), whether the id was new, whether anything changed."""

    revision: int
    created: bool
    changed: bool


CONFIG_FORMAT = "dhxds-config/1"


def _upstream_text(upstream: Upstream) -> str:
    extra = [upstream.upstream_protocol] + (["tls"] if upstream.tls else [])
    return f"{upstream.host}:{upstream.port} ({', '.join(extra)})"


@dataclass(frozen=True)
class SharedConfig:
    """The part of the config file every replica must serve identically (etcd mode): the
    web_api_service definition and the static workers. Stored as one key, `<prefix>config`."""

    web_api_service: Upstream
    static_workers: tuple[Worker, ...]

    def encode(self) -> bytes:
        data = {
            "format": CONFIG_FORMAT,
            "web_api_service": {
                k: v for k, v in dataclasses.asdict(self.web_api_service).items() if v is not None
            },
            "static_workers": [
                w.stored_dict() for w in sorted(self.static_workers, key=lambda w: w.id)
            ],
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes, source: str) -> SharedConfig:
        """RegistryError naming `source` when the stored value is not a valid config."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
                raise ValueError(f"not a {CONFIG_FORMAT} value")
            web_api = Upstream.from_dict(data.get("web_api_service"), "web_api_service")
            items = data.get("static_workers")
            if not isinstance(items, list):
                raise ValueError("static_workers must be a list")
            workers = tuple(Worker.from_dict(item, static=True) for item in items)
        except (ValueError, ValidationError, RecursionError) as exc:
            raise RegistryError(f"{source} holds an invalid shared config: {exc}") from exc
        if len({w.id for w in workers}) != len(workers) or len(
            {w.envoy_prefix for w in workers}
        ) != len(workers):
            raise RegistryError(f"{source}: static workers with duplicate ids or envoy_prefix")
        return cls(web_api, tuple(sorted(workers, key=lambda w: w.id)))

    def normalized(self) -> SharedConfig:
        return SharedConfig(
            self.web_api_service, tuple(sorted(self.static_workers, key=lambda w: w.id))
        )

    def difference(self, other: SharedConfig) -> str:
        """What changes from self to other, for the operator ('' when equal)."""
        parts = []
        if self.web_api_service != other.web_api_service:
            parts.append(
                f"web_api_service {_upstream_text(self.web_api_service)} -> "
                f"{_upstream_text(other.web_api_service)}"
            )
        mine = {w.id: w for w in self.static_workers}
        theirs = {w.id: w for w in other.static_workers}
        for label, ids in (
            ("static workers added", sorted(theirs.keys() - mine.keys())),
            ("static workers removed", sorted(mine.keys() - theirs.keys())),
            (
                "static workers changed",
                sorted(i for i in mine.keys() & theirs.keys() if mine[i] != theirs[i]),
            ),
        ):
            if ids:
                shown = ", ".join(ids[:10]) + (f" (+{len(ids) - 10})" if len(ids) > 10 else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts)


@dataclass(frozen=True)
class ConfigChange:
    """An event of the watch (backends that share the config): the shared config was
    written (config) or deleted (None)."""

    revision: int
    config: SharedConfig | None


class RegistryBackend(abc.ABC):
    """Where dynamic workers live. Revisions are integers that grow with every committed
    transaction (one transaction = one revision, as in etcd). Implementations: SqliteBackend
    (embedded default); etcd (issue 11) implements the same calls."""

    location: str = "?"  # for messages: a file name, endpoints, ...
    degraded: str | None = None  # why the backend is not in its normal state
    supports_ttl: bool = False  # worker leases (`ttl`): etcd only
    # Backends shared by replicas (etcd) also hold the SharedConfig: load() sets
    # `shared_config` (None: not stored yet), the watch yields ConfigChange items.
    shares_config: bool = False
    shared_config: SharedConfig | None = None

    async def publish_config(self, config: SharedConfig) -> int | None:
        """Store the shared config (last writer wins); the revision, None when equal."""
        raise NotImplementedError(f"{type(self).__name__} does not share the config")

    @abc.abstractmethod
    async def load(self) -> tuple[int, dict[str, Worker]]:
        """(revision, all stored workers by id), read consistently at that revision."""

    @abc.abstractmethod
    async def put(self, worker: Worker) -> Stored:
        """Create or replace durably in one transaction that also enforces envoy_prefix
        uniqueness (Conflict naming the other worker). Nothing is written when the stored
        worker is equal."""

    @abc.abstractmethod
    async def delete(self, worker_id: str) -> int | None:
        """Remove durably; the revision, or None when the id was not stored."""

    @abc.abstractmethod
    async def replace_all(self, workers: dict[str, Worker]) -> int | None:
        """Make the stored set exactly `workers`, in one transaction (one revision; None
        when nothing changed). For `dhxds state import` and the first-start JSON import."""

    @abc.abstractmethod
    def watch(self, after_revision: int) -> AsyncIterator[list[Change | ConfigChange]]:
        """Every change with a revision > after_revision, exactly once, in order, in
        batches (a batch never splits a revision); ConfigChange items only from backends
        that share the config. Raises Compacted when changes after
        `after_revision` are no longer kept. An empty batch says the watch is (re-)established
        (etcd yields one when its watch is created; the Registry then clears `degraded`)."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Release connections and threads."""


# --- JSON export/import format ------------------------------------------------------------
def parse_state(raw: str, source: str) -> dict[str, Worker]:
    """Validate a whole dhxds-workers/1 file; every problem is a RegistryError naming it."""
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


def read_state_file(path: str | Path) -> dict[str, Worker]:
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"state file {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise RegistryError(f"cannot read state file {path}: {exc.strerror}") from exc
    return parse_state(raw, str(path))


def dump_state(workers: dict[str, Worker]) -> str:
    data = {"format": STATE_FORMAT, "workers": [workers[k].stored_dict() for k in sorted(workers)]}
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def sqlite_paths(state_path: str | Path) -> tuple[Path, Path]:
    """`state.path` -> (the SQLite file, the JSON file imported on its first start).
    `workers.db` and `workers.json` both mean the pair workers.db / workers.json."""
    path = Path(state_path)
    db = path.with_suffix(".db") if path.suffix == ".json" else path
    return db, db.with_suffix(".json")


# --- SQLite -----------------------------------------------------------------------------------
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    envoy_prefix TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    revision INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS changes_revision ON changes (revision);
"""


TTL_NEEDS_ETCD = (
    "ttl (a worker lease) needs state.backend etcd; the SQLite registry keeps a worker until "
    "it is removed: register it without ttl (and DELETE it when it goes away)"
)


def _encode(worker: Worker) -> str:
    return json.dumps(worker.stored_dict(), sort_keys=True, separators=(",", ":"))


class SqliteBackend(RegistryBackend):
    """One SQLite file in WAL mode: a row per worker (id PRIMARY KEY, envoy_prefix UNIQUE),
    a change log (the watch reads it; the newest `keep_changes` revisions are kept) and the
    revision counter. Each write is one transaction of O(1) rows. All SQLite calls run on one
    dedicated thread, never on the event loop.

    synchronous=FULL (default): the WAL is fsynced at every commit, so a write that returned
    survives a power loss, not only a crash of the process. NORMAL (WAL) syncs only at
    checkpoints: it survives kill -9 but can lose the newest commits on power loss."""

    POLL_S = 0.5  # the watch also sees writes of other processes (`dhxds state import`)
    BATCH_REVISIONS = 1000

    def __init__(
        self,
        path: str | Path,
        import_json: str | Path | None = None,
        synchronous: str = "FULL",
        keep_changes: int = 10_000,
    ) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.import_json = Path(import_json) if import_json else None
        self.synchronous = synchronous
        self.keep_changes = keep_changes
        self._write_problem: str | None = None
        self._invalid: set[str] = set()  # stored rows that fail validation (edited by hand)
        self._db: sqlite3.Connection | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dhxds-db")
        self._wakers: set[asyncio.Event] = set()

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property  # type: ignore[override]
    def degraded(self) -> str | None:
        reasons = [self._write_problem] if self._write_problem else []
        if self._invalid:
            bad = sorted(self._invalid)
            reasons.append(
                f"registry database {self.path}: {len(bad)} stored worker(s) are invalid and "
                f"not served (re-register or remove them): {', '.join(bad[:10])}"
            )
        return "; ".join(reasons) or None

    def _wake(self) -> None:
        for event in self._wakers:
            event.set()

    # --- on the DB thread ---
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        path = self.path
        existed = path.exists()
        unclean = Path(f"{path}-wal").exists() and Path(f"{path}-wal").stat().st_size > 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, timeout=10)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"cannot open registry database {path}: {exc}") from exc
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RegistryError(f"registry database {path}: cannot use WAL mode ({mode})")
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            problems = [row[0] for row in db.execute("PRAGMA integrity_check(20)")]
            if problems != ["ok"]:
                raise RegistryError(
                    f"registry database {path} is damaged (integrity check: "
                    f"{'; '.join(problems)[:500]}); move it away and restore a "
                    "`dhxds state export` copy with `dhxds state import`"
                )
            db.executescript(SCHEMA)
            fmt = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if fmt is None:
                with _transaction(db):
                    db.execute("INSERT INTO meta VALUES ('format', ?)", (DB_FORMAT,))
                    db.execute("INSERT INTO meta VALUES ('revision', 0), ('compacted', 0)")
            elif fmt[0] != DB_FORMAT:
                raise RegistryError(
                    f"registry database {path} is a {fmt[0]!r} file, not {DB_FORMAT}"
                )
        except sqlite3.Error as exc:
            db.close()
            raise RegistryError(f"registry database {path} cannot be used: {exc}") from exc
        except RegistryError:
            db.close()
            raise
        if not existed:
            os.chmod(path, 0o640)
        if unclean:
            log.info("registry database %s: the last run did not stop cleanly; recovered", path)
        if not existed and self.import_json is not None and self.import_json.exists():
            self._import_first_start(db)
        return db

    def _import_first_start(self, db: sqlite3.Connection) -> None:
        source = self.import_json
        assert source is not None
        try:
            workers = read_state_file(source)
            self._replace_all(workers, db)
        except BaseException:
            db.close()
            self.path.unlink(missing_ok=True)  # next start imports again
            raise
        log.warning(
            "IMPORTED %d worker(s) from the JSON state file %s into the registry database %s; "
            "the JSON file is no longer read (kept as %s.imported)",
            len(workers),
            source,
            self.path,
            source,
        )
        try:
            source.rename(Path(f"{source}.imported"))
        except OSError as exc:
            log.warning("cannot rename %s after importing it: %s", source, exc)

    def _revision(self, db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])

    def _load(self) -> tuple[int, dict[str, Worker]]:
        db = self._conn()
        try:
            with _transaction(db, "BEGIN"):
                revision = self._revision(db)
                rows = db.execute("SELECT id, data FROM workers ORDER BY id").fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read registry database {self.path}: {exc}") from exc
        workers: dict[str, Worker] = {}
        bad: list[str] = []
        for worker_id, data in rows:
            try:
                workers[worker_id] = Worker.from_dict(json.loads(data), stored=True)
            except (ValueError, ValidationError) as exc:
                log.error("registry %s: stored worker %s is invalid: %s", self.path, worker_id, exc)
                bad.append(worker_id)
        self._invalid = set(bad)
        return revision, workers

    def _write(self, db: sqlite3.Connection, changes: list[tuple[str, Worker | None]]) -> int:
        """Inside a transaction: apply the changes at one new revision."""
        revision = self._revision(db) + 1
        for worker_id, worker in changes:
            if worker is None:
                db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))
                db.execute(
                    "INSERT INTO changes (revision, worker_id, data) VALUES (?, ?, NULL)",
                    (revision, worker_id),
                )
            else:
                data = _encode(worker)
                db.execute(
                    "INSERT INTO workers (id, envoy_prefix, data, revision) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET envoy_prefix = excluded.envoy_prefix, "
                    "data = excluded.data, revision = excluded.revision",
                    (worker_id, worker.envoy_prefix, data, revision),
                )
                db.execute(
                    "INSERT INTO changes (revision, worker_id, data) VALUES (?, ?, ?)",
                    (revision, worker_id, data),
                )
        db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))
        horizon = revision - self.keep_changes
        if horizon > 0 and revision % max(1, min(1000, self.keep_changes // 10)) == 0:
            db.execute("DELETE FROM changes WHERE revision <= ?", (horizon,))
            db.execute("UPDATE meta SET value = ? WHERE key = 'compacted'", (horizon,))
        return revision

    def _guarded(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run fn in a write transaction; an I/O failure is a RegistryError (and degraded)."""
        db = self._conn()
        try:
            with _transaction(db, "BEGIN IMMEDIATE"):
                result = fn(db)
        except sqlite3.IntegrityError as exc:  # the UNIQUE backstop; put() checks first
            raise Conflict(f"the change violates a registry constraint: {exc}") from exc
        except sqlite3.Error as exc:
            self._write_problem = f"cannot write registry database {self.path}: {exc}"
            raise RegistryError(self._write_problem) from exc
        if self._write_problem:
            log.warning("registry database %s written again; no longer degraded", self.path)
            self._write_problem = None
        return result

    def _put(self, worker: Worker) -> Stored:
        if worker.ttl is not None:
            raise RegistryError(TTL_NEEDS_ETCD)

        def txn(db: sqlite3.Connection) -> Stored:
            row = db.execute("SELECT data FROM workers WHERE id = ?", (worker.id,)).fetchone()
            if row is not None and row[0] == _encode(worker):
                return Stored(self._revision(db), False, False)
            owner = db.execute(
                "SELECT id FROM workers WHERE envoy_prefix = ? AND id != ?",
                (worker.envoy_prefix, worker.id),
            ).fetchone()
            if owner is not None:
                raise _PrefixTaken(owner[0])
            revision = self._write(db, [(worker.id, worker)])
            self._invalid.discard(worker.id)
            return Stored(revision, row is None, True)

        try:
            return self._guarded(txn)
        except _PrefixTaken as taken:
            raise Conflict(
                f"envoy_prefix {worker.envoy_prefix} is already used by worker {taken.args[0]}"
            ) from None

    def _delete(self, worker_id: str) -> int | None:
        def txn(db: sqlite3.Connection) -> int | None:
            if db.execute("SELECT 1 FROM workers WHERE id = ?", (worker_id,)).fetchone() is None:
                return None
            self._invalid.discard(worker_id)
            return self._write(db, [(worker_id, None)])

        return self._guarded(txn)

    def _replace_all(
        self, workers: dict[str, Worker], db: sqlite3.Connection | None = None
    ) -> int | None:
        leased = sorted(w.id for w in workers.values() if w.ttl is not None)
        if leased:
            raise RegistryError(f"worker(s) {', '.join(leased[:10])}: {TTL_NEEDS_ETCD}")

        def txn(db: sqlite3.Connection) -> int | None:
            stored = dict(db.execute("SELECT id, data FROM workers").fetchall())
            changes: list[tuple[str, Worker | None]] = [
                (worker_id, None) for worker_id in sorted(stored.keys() - workers.keys())
            ]
            changes += [
                (worker_id, worker)
                for worker_id, worker in sorted(workers.items())
                if stored.get(worker_id) != _encode(worker)
            ]
            if not changes:
                return None
            # Rows whose prefix moves go first, so a swap of prefixes never meets UNIQUE.
            db.executemany("DELETE FROM workers WHERE id = ?", [(change[0],) for change in changes])
            return self._write(db, changes)

        if db is None:
            return self._guarded(txn)
        with _transaction(db, "BEGIN IMMEDIATE"):
            return txn(db)

    def _changes_after(self, after: int) -> list[Change]:
        db = self._conn()
        try:
            with _transaction(db, "BEGIN"):
                compacted = int(
                    db.execute("SELECT value FROM meta WHERE key = 'compacted'").fetchone()[0]
                )
                if after < compacted:
                    raise Compacted(
                        f"registry database {self.path}: changes up to revision {compacted} "
                        f"are compacted; cannot watch from {after}"
                    )
                rows = db.execute(
                    "SELECT revision, worker_id, data FROM changes "
                    "WHERE revision > ? AND revision <= ? ORDER BY seq",
                    (after, after + self.BATCH_REVISIONS),
                ).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read registry database {self.path}: {exc}") from exc
        out = []
        for revision, worker_id, data in rows:
            worker = None
            if data is not None:
                try:
                    worker = Worker.from_dict(json.loads(data), stored=True)
                except (ValueError, ValidationError) as exc:
                    log.error("registry change %d of %s is invalid: %s", revision, worker_id, exc)
            out.append(Change(revision, worker_id, worker))
        return out

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- the async interface ---
    async def load(self) -> tuple[int, dict[str, Worker]]:
        return await self._run(self._load)

    async def put(self, worker: Worker) -> Stored:
        stored = await self._run(self._put, worker)
        self._wake()
        return stored

    async def delete(self, worker_id: str) -> int | None:
        revision = await self._run(self._delete, worker_id)
        self._wake()
        return revision

    async def replace_all(self, workers: dict[str, Worker]) -> int | None:
        revision = await self._run(self._replace_all, workers)
        self._wake()
        return revision

    async def watch(self, after_revision: int) -> AsyncIterator[list[Change]]:
        cursor = after_revision
        wake = asyncio.Event()
        self._wakers.add(wake)
        try:
            while True:
                wake.clear()  # before the read: a commit after it sets the event again
                batch = await self._run(self._changes_after, cursor)
                if batch:
                    cursor = batch[-1].revision
                    yield batch
                    continue
                # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a cancel that
                # lands as the event fires, and the watch (and whoever awaits it) never ends.
                waiter = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({waiter}, timeout=self.POLL_S)
                finally:
                    waiter.cancel()
        finally:
            self._wakers.discard(wake)

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=False)


class _PrefixTaken(Exception):
    pass


class _transaction:
    """BEGIN ... COMMIT, ROLLBACK on any exception (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self.db, self.begin = db, begin

    def __enter__(self) -> None:
        self.db.execute(self.begin)

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")


def open_backend(state_path: str | Path) -> SqliteBackend:
    """The backend the config selects: `state.path` (.db, or a .json whose content is imported
    into the .db next to it on its first start)."""
    db, legacy = sqlite_paths(state_path)
    return SqliteBackend(db, import_json=legacy)


# --- the in-memory view -----------------------------------------------------------------------
class Registry:
    """Static workers (config) merged with the backend's, as the watch delivers them;
    notifies listeners after each applied batch of changes."""

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
        self._static_prefixes = {w.envoy_prefix: w.id for w in self.static.values()}
        # The config file's shared part; with a backend that shares it (etcd) the served one
        # is the backend's copy (docs/registry.md, "The shared config").
        self.file_config = SharedConfig(web_api, tuple(self.static.values())).normalized()
        self.stored: dict[str, Worker] = {}  # every stored worker, served or not
        self.dynamic: dict[str, Worker] = {}
        self._config_problem: str | None = None
        self.revision = 0
        self._listeners: list[Callable[[], None]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._watch_problem: str | None = None
        self._order = SortedIds()  # for state(): no re-sort per change
        # The last state handed out and the served workers changed since (None: anything may
        # have), so consumers can follow a state change in O(changed) (RegistryState.changed).
        self._last_state: RegistryState | None = None
        self._changed: dict[str, Worker | None] | None = None

    async def start(self) -> None:
        """Load the stored workers and follow the backend's watch from that revision. A
        backend that shares the config: publish the config file's part when it differs from
        the stored copy (last writer wins), then serve the stored copy."""
        revision, stored = await self.backend.load()
        if self.backend.shares_config:
            current = self.backend.shared_config
            if current != self.file_config:
                published = await self.backend.publish_config(self.file_config)
                if current is None:
                    log.info(
                        "stored the config file's web_api_service and %d static worker(s) in "
                        "%s (revision %s)",
                        len(self.file_config.static_workers),
                        self.backend.location,
                        published,
                    )
                else:
                    log.warning(
                        "this replica's config file differs from the shared config in %s; "
                        "published the file's version (last writer wins; every replica "
                        "serves it): %s",
                        self.backend.location,
                        current.difference(self.file_config),
                    )
                revision, stored = await self.backend.load()
        self._reset(revision, stored)
        self._task = asyncio.create_task(self._follow(), name="registry-watch")

    def _use_shared(self, config: SharedConfig | None, revision: int) -> bool:
        """Serve the backend's copy of the shared config; True when what is served changed."""
        if config is None:
            if self.backend.shares_config:
                log.warning(
                    "the shared config in %s is gone (revision %d); serving the last one "
                    "(a replica publishes its config file again when it starts)",
                    self.backend.location,
                    revision,
                )
            return False
        served = SharedConfig(self.web_api, tuple(self.static.values())).normalized()
        if config == served:
            return False
        if config != self.file_config:
            log.warning(
                "serving the shared config of %s (revision %d), published by another replica; "
                "it differs from this replica's config file: %s",
                self.backend.location,
                revision,
                self.file_config.difference(config),
            )
        else:
            log.info(
                "serving the shared config of %s (revision %d)", self.backend.location, revision
            )
        self.web_api = config.web_api_service
        self.static = {w.id: w for w in config.static_workers}
        self._static_prefixes = {w.envoy_prefix: w.id for w in self.static.values()}
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.backend.close()

    def _accept(self, worker_id: str, worker: Worker, loud: bool) -> bool:
        """Whether a stored worker can be served next to the static ones."""
        if worker_id in self.static:
            if loud:
                log.warning(
                    "worker %s is defined in the config file; its stored entry is ignored",
                    worker_id,
                )
            return False
        owner = self._static_prefixes.get(worker.envoy_prefix)
        if owner is not None:
            if loud:
                log.error(
                    "stored worker %s is ignored: its envoy_prefix %s is used by worker %s "
                    "of the config file",
                    worker_id,
                    worker.envoy_prefix,
                    owner,
                )
            return False
        return True

    def _reset(self, revision: int, stored: dict[str, Worker]) -> None:
        self._changed = None
        if self.backend.shares_config:
            self._use_shared(self.backend.shared_config, revision)
        self.stored = dict(stored)
        self._refilter()
        self._advance(revision)

    def _refilter(self) -> None:
        """The served dynamic workers: the stored ones that do not collide with a static one."""
        self.dynamic = {
            worker_id: worker
            for worker_id, worker in sorted(self.stored.items())
            if self._accept(worker_id, worker, loud=True)
        }

    async def _follow(self) -> None:
        while True:
            try:
                async for batch in self.backend.watch(self.revision):
                    if batch:  # empty: the backend says its watch is (re-)established
                        self._apply(batch)
                    if self._watch_problem:
                        log.warning("registry watch works again")
                        self._watch_problem = None
            except Compacted as exc:
                log.warning("%s; re-listing the registry", exc)
                try:
                    revision, stored = await self.backend.load()
                except RegistryError as load_exc:
                    self._watch_problem = str(load_exc)
                    await asyncio.sleep(WATCH_RETRY_S)
                    continue
                self._reset(revision, stored)
                self._notify()
            except asyncio.CancelledError:
                raise
            except RegistryError as exc:  # the message names the problem (etcd down, ...)
                problem = f"registry watch failed: {exc}"
                if problem != self._watch_problem:
                    log.warning(
                        "%s; serving the last state, retrying every %ss", problem, WATCH_RETRY_S
                    )
                self._watch_problem = problem
                await asyncio.sleep(WATCH_RETRY_S)
            except Exception as exc:
                self._watch_problem = f"registry watch failed: {exc}"
                log.exception("registry watch of %s failed; retrying", self.backend.location)
                await asyncio.sleep(WATCH_RETRY_S)

    def _apply(self, batch: list[Change | ConfigChange]) -> None:
        refilter = False
        touched: list[str] = []
        for change in batch:
            if isinstance(change, ConfigChange):
                refilter |= self._use_shared(change.config, change.revision)
                continue
            touched.append(change.worker_id)
            if change.worker is None:
                self.stored.pop(change.worker_id, None)
                self.dynamic.pop(change.worker_id, None)
            else:
                self.stored[change.worker_id] = change.worker
                if self._accept(change.worker_id, change.worker, loud=True):
                    self.dynamic[change.worker_id] = change.worker
                else:
                    self.dynamic.pop(change.worker_id, None)
        if refilter:  # other static workers: stored ones may collide, or no longer collide
            self._refilter()
            self._changed = None
        elif self._changed is not None:
            for worker_id in touched:
                self._changed[worker_id] = self.get(worker_id)
        self._advance(batch[-1].revision)
        self._notify()

    def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        keep = []
        for wanted, future in self._waiters:
            if wanted <= self.revision:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((wanted, future))
        self._waiters = keep

    async def wait_revision(self, revision: int, timeout: float = WRITE_VISIBLE_S) -> None:
        """Return once the local view holds `revision` (RegistryError after `timeout`)."""
        if self.revision >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RegistryError(
                f"stored at revision {revision} in {self.backend.location}, but the local view "
                f"is still at {self.revision} after {timeout:g}s"
                + (f" ({self._watch_problem})" if self._watch_problem else "")
            ) from None

    @property
    def degraded(self) -> str | None:
        """Why the registry is not in its normal state (a failed write or watch, invalid
        stored rows)."""
        return self._watch_problem or self.backend.degraded

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def workers(self) -> dict[str, Worker]:
        return {**self.dynamic, **self.static}

    def get(self, worker_id: str) -> Worker | None:
        return self.static.get(worker_id) or self.dynamic.get(worker_id)

    def state(self) -> RegistryState:
        last = self._last_state
        if last is not None and self._changed == {}:
            return last  # nothing changed: the same state (and token) again
        merged = self.workers()
        ordered = tuple(map(merged.__getitem__, self._order.update(merged.keys())))
        if last is not None and self._changed is not None:  # a new web_api_service resets it
            state = RegistryState(
                ordered,
                self.web_api,
                self.route_config_name,
                parent=last.token,
                changed=MappingProxyType(self._changed),
            )
        else:
            state = RegistryState(ordered, self.web_api, self.route_config_name)
        self._last_state, self._changed = state, {}
        return state

    async def put(self, worker: Worker) -> tuple[bool, bool]:
        """Store a worker; returns (created, changed) once the local view holds it."""
        if worker.id in self.static:
            raise Conflict(f"worker {worker.id} is defined in the config file; change it there")
        owner = self._static_prefixes.get(worker.envoy_prefix)
        if owner is not None:
            raise Conflict(f"envoy_prefix {worker.envoy_prefix} is already used by worker {owner}")
        stored = await self.backend.put(worker)
        if not stored.changed:
            return False, False
        await self.wait_revision(stored.revision)
        log.info(
            "worker %s %s: %s:%d (revision %d)",
            worker.id,
            "added" if stored.created else "replaced",
            worker.host,
            worker.port,
            stored.revision,
        )
        return stored.created, True

    async def delete(self, worker_id: str) -> bool:
        if worker_id in self.static:
            raise Conflict(f"worker {worker_id} is defined in the config file; remove it there")
        revision = await self.backend.delete(worker_id)
        if revision is None:
            return False
        await self.wait_revision(revision)
        log.info("worker %s removed (revision %d)", worker_id, revision)
        return True

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not stop the view from following
                log.exception("registry listener %r failed", listener)
