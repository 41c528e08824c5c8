"""dhops.envoy.xds_worker through `ansible`, against a real dhxds daemon."""

import http.server
import json
import threading

from dhops_testkit import HOST, TOKEN, free_port


def args(dhxds, **extra):
    base = {"api_url": dhxds.url, "token": TOKEN, "id": "w1", "host": HOST, "port": 18101}
    base.update(extra)
    return base


def test_register_is_idempotent_and_visible_in_the_daemon(run_module, dhxds):
    first = run_module("xds_worker", args(dhxds))
    assert first.rc == 0, first.result
    assert first.result["changed"] is True
    assert first.result["previous"] is None
    held = dhxds.worker("w1")
    assert held["host"] == HOST and held["port"] == 18101
    assert held["envoy_prefix"] == "/worker/w1" and held["strip_prefix"] is True
    assert first.result["worker"]["port"] == 18101

    again = run_module("xds_worker", args(dhxds))
    assert again.rc == 0 and again.result["changed"] is False
    assert again.result["msg"] == "worker w1 unchanged"


def test_a_changed_field_is_updated_with_a_diff(run_module, dhxds):
    run_module("xds_worker", args(dhxds))
    changed = run_module(
        "xds_worker", args(dhxds, port=18102, upstream_protocol="http2"), diff=True
    )
    assert changed.rc == 0 and changed.result["changed"] is True
    diff = changed.result["diff"]
    assert '"port": 18101' in diff["before"] and '"port": 18102' in diff["after"]
    assert dhxds.worker("w1")["port"] == 18102
    assert dhxds.worker("w1")["upstream_protocol"] == "http2"


def test_check_mode_reports_but_does_not_touch_the_daemon(run_module, dhxds):
    new = run_module("xds_worker", args(dhxds), check=True)
    assert new.rc == 0 and new.result["changed"] is True
    assert dhxds.worker("w1") is None

    run_module("xds_worker", args(dhxds))
    update = run_module("xds_worker", args(dhxds, port=18109), check=True)
    assert update.result["changed"] is True and dhxds.worker("w1")["port"] == 18101
    remove = run_module("xds_worker", args(dhxds, state="absent"), check=True)
    assert remove.result["changed"] is True and dhxds.worker("w1") is not None


def test_absent_deletes_only_when_present(run_module, dhxds):
    run_module("xds_worker", args(dhxds))
    gone = run_module(
        "xds_worker", {"api_url": dhxds.url, "token": TOKEN, "id": "w1", "state": "absent"}
    )
    assert gone.rc == 0 and gone.result["changed"] is True
    assert dhxds.worker("w1") is None
    again = run_module(
        "xds_worker", {"api_url": dhxds.url, "token": TOKEN, "id": "w1", "state": "absent"}
    )
    assert again.rc == 0 and again.result["changed"] is False


def test_token_file_on_the_target(run_module, dhxds):
    result = run_module(
        "xds_worker",
        {
            "api_url": dhxds.url,
            "token_file": str(dhxds.token_file),
            "id": "w2",
            "host": HOST,
            "port": 18103,
        },
    )
    assert result.rc == 0 and result.result["changed"] is True
    assert dhxds.worker("w2")["port"] == 18103


def test_custom_prefix_tls_and_no_stripping(run_module, dhxds):
    custom = args(
        dhxds,
        id="pq-risk",
        envoy_prefix="/worker/pq-risk",
        strip_prefix=False,
        tls=True,
        tls_sni="w.example.com",
    )
    result = run_module("xds_worker", custom)
    assert result.rc == 0, result.result
    held = dhxds.worker("pq-risk")
    assert (held["strip_prefix"], held["tls"], held["tls_sni"]) == (False, True, "w.example.com")
    assert run_module("xds_worker", custom).result["changed"] is False
    # Leaving tls_sni out describes a worker without one: the module removes it.
    dropped = run_module(
        "xds_worker",
        args(dhxds, id="pq-risk", envoy_prefix="/worker/pq-risk", strip_prefix=False, tls=True),
    )
    assert dropped.result["changed"] is True and "tls_sni" not in dhxds.worker("pq-risk")


def test_bad_token_fails_clearly_and_changes_nothing(run_module, dhxds):
    result = run_module("xds_worker", args(dhxds, token="wrong-token"))
    assert result.rc != 0
    assert result.result["failed"] is True
    assert "rejected the token (401" in result.result["msg"]
    assert "wrong-token" not in result.stderr + str(result.data)  # no_log
    assert dhxds.worker("w1") is None


def test_unreachable_api_fails_clearly(run_module):
    url = f"http://{HOST}:{free_port()}"
    result = run_module(
        "xds_worker", {"api_url": url, "token": TOKEN, "id": "w1", "host": HOST, "port": 1}
    )
    assert result.rc != 0
    assert result.result["msg"].startswith(f"cannot reach dhxds API at {url}")


def test_daemon_errors_are_passed_through(run_module, dhxds):
    """What only the daemon can know (here: the envoy_prefix is taken) comes back verbatim."""
    assert run_module("xds_worker", args(dhxds, id="w0", envoy_prefix="/shared")).rc == 0
    result = run_module("xds_worker", args(dhxds, envoy_prefix="/shared"))
    assert result.rc != 0
    assert "HTTP 409" in result.result["msg"]
    assert "envoy_prefix /shared is already used by worker w0" in result.result["msg"]
    assert dhxds.worker("w1") is None


def test_an_invalid_prefix_is_refused_before_any_call(run_module, dhxds):
    result = run_module("xds_worker", args(dhxds, envoy_prefix="/worker/w1/"))
    assert result.rc != 0
    assert "envoy_prefix '/worker/w1/' is invalid" in result.result["msg"]
    assert dhxds.worker("w1") is None


def test_invalid_id_and_port_are_refused_before_any_call(run_module):
    bad_id = run_module(
        "xds_worker", {"api_url": "http://127.0.0.1:9", "id": "-bad", "host": HOST, "port": 1}
    )
    assert bad_id.rc != 0 and "worker id '-bad' is invalid" in bad_id.result["msg"]
    bad_port = run_module(
        "xds_worker", {"api_url": "http://127.0.0.1:9", "id": "ok", "host": HOST, "port": 70000}
    )
    assert bad_port.rc != 0 and "port 70000 is outside 1-65535" in bad_port.result["msg"]


def test_missing_token_and_bad_url_are_explained(run_module, dhxds):
    no_token = run_module("xds_worker", {"api_url": dhxds.url, "id": "w1", "host": HOST, "port": 1})
    assert no_token.rc != 0
    assert "requires a token (401 Unauthorized): missing bearer token" in no_token.result["msg"]
    bad_url = run_module(
        "xds_worker", {"api_url": "127.0.0.1:8125", "id": "w1", "host": HOST, "port": 1}
    )
    assert bad_url.rc != 0 and "must be an http:// or https:// URL" in bad_url.result["msg"]


def test_waits_for_routable_by_default(run_module, dhxds):
    """No Envoy is connected to this daemon: routable at once, pending is empty."""
    first = run_module("xds_worker", args(dhxds))
    assert first.rc == 0, first.result
    assert first.result["changed"] is True and first.result["pending"] == []
    # Unchanged: no PUT, but the module still asks the daemon (GET ?wait=routable).
    again = run_module("xds_worker", args(dhxds, wait_timeout=5))
    assert again.result["changed"] is False and again.result["pending"] == []
    no_wait = run_module("xds_worker", args(dhxds, port=18111, wait="none"))
    assert no_wait.rc == 0 and "pending" not in no_wait.result
    assert dhxds.worker("w1")["port"] == 18111


def test_option_mistakes_are_refused_before_any_call(run_module):
    unreachable = f"http://{HOST}:{free_port()}"
    cases = [
        ({"tls_sni": "w.example.com"}, "tls_sni is set but tls is false"),
        ({"timeout": 0}, "timeout must be at least 1 second, not 0"),
        ({"timeout": -3}, "timeout must be at least 1 second, not -3"),
        ({"wait_timeout": 0}, "wait_timeout must be from 1 to 60 seconds, not 0"),
        ({"host": "0.0.0.0"}, "unspecified address"),
        ({"host": "fe80::1%eth0"}, "has a zone"),
        ({"envoy_prefix": "/worker/w1\n"}, "envoy_prefix"),
        ({"id": "w1\n"}, "is invalid"),
    ]
    for change, message in cases:
        task = {"api_url": unreachable, "token": TOKEN, "id": "w1", "host": HOST, "port": 1}
        result = run_module("xds_worker", {**task, **change})
        assert result.rc != 0, change
        assert message in result.result["msg"], (change, result.result["msg"])


class StandIn:
    """A stand-in API: GET answers 404, PUT answers `put_status` with `put_body`; records
    the request lines. For what a real daemon cannot be made to answer here (202)."""

    def __init__(self, put_status, put_body):
        calls = self.calls = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status, body):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                calls.append(("GET", self.path))
                self._answer(404, {"error": "worker w1 is not registered"})

            def do_PUT(self):
                length = int(self.headers.get("Content-Length", 0))
                calls.append(("PUT", self.path, json.loads(self.rfile.read(length))))
                self._answer(put_status, put_body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


WORKER = {
    "id": "w1",
    "host": HOST,
    "port": 18101,
    "envoy_prefix": "/worker/w1",
    "strip_prefix": True,
    "upstream_protocol": "downstream",
    "tls": False,
    "static": False,
}


def test_pending_nodes_fail_the_task_and_name_the_nodes(run_module):
    standin = StandIn(202, {"worker": WORKER, "pending": ["envoy-a", "envoy-b"], "created": True})
    try:
        result = run_module(
            "xds_worker",
            {
                "api_url": standin.url,
                "token": TOKEN,
                "id": "w1",
                "host": HOST,
                "port": 18101,
                "wait_timeout": 7,
            },
        )
    finally:
        standin.close()
    assert result.rc != 0 and result.result["failed"] is True
    assert result.result["changed"] is True  # registered all the same
    assert result.result["pending"] == ["envoy-a", "envoy-b"]
    msg = result.result["msg"]
    assert "worker w1 is registered but not routable after 7s" in msg
    assert "2 Envoy node(s)" in msg and "envoy-a, envoy-b" in msg
    assert result.result["worker"]["port"] == 18101
    assert standin.calls[1][:2] == ("PUT", "/v1/workers/w1?wait=routable&timeout=7")


def test_an_older_daemon_without_wait_support_still_works(run_module):
    """An older daemon ignores the query and answers 201 with the worker: done."""
    standin = StandIn(201, WORKER)
    try:
        result = run_module(
            "xds_worker",
            {"api_url": standin.url, "token": TOKEN, "id": "w1", "host": HOST, "port": 18101},
        )
    finally:
        standin.close()
    assert result.rc == 0, result.result
    assert result.result["changed"] is True and result.result["pending"] == []
    assert result.result["worker"] == WORKER
