"""One rule on both sides: the module's checks (module_utils/xds_api.py, which cannot import
dhxds) use the same pattern texts as dhxds.model and accept and refuse exactly the shared
corpus tests/data/validation_corpus.json."""

import json
import pathlib

import pytest
from ansible_collections.dhops.envoy.plugins.module_utils import xds_api
from ansible_collections.dhops.envoy.plugins.module_utils.xds_api import (
    ApiError,
    check_envoy_prefix,
    check_host,
    check_worker_id,
)

from dhxds import model

CORPUS = json.loads(
    (pathlib.Path(__file__).resolve().parents[2] / "data" / "validation_corpus.json").read_text()
)


@pytest.mark.parametrize(
    "name", ["WORKER_ID_PATTERN", "HOST_LABEL_PATTERN", "ENVOY_PREFIX_PATTERN"]
)
def test_pattern_texts_are_identical(name):
    assert getattr(xds_api, name) == getattr(model, name)


@pytest.mark.parametrize("worker_id", CORPUS["worker_id"]["valid"])
def test_corpus_valid_ids(worker_id):
    check_worker_id(worker_id)


@pytest.mark.parametrize(("worker_id", "why"), CORPUS["worker_id"]["invalid"])
def test_corpus_invalid_ids(worker_id, why):
    with pytest.raises(ApiError, match="is invalid"):
        check_worker_id(worker_id)


@pytest.mark.parametrize("prefix", CORPUS["envoy_prefix"]["valid"])
def test_corpus_valid_prefixes(prefix):
    check_envoy_prefix(prefix)


@pytest.mark.parametrize(("prefix", "why"), CORPUS["envoy_prefix"]["invalid"])
def test_corpus_invalid_prefixes(prefix, why):
    with pytest.raises(ApiError, match="envoy_prefix"):
        check_envoy_prefix(prefix)


@pytest.mark.parametrize(("host", "canonical"), CORPUS["host"]["valid"])
def test_corpus_valid_hosts(host, canonical):
    assert check_host(host) == canonical


@pytest.mark.parametrize(("host", "why"), CORPUS["host"]["invalid"])
def test_corpus_invalid_hosts(host, why):
    with pytest.raises(ApiError, match=r"^host "):
        check_host(host)


def test_both_sides_agree_beyond_the_corpus():
    """A few generated near-misses: both sides must give the same verdict."""
    samples = [
        a + b
        for a in ("w", "W1", "/w", "/w/x", "0.0.0.0", "::", "fe80::2", "10.1.2.3", "h.example")
        for b in ("", "\n", ".", "..", "-", "/", "%lo", " ", "\t", "\x00", "é", ":80")
    ]
    pairs = [
        (model.validate_worker_id, check_worker_id),
        (model.validate_envoy_prefix, check_envoy_prefix),
        (model.validate_host, check_host),
    ]
    for value in samples:
        for daemon_check, module_check in pairs:
            assert _ok(daemon_check, value, model.ValidationError) == _ok(
                module_check, value, ApiError
            ), (daemon_check.__name__, value)


def _ok(check, value, error):
    try:
        check(value)
    except error:
        return False
    return True


def test_ttl_range_is_identical():
    assert (xds_api.TTL_MIN, xds_api.TTL_MAX) == (model.TTL_MIN, model.TTL_MAX)


@pytest.mark.parametrize("ttl", CORPUS["ttl"]["valid"])
def test_corpus_valid_ttls(ttl):
    xds_api.check_ttl(ttl)
    assert model.validate_ttl(ttl) == ttl


@pytest.mark.parametrize(("ttl", "why"), CORPUS["ttl"]["invalid"])
def test_corpus_invalid_ttls(ttl, why):
    with pytest.raises(ApiError, match=r"^ttl "):
        xds_api.check_ttl(ttl)
    with pytest.raises(model.ValidationError, match=r"^ttl "):
        model.validate_ttl(ttl)
