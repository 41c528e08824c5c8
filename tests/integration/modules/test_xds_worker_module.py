"""dhops.envoy.xds_worker through `ansible`, against a real dhxds daemon."""

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


def test_daemon_validation_errors_are_passed_through(run_module, dhxds):
    result = run_module("xds_worker", args(dhxds, envoy_prefix="/worker/w1/"))
    assert result.rc != 0
    assert (
        "HTTP 400" in result.result["msg"] and "envoy_prefix must look like" in result.result["msg"]
    )
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
