"""What real Deephaven clients see through our Envoy (TLS, the envoy role's bootstrap) and
dhxds: header and path routing, websockets, idle subscriptions, workers leaving and joining."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import queue
import ssl
import struct
import subprocess
import threading
import time
import uuid

import grpc
import pytest
import requests
from deephaven_core.proto import config_pb2
from dhops_testkit import HOST, wait_for
from dhops_testkit.deephaven import session, whoami
from dhops_testkit.deephaven_worker import NAME_PROPERTY
from pydeephaven import DHError
from websockets.sync.client import connect

AUTH_CONSTANTS = "/io.deephaven.proto.backplane.grpc.ConfigService/GetAuthenticationConstants"
LIST_FIELDS = "/io.deephaven.proto.backplane.grpc.ApplicationService/ListFields"
EMPTY_GRPC_MESSAGE = b"\x00\x00\x00\x00\x00"


def _grpc_web_messages(body: bytes) -> list[bytes]:
    """The data frames of a gRPC-web body (trailer frames have the 0x80 flag)."""
    messages, offset = [], 0
    while offset + 5 <= len(body):
        flag, length = body[offset], struct.unpack(">I", body[offset + 1 : offset + 5])[0]
        if not flag & 0x80:
            messages.append(body[offset + 5 : offset + 5 + length])
        offset += 5 + length
    return messages


def _worker_name(message: bytes) -> str:
    answer = config_pb2.AuthenticationConstantsResponse.FromString(message)
    return answer.config_values[NAME_PROPERTY].string_value


def _name_over_websocket(stack, path: str) -> str:
    """A unary gRPC call over a websocket (the grpc-websockets transport of Deephaven's JS API)."""
    context = ssl.create_default_context(cafile=str(stack.ca))
    url = f"wss://{HOST}:{stack.envoy.listen_port}{path}"
    with connect(url, ssl=context, subprotocols=["grpc-websockets"], open_timeout=10) as ws:
        assert ws.subprotocol == "grpc-websockets"
        ws.send(b"content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n")
        ws.send(b"\x00" + EMPTY_GRPC_MESSAGE)
        ws.send(b"\x01")  # end of the client's stream
        frames = b""
        while True:
            try:
                frames += ws.recv(timeout=10)
            except TimeoutError:
                break
            if b"grpc-status:" in frames:
                break
    assert b"grpc-status: 0" in frames, frames
    # Each websocket message is a gRPC-web frame header or its body; join and parse.
    return _worker_name(_grpc_web_messages(frames)[0])


class FieldStream:
    """ApplicationService/ListFields: the subscription through which Deephaven clients (the
    web IDE's table list) learn about new tables; it stays open and is idle until one appears."""

    def __init__(self, sess) -> None:
        self.call = sess.app_service.list_fields()
        self.items: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for update in self.call:
                self.items.put([f.field_name for f in update.created])
        except Exception as exc:
            self.items.put(exc)

    def next_created(self, timeout: float) -> list[str]:
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the subscription delivered nothing in {timeout}s") from None
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.call.cancel()


@contextlib.contextmanager
def websocket_field_stream(stack, worker_id: str):
    """The same subscription over a websocket (grpc-websockets, the web IDE's transport when it
    cannot stream over fetch), authenticated as Deephaven's anonymous handler allows. Yields
    wait_for(needle, timeout): read the stream until `needle` arrives."""
    context = ssl.create_default_context(cafile=str(stack.ca))
    url = f"wss://{HOST}:{stack.envoy.listen_port}/worker/{worker_id}{LIST_FIELDS}"
    with connect(url, ssl=context, subprotocols=["grpc-websockets"], open_timeout=10) as ws:
        ws.send(
            b"content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n"
            b"authorization: Anonymous\r\n"
        )
        ws.send(b"\x00" + EMPTY_GRPC_MESSAGE)
        ws.send(b"\x01")  # the request is complete; the answers stream on

        def wait_for(needle: bytes, timeout: float) -> None:
            deadline, seen = time.monotonic() + timeout, b""
            while needle not in seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{needle!r} not delivered in {timeout}s: {seen[-300:]!r}")
                seen += ws.recv(timeout=left)

        yield wait_for


def _new_table(stack, worker_id: str) -> str:
    """Create a table on a worker through Envoy (another client) and return its name."""
    name = "t_" + uuid.uuid4().hex[:8]
    with session(stack.envoy.listen_port, stack.ca, f"/worker/{worker_id}") as other:
        other.run_script(f"from deephaven import empty_table\n{name} = empty_table(1)")
    return name


# --- by header ----------------------------------------------------------------------------------
@pytest.mark.parametrize("worker_id", ["w1", "w10"])
def test_the_envoy_prefix_header_reaches_exactly_that_worker(stack, worker_id):
    with session(stack.envoy.listen_port, stack.ca, f"/worker/{worker_id}") as sess:
        assert whoami(sess) == worker_id
        sess.run_script("answer = whoami.update(['Answer = 6 * 7'])")
        answer = sess.open_table("answer").to_arrow().to_pydict()
        assert answer == {"Worker": [worker_id], "Answer": [42]}


@pytest.mark.parametrize("prefix", ["/worker/w", "/worker/w100", "/worker/w1/"])
def test_a_header_that_names_no_worker_reaches_none(stack, prefix):
    # Falls through to the web_api_service (a stand-in that speaks no gRPC): a fast error.
    started = time.monotonic()
    with pytest.raises(DHError):
        session(stack.envoy.listen_port, stack.ca, prefix)
    assert time.monotonic() - started < 15


# --- by path ------------------------------------------------------------------------------------
@pytest.mark.parametrize("worker_id", ["w1", "w10"])
def test_path_routes_strip_the_prefix_and_the_js_api_loads(stack, worker_id):
    worker = stack.workers[worker_id]
    direct = requests.get(f"{worker.url}/jsapi/dh-core.js", timeout=30)
    assert direct.status_code == 200
    # Without stripping the worker could not serve it: it knows nothing of /worker/<id>.
    unstripped = requests.get(f"{worker.url}/worker/{worker_id}/jsapi/dh-core.js", timeout=30)
    assert unstripped.status_code == 404

    proxied = stack.envoy.get(f"/worker/{worker_id}/jsapi/dh-core.js", timeout=30)
    assert proxied.status_code == 200
    assert hashlib.sha256(proxied.content).digest() == hashlib.sha256(direct.content).digest()
    ide = stack.envoy.get(f"/worker/{worker_id}/ide/")
    assert ide.status_code == 200 and "<!doctype html>" in ide.text.lower()


@pytest.mark.parametrize("worker_id", ["w1", "w10"])
def test_the_bare_worker_path_reaches_the_worker(stack, worker_id):
    bare = stack.envoy.get(f"/worker/{worker_id}", allow_redirects=False)
    # The worker's own answer to "/" (the stand-in web_api_service would answer 200 JSON).
    assert bare.status_code in (301, 302, 303, 307, 308), bare.text[:200]
    assert bare.headers["location"].endswith("/ide/")


@pytest.mark.parametrize("mode", ["application/grpc-web+proto", "application/grpc-web-text"])
@pytest.mark.parametrize("worker_id", ["w1", "w10"])
def test_grpc_web_over_a_worker_path_reaches_that_worker(stack, worker_id, mode, tmp_path):
    # What the web IDE does with fetch: a unary call in gRPC-web framing over HTTP/2 (TLS+ALPN,
    # as a browser). Deephaven answers binary gRPC-web itself, but only over HTTP/2; the text
    # mode (base64) works only through Envoy's grpc_web filter (envoy_grpc_web_enabled).
    text = mode.endswith("-text")
    request, answer = tmp_path / "request", tmp_path / "answer"
    request.write_bytes(base64.b64encode(EMPTY_GRPC_MESSAGE) if text else EMPTY_GRPC_MESSAGE)
    curl = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2",
            "--cacert",
            str(stack.ca),
            "-H",
            f"content-type: {mode}",
            "-H",
            f"accept: {mode}",
            "-H",
            "x-grpc-web: 1",
            "--data-binary",
            f"@{request}",
            "-o",
            str(answer),
            "-w",
            "%{http_version} %{http_code} %{content_type}",
            f"{stack.envoy.url}/worker/{worker_id}{AUTH_CONSTANTS}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert curl.returncode == 0, curl.stderr
    version, status, content_type = curl.stdout.split(" ", 2)
    assert (version, status) == ("2", "200")
    body = answer.read_bytes()
    if content_type.startswith("application/grpc-web-text"):
        body = base64.b64decode(body)
    assert _grpc_web_messages(body), (content_type, body[:200])
    assert _worker_name(_grpc_web_messages(body)[0]) == worker_id


@pytest.mark.parametrize("worker_id", ["w1", "w10"])
def test_websocket_upgrades_pass_to_that_worker(stack, worker_id):
    assert _name_over_websocket(stack, f"/worker/{worker_id}{AUTH_CONSTANTS}") == worker_id


# --- long-lived streams -------------------------------------------------------------------------
def test_idle_subscriptions_survive_longer_than_envoys_default_timeouts(stack):
    # The same subscription over gRPC (pydeephaven's channel) and over a websocket, both idle.
    with session(stack.envoy.listen_port, stack.ca, "/worker/w1") as sess:
        stream = FieldStream(sess)
        try:
            with websocket_field_stream(stack, "w1") as websocket_delivers:
                assert "whoami" in stream.next_created(30)
                websocket_delivers(b"whoami", 30)
                time.sleep(25)  # idle: Envoy's default route/stream timeouts are 15 s
                assert stream.items.empty()
                name = _new_table(stack, "w1")
                assert name in stream.next_created(15)
                websocket_delivers(name.encode(), 15)
            assert whoami(sess) == "w1"  # the session's own channel is alive too
        finally:
            stream.close()


def test_a_large_snapshot_streams_through_the_per_connection_buffers(stack):
    # ~32 MB in one Arrow Flight DoGet, through Envoy's 1 MiB per-connection buffer limit.
    with session(stack.envoy.listen_port, stack.ca, "/worker/w10") as sess:
        sess.run_script(
            "from deephaven import empty_table\n"
            "big = empty_table(2_000_000).update(['X = (double) i', 'Y = (long) i'])"
        )
        table = sess.open_table("big").to_arrow()
        assert table.num_rows == 2_000_000
        assert table.column("Y")[1_999_999].as_py() == 1_999_999


def test_a_worker_registered_while_others_stream_is_usable_at_once(stack):
    sessions = {
        w: session(stack.envoy.listen_port, stack.ca, f"/worker/{w}") for w in ("w1", "w10")
    }
    streams = {w: FieldStream(s) for w, s in sessions.items()}
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_querying() -> None:
        while not stop.is_set():
            try:
                assert whoami(sessions["w1"]) == "w1"
            except BaseException as exc:
                errors.append(exc)
                return
            time.sleep(0.2)

    querying = threading.Thread(target=keep_querying, daemon=True)
    try:
        for stream in streams.values():
            assert "whoami" in stream.next_created(30)
        querying.start()
        resp = stack.daemon.call(
            "PUT",
            "/v1/workers/w3?wait=routable&timeout=30",
            {"host": HOST, "port": stack.workers["w3"].port},
        )
        assert resp.status_code in (200, 201), resp.text
        if stack.daemon.call("GET", "/v1/nodes").status_code != 200:
            # This daemon has no ?wait=routable yet: wait until Envoy routes the worker.
            wait_for(lambda: stack.routable("w3"), 30, "w3 routable", 0.1)
        with session(stack.envoy.listen_port, stack.ca, "/worker/w3") as new:
            assert whoami(new) == "w3"
        for worker_id, stream in streams.items():
            name = _new_table(stack, worker_id)
            assert name in stream.next_created(15)
        stop.set()
        querying.join(10)
        assert errors == []
    finally:
        stop.set()
        for stream in streams.values():
            stream.close()
        for sess in sessions.values():
            sess.close()
        stack.daemon.call("DELETE", "/v1/workers/w3")


# Stops worker w3: keep this test last (pytest runs a file's tests in order).
def test_a_removed_worker_gives_its_client_a_clear_error_not_a_hang(stack):
    worker = stack.workers["w3"]
    stack.daemon.put_worker("w3", worker.port)
    wait_for(lambda: stack.routable("w3"), 30, "w3 routable", 0.2)
    sess = session(stack.envoy.listen_port, stack.ca, "/worker/w3")
    stream = FieldStream(sess)
    try:
        assert whoami(sess) == "w3"
        assert "whoami" in stream.next_created(30)
        assert stack.daemon.call("DELETE", "/v1/workers/w3").status_code == 204
        wait_for(lambda: "worker_w3" not in stack.envoy.clusters(), 30, "cluster removed", 0.2)

        # New calls, even on the client's open connection, no longer reach the worker.
        started = time.monotonic()
        with pytest.raises(DHError) as raised:
            whoami(sess)
        elapsed = time.monotonic() - started
        assert elapsed < 15, f"the client waited {elapsed:.1f}s for its error"
        cause = raised.value.__cause__
        assert isinstance(cause, grpc.RpcError), raised.value
        assert cause.code() == grpc.StatusCode.UNAVAILABLE, cause
        assert "no worker is registered" in cause.details(), cause.details()
        assert "/worker/w3" in cause.details(), cause.details()
        # The worker itself is fine; it is just no longer routed.
        assert requests.get(f"{worker.url}/jsapi/dh-core.js", timeout=30).status_code == 200

        # A stream opened before the removal is drained, not cut, by Envoy; it ends when the
        # worker stops (as a dispatcher stops it) - with an error, at once, never a hang.
        worker.stop()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            while True:
                stream.next_created(15)
        assert time.monotonic() - started < 15
        # The worker's own word at shutdown (CANCELLED "subscription cancelled"), or the
        # connection's end (UNAVAILABLE) when it dies without one.
        assert ended.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    finally:
        stream.close()
        with contextlib.suppress(DHError):
            sess.close()  # its release call fails the same way
