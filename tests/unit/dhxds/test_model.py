"""Worker validation: what the API accepts and the messages it gives for what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dhxds.model import (
    ValidationError,
    Worker,
    validate_envoy_prefix,
    validate_host,
    validate_port,
    validate_worker_id,
)

OK = {"host": "127.0.0.1", "port": 8080}


@pytest.mark.parametrize("worker_id", ["w1", "W", "0", "a.b-c_d", "x" * 128, "worker-10.dh_prod"])
def test_valid_ids(worker_id):
    assert Worker.from_dict(OK, worker_id=worker_id).id == worker_id


@pytest.mark.parametrize(
    ("worker_id", "message"),
    [
        ("", "non-empty"),
        ("a/b", "is invalid"),
        ("..", "is invalid"),
        ("a..b", "without '..'"),
        ("a b", "is invalid"),
        ("-a", "starting with a letter or digit"),
        (".hidden", "starting with a letter or digit"),
        ("x" * 129, "the limit is 128"),
        ("wörker", "must be ASCII"),
        ("a\nb", "is invalid"),
    ],
)
def test_invalid_ids(worker_id, message):
    with pytest.raises(ValidationError, match=message):
        Worker.from_dict(OK, worker_id=worker_id)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"host": "h"}, "missing required field.*port"),
        ({"port": 1}, "missing required field.*host"),
        ({**OK, "colour": "red"}, "unknown field.*colour"),
        ({**OK, "port": 0}, "outside 1-65535"),
        ({**OK, "port": 65536}, "outside 1-65535"),
        ({**OK, "port": "80"}, "must be an integer"),
        ({**OK, "port": True}, "must be an integer"),
        ({**OK, "port": 80.0}, "must be an integer"),
        ({**OK, "host": ""}, "non-empty"),
        ({**OK, "host": "bad host"}, "neither an IP address nor a valid DNS name"),
        ({**OK, "host": "1.2.3"}, "neither an IP address"),
        ({**OK, "host": "a" * 64 + ".com"}, "neither an IP address"),
        ({**OK, "envoy_prefix": "worker/w1"}, "envoy_prefix must look like"),
        ({**OK, "envoy_prefix": "/worker/w1/"}, "envoy_prefix must look like"),
        ({**OK, "envoy_prefix": "/a/../b"}, "must not contain"),
        ({**OK, "envoy_prefix": "/a?b"}, "envoy_prefix must look like"),
        ({**OK, "strip_prefix": "no"}, "strip_prefix must be true or false"),
        ({**OK, "tls": 1}, "tls must be true or false"),
        ({**OK, "upstream_protocol": "h3"}, "upstream_protocol must be one of"),
        ({**OK, "id": "other"}, "does not match"),
        ([], "must be a JSON object"),
        ("x", "must be a JSON object"),
    ],
)
def test_invalid_bodies(body, message):
    with pytest.raises(ValidationError, match=message):
        Worker.from_dict(body, worker_id="w1")


def test_defaults_and_round_trip():
    worker = Worker.from_dict({"host": "::1", "port": 1}, worker_id="w1")
    assert worker.to_dict() == {
        "id": "w1",
        "host": "::1",
        "port": 1,
        "envoy_prefix": "/worker/w1",
        "strip_prefix": True,
        "upstream_protocol": "downstream",
        "tls": False,
        "static": False,
    }
    assert Worker.from_dict(worker.stored_dict()) == worker
    assert Worker.from_dict(worker.stored_dict(), worker_id="w1") == worker


# --- the shared corpus (also run through the Ansible module's checks) ------------------------
CORPUS = json.loads(
    (Path(__file__).resolve().parents[2] / "data" / "validation_corpus.json").read_text()
)


@pytest.mark.parametrize("worker_id", CORPUS["worker_id"]["valid"])
def test_corpus_valid_ids(worker_id):
    assert validate_worker_id(worker_id) == worker_id


@pytest.mark.parametrize(("worker_id", "why"), CORPUS["worker_id"]["invalid"])
def test_corpus_invalid_ids(worker_id, why):
    with pytest.raises(ValidationError):
        validate_worker_id(worker_id)


@pytest.mark.parametrize("prefix", CORPUS["envoy_prefix"]["valid"])
def test_corpus_valid_prefixes(prefix):
    assert validate_envoy_prefix(prefix) == prefix


@pytest.mark.parametrize(("prefix", "why"), CORPUS["envoy_prefix"]["invalid"])
def test_corpus_invalid_prefixes(prefix, why):
    with pytest.raises(ValidationError, match="envoy_prefix"):
        validate_envoy_prefix(prefix)


@pytest.mark.parametrize(("host", "canonical"), CORPUS["host"]["valid"])
def test_corpus_valid_hosts(host, canonical):
    assert validate_host(host) == canonical


@pytest.mark.parametrize(("host", "why"), CORPUS["host"]["invalid"])
def test_corpus_invalid_hosts(host, why):
    with pytest.raises(ValidationError, match=r"^host "):
        validate_host(host)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("0.0.0.0", "unspecified address"),
        ("::", "unspecified address"),
        ("fe80::1%eth0", r"has a zone \(%eth0\)"),
        ("fe80::1", "IPv6 link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("h" * 254, "the limit is 253"),
    ],
)
def test_unusable_hosts_are_explained(host, message):
    with pytest.raises(ValidationError, match=message):
        Worker.from_dict({"host": host, "port": 1}, worker_id="w1")


def test_listen_addresses_may_be_unspecified():
    assert validate_host("0.0.0.0", "api.listen", listen=True) == "0.0.0.0"
    assert validate_host("::", "api.listen", listen=True) == "::"
    with pytest.raises(ValidationError, match="zone"):
        validate_host("fe80::1%eth0", "api.listen", listen=True)


def test_a_port_of_thousands_of_digits_gets_a_short_message():
    with pytest.raises(ValidationError, match="more than 12 digits is outside 1-65535"):
        validate_port(10**4000)


@pytest.mark.parametrize("ttl", CORPUS["ttl"]["valid"])
def test_corpus_valid_ttls(ttl):
    worker = Worker.from_dict({"host": "10.0.0.1", "port": 1, "ttl": ttl}, worker_id="w")
    assert worker.ttl == ttl and worker.to_dict()["ttl"] == ttl
    assert Worker.from_dict(worker.stored_dict(), stored=True) == worker


@pytest.mark.parametrize(("ttl", "why"), CORPUS["ttl"]["invalid"])
def test_corpus_invalid_ttls(ttl, why):
    with pytest.raises(ValidationError, match=r"^ttl "):
        Worker.from_dict({"host": "10.0.0.1", "port": 1, "ttl": ttl}, worker_id="w")


def test_ttl_is_optional_and_not_for_static_workers():
    worker = Worker.from_dict({"host": "10.0.0.1", "port": 1}, worker_id="w")
    assert worker.ttl is None and "ttl" not in worker.to_dict()
    assert Worker.from_dict({"host": "10.0.0.1", "port": 1, "ttl": None}, worker_id="w") == worker
    with pytest.raises(ValidationError, match="ttl is for workers registered through the API"):
        Worker.from_dict({"id": "s", "host": "10.0.0.1", "port": 1, "ttl": 30}, static=True)
