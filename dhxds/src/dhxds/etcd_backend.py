"""The etcd registry backend (issue 11): replicas of dhxds share one etcd cluster.

Keys under a prefix (default `/dhxds/`):
  <prefix>workers/<id>            the worker (JSON, as the SQLite backend stores it)
  <prefix>prefixes/<envoy_prefix> the id that owns that envoy_prefix (the uniqueness guard)

Revisions are etcd's store revisions: they grow by one per committed transaction, but they
are not dense per worker (other keys of the same etcd move them too). The Registry relies only
on "grows, and a write's revision is reached by the watch".

The client is `aetcd` (asyncio, grpc.aio): its generated etcd v3 stubs over one gRPC channel
per endpoint, TLS when configured. Calls move to the next endpoint when one is unavailable;
when none answers, the call raises `Unavailable` (the API answers 503). The watch uses the raw
Watch stream of the same stubs so that one watch response is one batch (aetcd's watch
iterator yields single events and loses the revision boundaries the interface needs).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc

from .config import EtcdSettings
from .model import ValidationError, Worker
from .registry import (
    Change,
    Compacted,
    ConfigChange,
    Conflict,
    RegistryBackend,
    RegistryError,
    SharedConfig,
    Stored,
    Unavailable,
)

try:  # the optional extra dhxds[etcd]
    from aetcd import rpc as etcdrpc
    from aetcd.utils import prefix_range_end
except ImportError:  # pragma: no cover - reported by EtcdBackend()
    etcdrpc = None

log = logging.getLogger(__name__)
T = TypeVar("T")
_NO_ANSWER = object()  # _round: no endpoint answered
CALL_TIMEOUT_S = 5.0
# A leader election (the election timeout, 1 s by default) makes every member answer
# UNAVAILABLE for a moment: keep going round the endpoints that long before answering 503.
ELECTION_WINDOW_S = 3.0
ELECTION_PAUSE_S = 0.2
MAX_ATTEMPTS = 20  # compare failures of put/delete caused by concurrent writes
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}
# Watches fail on a member that lost its leader instead of going silent (clientv3 sets it too).
REQUIRE_LEADER = (("hasleader", "true"),)
CHANNEL_OPTIONS = [
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def parse_endpoint(url: str) -> tuple[str, bool]:
    """'http://host:port' | 'https://host:port' -> ('host:port', tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"etcd endpoint {url!r} must be http(s)://host:port")
    try:
        port = parts.port or 2379
    except ValueError as exc:
        raise ValueError(f"etcd endpoint {url!r}: {exc}") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "https"


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise RegistryError(f"cannot read etcd {what} {path}: {exc.strerror}") from exc


class _Endpoint:
    def __init__(self, url: str, credentials: grpc.ChannelCredentials | None) -> None:
        self.url = url
        target, tls = parse_endpoint(url)
        if tls or credentials is not None:
            creds = credentials or grpc.ssl_channel_credentials()
            self.channel = grpc.aio.secure_channel(target, creds, options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.kv = etcdrpc.KVStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in UNAVAILABLE_CODES


def _rpc_text(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def _encode(worker: Worker) -> bytes:
    return json.dumps(worker.stored_dict(), sort_keys=True, separators=(",", ":")).encode()


class EtcdBackend(RegistryBackend):
    """Workers in etcd; see the module docstring and docs/registry.md."""

    supports_ttl = True  # a worker with `ttl`: both of its keys are attached to an etcd lease
    shares_config = True  # web_api_service + static workers: the key <prefix>config

    def __init__(self, settings: EtcdSettings) -> None:
        if etcdrpc is None:
            raise RegistryError(
                "state.backend etcd needs the etcd client: pip install 'dhxds[etcd]' (aetcd)"
            )
        if not settings.endpoints:
            raise RegistryError("state.etcd.endpoints is empty")
        self.settings = settings
        self.location = f"etcd {','.join(settings.endpoints)} prefix {settings.prefix}"
        root = settings.prefix.encode()
        self._root = root
        self._workers = root + b"workers/"
        self._prefixes = root + b"prefixes/"
        self._config = root + b"config"
        self.shared_config: SharedConfig | None = None
        self._config_problem: str | None = None
        self._credentials: grpc.ChannelCredentials | None = None
        if settings.ca_file or settings.cert_file or settings.key_file:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(settings.ca_file, "ca_file"),
                private_key=_read(settings.key_file, "key_file"),
                certificate_chain=_read(settings.cert_file, "cert_file"),
            )
        self._endpoints: list[_Endpoint] | None = None
        self._current = 0
        self._problem: str | None = None
        self._invalid: set[str] = set()

    # --- connections ---------------------------------------------------------------------
    def _all(self) -> list[_Endpoint]:
        if self._endpoints is None:  # channels belong to the running loop: made on first use
            self._endpoints = [_Endpoint(u, self._credentials) for u in self.settings.endpoints]
        return self._endpoints

    @property  # type: ignore[override]
    def degraded(self) -> str | None:
        reasons = [r for r in (self._problem, self._config_problem) if r]
        if self._invalid:
            bad = sorted(self._invalid)
            reasons.append(
                f"{self.location}: {len(bad)} stored worker(s) are invalid and not served "
                f"(re-register or remove them): {', '.join(bad[:10])}"
            )
        return "; ".join(reasons) or None

    async def _call(self, fn: Callable[[_Endpoint], Awaitable[T]], what: str) -> T:
        """fn on the current endpoint, then on the others while they are unavailable; rounds
        repeat for ELECTION_WINDOW_S so an election between live members is not a 503."""
        deadline = asyncio.get_running_loop().time() + ELECTION_WINDOW_S
        while True:
            errors: list[str] = []
            result = await self._round(fn, what, errors)
            if result is not _NO_ANSWER:
                return result  # type: ignore[return-value]
            if asyncio.get_running_loop().time() + ELECTION_PAUSE_S > deadline:
                break
            await asyncio.sleep(ELECTION_PAUSE_S)
        self._problem = f"etcd unavailable ({what}): {'; '.join(errors)}"[:1000]
        raise Unavailable(self._problem)

    async def _round(
        self, fn: Callable[[_Endpoint], Awaitable[T]], what: str, errors: list[str]
    ) -> T | object:
        """One try on every endpoint, the current one first; _NO_ANSWER when none answered."""
        endpoints = self._all()
        for step in range(len(endpoints)):
            index = (self._current + step) % len(endpoints)
            endpoint = endpoints[index]
            try:
                result = await fn(endpoint)
            except grpc.aio.AioRpcError as exc:
                if not _unavailable(exc):
                    raise RegistryError(
                        f"{what} failed at etcd {endpoint.url}: {_rpc_text(exc)}"
                    ) from exc
                errors.append(f"{endpoint.url}: {_rpc_text(exc)}")
                continue
            if index != self._current:
                log.warning("etcd: now using %s (%s)", endpoint.url, "; ".join(errors))
                self._current = index
            if self._problem:
                log.warning("etcd answers again (%s); no longer degraded", endpoint.url)
                self._problem = None
            return result
        return _NO_ANSWER

    async def _range(self, key: bytes, end: bytes | None = None) -> Any:
        request = etcdrpc.RangeRequest(key=key, range_end=end or b"")
        return await self._call(
            lambda e: e.kv.Range(request, timeout=CALL_TIMEOUT_S), "read registry"
        )

    async def _txn(self, compare: list, success: list, what: str, read: list | None = None) -> Any:
        request = etcdrpc.TxnRequest(compare=compare, success=success, failure=read or [])
        return await self._call(lambda e: e.kv.Txn(request, timeout=CALL_TIMEOUT_S), what)

    # --- message helpers -----------------------------------------------------------------
    @staticmethod
    def _mod_equals(key: bytes, revision: int) -> Any:
        return etcdrpc.Compare(
            key=key,
            target=etcdrpc.Compare.MOD,
            result=etcdrpc.Compare.EQUAL,
            mod_revision=revision,
        )

    @staticmethod
    def _put(key: bytes, value: bytes, lease: int = 0) -> Any:
        return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value, lease=lease))

    @staticmethod
    def _del(key: bytes) -> Any:
        return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key))

    @staticmethod
    def _get(key: bytes) -> Any:
        return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key))

    def _worker_key(self, worker_id: str) -> bytes:
        return self._workers + worker_id.encode()

    def _prefix_key(self, envoy_prefix: str) -> bytes:
        return self._prefixes + envoy_prefix.encode()

    def _decode(self, key: bytes, value: bytes) -> tuple[str, Worker | None]:
        worker_id = key[len(self._workers) :].decode()
        try:
            worker = Worker.from_dict(json.loads(value), stored=True)
        except (ValueError, ValidationError) as exc:
            log.error("%s: stored worker %s is invalid: %s", self.location, worker_id, exc)
            self._invalid.add(worker_id)
            return worker_id, None
        self._invalid.discard(worker_id)
        return worker_id, worker

    async def _read_pair(self, worker: Worker) -> tuple[int, Any, Any]:
        """(revision, kv of workers/<id> or None, kv of prefixes/<p> or None), consistent."""
        keys = [self._worker_key(worker.id), self._prefix_key(worker.envoy_prefix)]
        resp = await self._txn([], [self._get(k) for k in keys], "read worker")
        stored, owner = (r.response_range.kvs for r in resp.responses)
        return resp.header.revision, stored[0] if stored else None, owner[0] if owner else None

    # --- worker leases (ttl) --------------------------------------------------------------
    async def _grant(self, ttl: int, worker_id: str) -> int:
        request = etcdrpc.LeaseGrantRequest(TTL=ttl)
        resp = await self._call(
            lambda e: e.lease.LeaseGrant(request, timeout=CALL_TIMEOUT_S),
            f"grant a lease for worker {worker_id}",
        )
        if resp.error:
            raise RegistryError(f"{self.location}: lease for worker {worker_id}: {resp.error}")
        return int(resp.ID)

    async def _renew(self, lease: int, worker_id: str) -> bool:
        """Renew a lease once (LeaseKeepAlive); False when it has expired meanwhile."""

        async def keepalive(endpoint: _Endpoint) -> Any:
            call = endpoint.lease.LeaseKeepAlive(timeout=CALL_TIMEOUT_S)
            try:
                await call.write(etcdrpc.LeaseKeepAliveRequest(ID=lease))
                return await call.read()
            finally:
                call.cancel()

        resp = await self._call(keepalive, f"renew the lease of worker {worker_id}")
        return resp is not grpc.aio.EOF and resp.TTL > 0

    async def _revoke(self, lease: int) -> None:
        """Best effort: a lease no key uses any more (it would expire by itself)."""
        if not lease:
            return
        request = etcdrpc.LeaseRevokeRequest(ID=lease)
        try:
            await self._call(
                lambda e: e.lease.LeaseRevoke(request, timeout=CALL_TIMEOUT_S), "revoke a lease"
            )
        except RegistryError as exc:  # NOT_FOUND: it expired already
            log.debug("lease %x not revoked: %s", lease, exc)

    async def _stale_owner(self, owner: Any) -> bool:
        """A prefixes/<p> key whose worker key is gone (left by an older release or a hand
        edit) guards nothing: it may be taken over."""
        resp = await self._range(self._worker_key(owner.value.decode()))
        if resp.kvs:
            return False
        log.warning(
            "%s: envoy_prefix key %s names worker %s, which is not stored; taking it over",
            self.location,
            owner.key.decode(errors="replace"),
            owner.value.decode(errors="replace"),
        )
        return True

    # --- the interface -------------------------------------------------------------------
    def _decode_config(self, value: bytes, revision: int) -> SharedConfig | None:
        """The stored shared config; an invalid one keeps the last good one (ERROR,
        degraded) so a hand edit cannot take the web_api_service away."""
        try:
            config = SharedConfig.decode(value, f"{self.location} key {self._config.decode()}")
        except RegistryError as exc:
            log.error("%s (revision %d); serving the last valid one", exc, revision)
            self._config_problem = str(exc)
            return self.shared_config
        self._config_problem = None
        return config

    async def load(self) -> tuple[int, dict[str, Worker]]:
        """Workers and the shared config (`shared_config`), read at one revision."""
        resp = await self._range(self._root, prefix_range_end(self._root))
        workers: dict[str, Worker] = {}
        self._invalid = set()
        config: SharedConfig | None = None
        for kv in resp.kvs:
            if kv.key == self._config:
                config = self._decode_config(kv.value, kv.mod_revision)
            elif kv.key.startswith(self._workers):
                worker_id, worker = self._decode(kv.key, kv.value)
                if worker is not None:
                    workers[worker_id] = worker
        self.shared_config = config
        return resp.header.revision, workers

    async def publish_config(self, config: SharedConfig) -> int | None:
        """Store the shared config unless equal (last writer wins, no compare)."""
        value = config.encode()
        resp = await self._range(self._config)
        if resp.kvs and resp.kvs[0].value == value:
            return None
        txn = await self._txn([], [self._put(self._config, value)], "publish the shared config")
        return txn.header.revision

    async def put(self, worker: Worker) -> Stored:
        value = _encode(worker)
        created_first: bool | None = None
        tried = False
        lease = 0  # granted for this put (ttl), attached to both keys
        try:
            for _attempt in range(MAX_ATTEMPTS):
                revision, stored, owner = await self._read_pair(worker)
                if created_first is None:
                    created_first = stored is None
                if stored is not None and stored.value == value:
                    if stored.lease and stored.lease == lease:
                        # A retry after an ambiguous failure found its own commit.
                        return Stored(stored.mod_revision, bool(created_first), True)
                    if tried and stored.mod_revision > 0 and not worker.ttl:
                        return Stored(stored.mod_revision, bool(created_first), True)
                    if not worker.ttl:
                        return Stored(revision, False, False)
                    # The same worker with a ttl: a repeated PUT renews its lease.
                    if stored.lease and await self._renew(stored.lease, worker.id):
                        return Stored(revision, False, False)
                    # No lease on it (stored before) or it just expired: attach a new one.
                if (
                    owner is not None
                    and owner.value.decode() != worker.id
                    and not await self._stale_owner(owner)
                ):
                    raise Conflict(
                        f"envoy_prefix {worker.envoy_prefix} is already used by worker "
                        f"{owner.value.decode()}"
                    )
                if worker.ttl and not lease:
                    lease = await self._grant(worker.ttl, worker.id)
                compare = [
                    self._mod_equals(
                        self._worker_key(worker.id), stored.mod_revision if stored else 0
                    ),
                    self._mod_equals(
                        self._prefix_key(worker.envoy_prefix), owner.mod_revision if owner else 0
                    ),
                ]
                success = [
                    self._put(self._worker_key(worker.id), value, lease),
                    self._put(self._prefix_key(worker.envoy_prefix), worker.id.encode(), lease),
                ]
                if stored is not None:
                    try:
                        old_prefix = json.loads(stored.value).get("envoy_prefix")
                    except ValueError:
                        old_prefix = None
                    if isinstance(old_prefix, str) and old_prefix != worker.envoy_prefix:
                        success.append(self._del(self._prefix_key(old_prefix)))
                tried = True
                resp = await self._txn(compare, success, f"store worker {worker.id}")
                if resp.succeeded:
                    self._invalid.discard(worker.id)
                    if stored is not None and stored.lease and stored.lease != lease:
                        await self._revoke(stored.lease)  # no key of ours is on it any more
                    lease = 0  # in use: keep it
                    return Stored(resp.header.revision, stored is None, True)
            raise RegistryError(
                f"{self.location}: worker {worker.id} not stored: {MAX_ATTEMPTS} concurrent changes"
            )
        finally:
            if lease:  # granted but not used (Conflict, failure)
                await self._revoke(lease)

    async def delete(self, worker_id: str) -> int | None:
        key = self._worker_key(worker_id)
        tried = False
        for _attempt in range(MAX_ATTEMPTS):
            resp = await self._range(key)
            if not resp.kvs:
                # Gone after an attempt of ours (an ambiguous failure, or another replica
                # deleted it meanwhile): removed, as far as this caller can tell.
                return resp.header.revision if tried else None
            kv = resp.kvs[0]
            success = [self._del(key)]
            try:
                prefix = json.loads(kv.value).get("envoy_prefix")
            except ValueError:
                prefix = None
            if isinstance(prefix, str):
                # Only when this id owns it (a hand-edited value must not free another's).
                success.append(
                    etcdrpc.RequestOp(
                        request_txn=etcdrpc.TxnRequest(
                            compare=[
                                etcdrpc.Compare(
                                    key=self._prefix_key(prefix),
                                    target=etcdrpc.Compare.VALUE,
                                    result=etcdrpc.Compare.EQUAL,
                                    value=worker_id.encode(),
                                )
                            ],
                            success=[self._del(self._prefix_key(prefix))],
                        )
                    )
                )
            tried = True
            txn = await self._txn(
                [self._mod_equals(key, kv.mod_revision)], success, f"remove worker {worker_id}"
            )
            if txn.succeeded:
                self._invalid.discard(worker_id)
                await self._revoke(kv.lease)
                return txn.header.revision
        raise RegistryError(
            f"{self.location}: worker {worker_id} not removed: {MAX_ATTEMPTS} concurrent changes"
        )

    async def replace_all(self, workers: dict[str, Worker]) -> int | None:
        leases: dict[str, int] = {}
        try:
            return await self._replace_all(workers, leases)
        finally:
            for lease in leases.values():  # granted, not used
                await self._revoke(lease)

    async def _replace_all(self, workers: dict[str, Worker], leases: dict[str, int]) -> int | None:
        root = self.settings.prefix.encode()
        for _attempt in range(MAX_ATTEMPTS):
            resp = await self._range(root, prefix_range_end(root))
            revision = resp.header.revision
            stored = {
                kv.key[len(self._workers) :].decode(): kv.value
                for kv in resp.kvs
                if kv.key.startswith(self._workers)
            }
            prefixes = {
                kv.key[len(self._prefixes) :].decode(): kv.value.decode()
                for kv in resp.kvs
                if kv.key.startswith(self._prefixes)
            }
            ops = [self._del(self._worker_key(i)) for i in sorted(stored.keys() - workers.keys())]
            changed = {i: w for i, w in sorted(workers.items()) if stored.get(i) != _encode(w)}
            if not ops and not changed:
                return None
            # A changed worker with a ttl gets a lease of its own for both of its keys.
            for i, w in changed.items():
                if w.ttl and i not in leases:
                    leases[i] = await self._grant(w.ttl, i)
            ops += [
                self._put(self._worker_key(i), _encode(w), leases.get(i, 0))
                for i, w in changed.items()
            ]
            wanted = {w.envoy_prefix: i for i, w in workers.items()}
            ops += [self._del(self._prefix_key(p)) for p in sorted(prefixes.keys() - wanted.keys())]
            ops += [
                self._put(self._prefix_key(p), i.encode(), leases.get(i, 0))
                for p, i in sorted(wanted.items())
                if prefixes.get(p) != i or i in changed
            ]
            if len(ops) > MAX_TXN_OPS:
                raise RegistryError(
                    f"{self.location}: replacing the registry needs {len(ops)} operations in "
                    f"one transaction, more than etcd's default --max-txn-ops {MAX_TXN_OPS}: "
                    "raise --max-txn-ops on the etcd members, or import in smaller steps"
                )
            # Nothing under the prefix changed since the read (a range compare).
            unchanged = etcdrpc.Compare(
                key=root,
                range_end=prefix_range_end(root),
                target=etcdrpc.Compare.MOD,
                result=etcdrpc.Compare.LESS,
                mod_revision=revision + 1,
            )
            txn = await self._txn([unchanged], ops, "replace the registry")
            if txn.succeeded:
                used = {i for i in changed if i in leases}
                for i in sorted(set(leases) - used):
                    await self._revoke(leases.pop(i))
                leases.clear()
                return txn.header.revision
        raise RegistryError(f"{self.location}: registry not replaced: too many concurrent changes")

    async def watch(self, after_revision: int) -> AsyncIterator[list[Change | ConfigChange]]:
        endpoint = self._all()[self._current]
        # The whole prefix: workers/ and config (prefixes/ events are skipped).
        request = etcdrpc.WatchRequest(
            create_request=etcdrpc.WatchCreateRequest(
                key=self._root,
                range_end=prefix_range_end(self._root),
                start_revision=after_revision + 1,
            )
        )
        requests: asyncio.Queue[Any] = asyncio.Queue()
        requests.put_nowait(request)

        async def outgoing() -> AsyncIterator[Any]:
            while True:
                item = await requests.get()
                if item is None:
                    return
                yield item

        call = endpoint.watch.Watch(outgoing(), metadata=REQUIRE_LEADER)
        try:
            async for resp in call:
                if self._problem:  # etcd answers again (the watch's created response)
                    log.warning("etcd answers again (%s); no longer degraded", endpoint.url)
                    self._problem = None
                if resp.compact_revision:
                    raise Compacted(
                        f"{self.location}: etcd compacted revisions up to "
                        f"{resp.compact_revision}; cannot watch from {after_revision}"
                    )
                if resp.canceled:
                    raise RegistryError(
                        f"{self.location}: etcd {endpoint.url} canceled the watch: "
                        f"{resp.cancel_reason or 'no reason given'}"
                    )
                if resp.created:
                    yield []  # established: the Registry clears its watch problem
                batch: list[Change | ConfigChange] = []
                for event in resp.events:
                    kv = event.kv
                    if kv.key == self._config:
                        if event.type == etcdrpc.Event.DELETE:
                            config = None
                        else:
                            config = self._decode_config(kv.value, kv.mod_revision)
                        self.shared_config = config or self.shared_config
                        batch.append(ConfigChange(kv.mod_revision, config))
                        continue
                    if not kv.key.startswith(self._workers):
                        continue  # prefixes/<p>: the uniqueness guard, not served
                    if event.type == etcdrpc.Event.DELETE:
                        worker_id = kv.key[len(self._workers) :].decode()
                        self._invalid.discard(worker_id)
                        batch.append(Change(kv.mod_revision, worker_id, None))
                    else:
                        worker_id, worker = self._decode(kv.key, kv.value)
                        batch.append(Change(kv.mod_revision, worker_id, worker))
                if batch:
                    yield batch
        except grpc.aio.AioRpcError as exc:
            problem = f"etcd watch at {endpoint.url} failed: {_rpc_text(exc)}"
            if _unavailable(exc):
                # Let the next call (the Registry retries every second) try another member.
                self._current = (self._current + 1) % len(self._all())
                raise Unavailable(problem) from exc
            raise RegistryError(problem) from exc
        finally:
            requests.put_nowait(None)
            call.cancel()

    async def compact(self, revision: int) -> None:
        """Compact etcd's history up to `revision` (tests; operators use etcdctl)."""
        request = etcdrpc.CompactionRequest(revision=revision, physical=True)
        await self._call(lambda e: e.kv.Compact(request, timeout=CALL_TIMEOUT_S), "compact")

    async def close(self) -> None:
        for endpoint in self._endpoints or []:
            await endpoint.channel.close()
        self._endpoints = None
