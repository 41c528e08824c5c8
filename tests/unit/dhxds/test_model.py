"""Worker validation: what the API accepts and the messages it gives for what it refuses."""

from __future__ import annotations

import pytest
from dhxds.model import ValidationError, Worker

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
