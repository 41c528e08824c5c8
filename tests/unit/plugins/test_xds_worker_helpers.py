"""Pure parts of dhops.envoy.xds_worker: the desired worker and when it differs."""

import pytest
from ansible_collections.dhops.envoy.plugins.module_utils.xds_api import (
    ApiError,
    XdsApi,
    canonical_host,
    check_worker_id,
)
from ansible_collections.dhops.envoy.plugins.modules.xds_worker import (
    as_text,
    check_params,
    desired_worker,
    differs,
    pending_message,
)

PARAMS = {
    "id": "w1",
    "host": "10.0.0.1",
    "port": 24001,
    "envoy_prefix": None,
    "strip_prefix": True,
    "upstream_protocol": "downstream",
    "tls": False,
    "tls_sni": None,
    "ttl": None,
}
HELD = {
    "id": "w1",
    "host": "10.0.0.1",
    "port": 24001,
    "envoy_prefix": "/worker/w1",
    "strip_prefix": True,
    "upstream_protocol": "downstream",
    "tls": False,
    "static": False,
}


def test_defaults_match_what_the_daemon_holds():
    desired = desired_worker(PARAMS)
    assert desired["envoy_prefix"] == "/worker/w1" and "tls_sni" not in desired
    assert not differs(HELD, desired)  # "static" and other daemon-only fields are ignored


@pytest.mark.parametrize(
    "change",
    [
        {"port": 24002},
        {"host": "10.0.0.2"},
        {"envoy_prefix": "/worker/other"},
        {"strip_prefix": False},
        {"upstream_protocol": "http2"},
        {"tls": True},
        {"tls_sni": "w1.example.com"},
    ],
)
def test_any_decided_field_makes_a_difference(change):
    assert differs(HELD, desired_worker({**PARAMS, **change}))


def test_a_held_sni_the_task_leaves_out_is_a_difference():
    assert differs({**HELD, "tls_sni": "old.example.com"}, desired_worker(PARAMS))


def test_ip_addresses_compare_in_canonical_form():
    assert canonical_host("::0001") == "::1"
    assert canonical_host("Worker1.example.com") == "Worker1.example.com"
    held_v6 = {**HELD, "host": "::1"}
    assert not differs(held_v6, desired_worker({**PARAMS, "host": "0:0:0:0:0:0:0:1"}))


@pytest.mark.parametrize("good", ["w1", "a", "A.b_c-9", "x" * 128])
def test_valid_worker_ids(good):
    check_worker_id(good)


@pytest.mark.parametrize("bad", ["", "-w", ".w", "w/1", "w 1", "x" * 129, "a..b", "wé"])
def test_invalid_worker_ids(bad):
    with pytest.raises(ApiError, match="is invalid"):
        check_worker_id(bad)


def test_worker_urls_are_quoted_under_the_base_url():
    api = XdsApi("http://xds:8125/")
    assert api.worker_url("w1.a_b-c") == "http://xds:8125/v1/workers/w1.a_b-c"


def test_diff_text_shows_only_decided_fields():
    text = as_text(HELD)
    assert '"static"' not in text and '"port": 24001' in text
    assert as_text(None) == ""


@pytest.mark.parametrize("url", ["", "127.0.0.1:8125", "ftp://x", "http://"])
def test_api_url_must_be_http(url):
    with pytest.raises(ApiError, match="must be an http"):
        XdsApi(url)


TASK = {
    **PARAMS,
    "state": "present",
    "timeout": 10,
    "wait": "routable",
    "wait_timeout": 30,
}


def test_a_normal_task_passes_the_checks():
    check_params(TASK)
    check_params({**TASK, "tls": True, "tls_sni": "w1.example.com"})
    check_params({**TASK, "state": "absent", "host": None, "port": None})
    check_params({**TASK, "wait": "none", "wait_timeout": 0})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tls_sni": "w1.example.com"}, "tls_sni is set but tls is false"),
        ({"timeout": 0}, "timeout must be at least 1 second, not 0"),
        ({"timeout": -5}, "timeout must be at least 1 second, not -5"),
        ({"wait_timeout": 0}, "wait_timeout must be from 1 to 60 seconds, not 0"),
        ({"wait_timeout": 61}, "wait_timeout must be from 1 to 60 seconds, not 61"),
        ({"host": "0.0.0.0"}, "unspecified address"),
        ({"host": "fe80::1%eth0"}, "has a zone"),
        ({"host": "224.0.0.1"}, "multicast"),
        ({"port": 0}, "outside 1-65535"),
        ({"envoy_prefix": "/worker/w1\n"}, "envoy_prefix"),
        ({"id": "w1\n"}, "is invalid"),
        ({"tls": True, "tls_sni": "bad name"}, "tls_sni 'bad name' is neither"),
    ],
)
def test_task_mistakes_are_refused_before_any_call(change, message):
    with pytest.raises(ApiError, match=message):
        check_params({**TASK, **change})


def test_pending_nodes_are_listed_in_the_message():
    text = pending_message("w1", ["envoy-a", "envoy-b"], 30, True)
    assert "worker w1 is registered but not routable after 30s" in text
    assert "2 Envoy node(s)" in text and "envoy-a, envoy-b" in text


def test_wait_urls():
    api = XdsApi("http://xds:8125")
    assert api.worker_url("w1", 30) == "http://xds:8125/v1/workers/w1?wait=routable&timeout=30"


def test_ttl_is_compared_and_checked():
    assert "ttl" not in desired_worker(PARAMS)
    assert differs(HELD, desired_worker({**PARAMS, "ttl": 30}))
    assert differs({**HELD, "ttl": 30}, desired_worker(PARAMS))  # leaving it out drops it
    assert not differs({**HELD, "ttl": 30}, desired_worker({**PARAMS, "ttl": 30}))
    with pytest.raises(ApiError, match="ttl 1 is outside 2-86400"):
        check_params({**TASK, "ttl": 1})
