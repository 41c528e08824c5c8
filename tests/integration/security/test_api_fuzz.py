"""Fuzz the registration API of a real dhxds daemon from its own OpenAPI description.

schemathesis reads GET /openapi.json of the running daemon and generates requests for every
operation, valid ones (positive) and ones that break the schema (negative: bad ids, bodies,
query values, headers); each is sent with a valid token, without one, with a wrong one or
with a malformed Authorization header. A second generator sends what the schema cannot
express: raw bodies (not JSON, not UTF-8, nested too deeply, over 64 KiB), raw paths and raw
query strings. Every response must be < 500 and conform to the schema (status code, content
type, body), and every rejected request (4xx) must leave the registry exactly as it was: the
worker list served by GET /v1/workers and the registry's revision (bumped in the same
transaction as any write; the xDS versions the daemon serves are content hashes of that
state). At the end the daemon is still running, healthy, and logged no internal error.

Only loopback traffic: a host name that would be accepted is replaced by `localhost` (from
/etc/hosts) before sending, so the daemon's resolver never asks a DNS server.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
import requests
import schemathesis
from dhops_testkit import (
    CDS_TYPE,
    HOST,
    RDS_TYPE,
    TOKEN,
    AckingAds,
    Daemon,
    route_clusters,
    wait_for,
)
from dhxds.model import ValidationError, validate_host
from envoy.config.cluster.v3 import cluster_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MIN_REQUESTS = 5000
STATIC = {"id": "static0", "host": HOST, "port": 24000, "envoy_prefix": "/static/zero"}
KNOWN = {"known1": {"host": HOST, "port": 24001, "envoy_prefix": "/known/one"}}
KNOWN_IDS = [STATIC["id"], *KNOWN]
# Examples per operation and generation mode: about 5,600 requests in all with RAW_EXAMPLES.
EXAMPLES = {
    ("PUT", "/v1/workers/{id}"): 850,
    ("GET", "/v1/workers/{id}"): 500,
    ("DELETE", "/v1/workers/{id}"): 400,
    ("GET", "/v1/workers"): 200,
    ("GET", "/v1/nodes"): 150,
    ("GET", "/metrics"): 150,
    ("GET", "/healthz"): 100,
    ("GET", "/openapi.json"): 50,
}
NO_NEGATIVE = {"/healthz", "/openapi.json"}  # no parameters, no security: nothing to break
RAW_EXAMPLES = 900
# Documented rules the OpenAPI schemas do not carry: ids and prefixes without '..', and a
# worker `ttl` only with state.backend etcd (this daemon has the SQLite registry).
UNSCHEMED_RULES = ("without '..'", "'.' or '..' segments", "needs state.backend etcd")
AUTH = [
    "valid",
    "valid",
    "valid",
    "valid",
    "generated",
    "none",
    "wrong",
    "scheme",
    "padded",
    "latin1",
]

SCALE = float(os.environ.get("DHOPS_FUZZ_SCALE", "1"))  # < 1: a quicker local run (no minimum)
sent: Counter = Counter()
statuses: Counter = Counter()


class Observer(AckingAds):
    """An ADS client that ACKs every response at once, like an Envoy: what the daemon serves.

    Connected, it also makes `wait=routable` really wait (for it)."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon, "fuzz-observer")

    def served(self) -> tuple[int, str, str]:
        """(responses received, CDS version, RDS version)."""
        with self.lock:
            cds, rds = self.last.get(CDS_TYPE), self.last.get(RDS_TYPE)
            return (
                self.received,
                getattr(cds, "version_info", ""),
                getattr(rds, "version_info", ""),
            )

    def workers(self) -> tuple[set[str], set[str]] | None:
        """(worker clusters in the last CDS, worker clusters routed by the last RDS)."""
        with self.lock:
            cds, rds = self.last.get(CDS_TYPE), self.last.get(RDS_TYPE)
        if cds is None or rds is None:
            return None
        clusters = {cluster_pb2.Cluster.FromString(r.value).name for r in cds.resources}
        routed = route_clusters(rds)
        return (
            {c for c in clusters if c.startswith("worker_")},
            {c for c in routed if c.startswith("worker_")},
        )


class Fuzz:
    """The daemon under test, what it serves, and the snapshot taken after the last request."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.session = requests.Session()
        self.observer = Observer(daemon)
        # The registry's revision, read from its database (autocommit: each read is current).
        self.db = sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True, isolation_level=None)
        self.state = self.snapshot()
        self.settle({}, self.state[1])

    def snapshot(self) -> tuple[int, str]:
        resp = self.session.get(
            f"{self.daemon.api}/v1/workers",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        revision = self.db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]
        return int(revision), resp.text

    def settle(self, before: dict | str, after: str) -> None:
        """After a change: wait until the observer holds and has ACKed what the daemon now
        serves (each added or changed worker routable on it, removed ones gone), then note
        what it holds. Until the next change it must receive nothing new."""
        old = json.loads(before)["workers"] if isinstance(before, str) else []
        new = json.loads(after)["workers"]
        old_by_id = {w["id"]: w for w in old}
        for worker in new:
            if old_by_id.get(worker["id"]) != worker:
                resp = self.daemon.call(
                    "GET", f"/v1/workers/{worker['id']}?wait=routable&timeout=30"
                )
                assert resp.status_code == 200, f"worker {worker['id']} not routable: {resp.text}"
        expected = {f"worker_{w['id']}" for w in new}
        wait_for(
            lambda: self.observer.workers() == (expected, expected), 30, "the observer in sync"
        )
        self.served = self.observer.served()

    def reset(self) -> None:
        """Make the known workers exist again (the fuzzer may have deleted or changed them)."""
        for worker_id, worker in KNOWN.items():
            resp = self.daemon.call("PUT", f"/v1/workers/{worker_id}", worker)
            assert resp.status_code in (200, 201), resp.text
        state = self.snapshot()
        if state != self.state:
            self.settle(self.state[1], state[1])
        self.state = state

    def after(self, status: int, what: str) -> None:
        """Check the invariants for the request just answered with `status`."""
        sent[what] += 1
        statuses[status] += 1
        assert status < 500, f"{what}: server error {status}"
        state = self.snapshot()
        if 400 <= status < 500:
            assert state == self.state, f"{what}: rejected with {status} but the registry changed"
        if state[0] == self.state[0]:
            # No change in the registry: nothing new served (no push, same versions).
            served = self.observer.served()
            assert served == self.served, (
                f"{what}: {status}, registry unchanged, but served {served} after {self.served}"
            )
        else:
            self.settle(self.state[1], state[1])
        self.state = state


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("fuzz"), extra={"static_workers": [STATIC]})
    daemon.start()
    fuzz = None
    try:
        fuzz = Fuzz(daemon)
        fuzz.reset()
        yield fuzz
    finally:
        if fuzz is not None:
            fuzz.observer.close()
            fuzz.db.close()
        daemon.stop()


@pytest.fixture(scope="module")
def schema(fuzz):
    return schemathesis.openapi.from_url(f"{fuzz.daemon.api}/openapi.json")


def _authorization(choice: str, generated: str | None) -> str | None:
    return {
        "valid": f"Bearer {TOKEN}",
        "generated": generated,
        "none": None,
        "wrong": f"Bearer {TOKEN}x",
        "scheme": f"Basic {TOKEN}",
        "padded": f"bearer  {TOKEN} ",
        "latin1": f"Bearer {TOKEN}\xff",  # sent as the byte 0xff: not UTF-8
    }[choice]


def _loopback_only(body: object) -> None:
    """A host the daemon would accept and resolve becomes `localhost` (no DNS traffic)."""
    if isinstance(body, dict) and isinstance(body.get("host"), str):
        try:
            host = validate_host(body["host"])
        except ValidationError:
            return
        try:
            ipaddress.ip_address(host)
        except ValueError:
            body["host"] = "localhost"


def _settings(examples: int):
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a CI failure reproduces locally
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# A skip proves nothing (and counts as a failure in scripts/test): operations with nothing to
# break get no negative case at all.
OPERATIONS = [
    (m, p, mode)
    for (m, p) in EXAMPLES
    for mode in ("positive", "negative")
    if mode == "positive" or p not in NO_NEGATIVE
]


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS, ids=str)
def test_fuzz_operation(fuzz, schema, method, path, mode):
    operation = schema[path][method]
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    fuzz.reset()

    @_settings(EXAMPLES[(method, path)])
    @given(
        case=operation.as_strategy(generation),
        auth=st.sampled_from(AUTH),
        known=st.sampled_from([None, None, None, *KNOWN_IDS]),
        host=st.sampled_from([None, HOST, "::1", "127.0.0.2", "localhost"]),
    )
    def run(case, auth, known, host):
        if mode == "positive":
            if known and "id" in (case.path_parameters or {}):
                case.path_parameters["id"] = known  # existing and static workers too
            if host and isinstance(case.body, dict):
                # A random string is rarely a valid host: make most bodies acceptable.
                case.body = {**case.body, "host": host}
                case.body.pop("tls_sni", None)
                if case.body.get("id") is not None:
                    case.body["id"] = case.path_parameters["id"]
        acceptable = mode == "positive" and auth in ("valid", "padded")
        if acceptable and case.query and "timeout" in case.query:
            case.query["wait"] = "routable"  # a rule OpenAPI 3.0 cannot express
        if method == "PUT" and not (mode == "positive" and host):
            acceptable = False  # a generated host is rarely one the daemon takes
        _loopback_only(case.body)
        headers = dict(case.headers or {})
        value = _authorization(auth, headers.pop("Authorization", None))
        if value is not None:
            headers["Authorization"] = value
        case.headers = headers
        response = case.call(base_url=fuzz.daemon.api, session=fuzz.session, timeout=70)
        fuzz.after(response.status_code, f"{method} {path} {mode}")
        case.validate_response(response, checks=CHECKS)
        if acceptable and response.status_code in (400, 401):
            # Valid by the schema, valid token: accepted, or refused for a documented rule
            # the schema's patterns do not carry.
            message = response.json()["error"]
            assert any(rule in message for rule in UNSCHEMED_RULES), (
                f"{method} {case.formatted_path} {case.query} {case.body!r}: "
                f"valid request refused: {response.status_code} {message}"
            )

    run()


# --- what the schema cannot express -------------------------------------------------------
_worker = st.fixed_dictionaries(
    {"host": st.sampled_from([HOST, "::1", "localhost"]), "port": st.integers(1, 65535)},
    optional={
        "envoy_prefix": st.sampled_from(["/a", "/known/one", "/static/zero", "/x/", "/."]),
        "tls": st.booleans(),
        "id": st.sampled_from(["r1", "known1", "static0"]),
    },
)
_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    _worker.map(lambda w: json.dumps(w).encode()),
    _worker.map(lambda w: json.dumps(w).encode()[: len(json.dumps(w)) // 2]),  # cut short
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),  # nested too deeply
    st.integers(1, 20_000).map(lambda n: b'{"host": "127.0.0.1", "port": 1' + b"0" * n + b"}"),
    st.integers(60_000, 70_000).map(lambda n: b'{"host": "' + b"a" * n + b'", "port": 1}'),
    st.sampled_from([b"", b" ", b"null", b"[]", b'"x"', b"1e999", b"NaN", b"\xff\xfe{}"]),
    st.sampled_from([b'{"host": "127.0.0.1", "port": 1, "host": "::1"}', b"{}" * 3]),
)
_ids = st.one_of(
    st.sampled_from(["r1", "known1", "static0", "", "..", "a..b", "%2e%2e", "a%2Fb", "a/b"]),
    st.sampled_from(["%00", "w1%0A", "%C3%A9", "x" * 129, "a//b", "%", "%zz", "w1?", "w1#x"]),
    st.text(st.characters(codec="ascii", exclude_characters="?#"), max_size=40),
)
_queries = st.one_of(
    st.just(""),
    st.sampled_from(
        [
            "wait=routable",
            "wait=routable&timeout=0",
            "wait=routable&timeout=nan",
            "wait=routable&timeout=inf",
            "wait=routable&timeout=1e999",
            "wait=routable&timeout=-0",
            "wait=routable&timeout=60.0000001",
            "wait=routable&timeout=0x10",
            "wait=routable&timeout=%20",
            "wait=routable&wait=none",
            "wait=none&timeout=1",
            "wait=ROUTABLE",
            "timeout=1",
            "wait",
            "wait=",
            "=x",
            "&&&",
            "wait=%FF",
            "x=1",
        ]
    ),
    st.text(st.characters(codec="ascii", exclude_characters="#"), max_size=60),
)
_content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=latin-1",
    ]
)


@_settings(RAW_EXAMPLES)
@given(
    method=st.sampled_from(["PUT", "PUT", "PUT", "GET", "DELETE", "POST", "PATCH"]),
    worker_id=_ids,
    query=_queries,
    body=_bodies,
    content_type=_content_types,
    auth=st.sampled_from(AUTH),
)
def _raw(fuzz, method, worker_id, query, body, content_type, auth):
    url = f"{fuzz.daemon.api}/v1/workers/{worker_id}" + (f"?{query}" if query else "")
    headers = {"Content-Type": content_type} if content_type else {}
    value = _authorization(auth, "Bearer")
    if value is not None:
        headers["Authorization"] = value
    request = requests.Request(method, url, headers=headers, data=body).prepare()
    request.url = url  # as generated: no normalisation of the path or the query
    try:
        response = fuzz.session.send(request, timeout=70)
    except requests.exceptions.InvalidURL:
        return  # the client refuses to send it (e.g. a control character in the URL)
    fuzz.after(response.status_code, "raw")
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        assert isinstance(response.json().get("error"), str), response.text


def test_fuzz_raw_requests(fuzz):
    fuzz.reset()
    _raw(fuzz)


def test_fuzz_daemon_survived(fuzz):
    """Runs last: enough requests were sent, and the daemon is alive, healthy and logged no
    internal error."""
    total = sum(sent.values())
    print(f"fuzz: {total} requests: {dict(sent)}; statuses: {dict(sorted(statuses.items()))}")
    assert total >= MIN_REQUESTS * min(SCALE, 1), dict(sent)
    daemon = fuzz.daemon
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
    health = requests.get(f"{daemon.api}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    log = Path(daemon.log_path).read_text(errors="replace")
    assert "internal error" not in log and "Traceback" not in log, log[-4000:]
