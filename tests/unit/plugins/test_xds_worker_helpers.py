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
    desired_worker,
    differs,
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
