"""The shared config (etcd mode: web_api_service + static workers in <prefix>config)."""

from __future__ import annotations

import pytest
from dhxds.model import Upstream, Worker
from dhxds.registry import RegistryError, SharedConfig


def static(worker_id: str, port: int = 7000) -> Worker:
    return Worker.from_dict({"id": worker_id, "host": "10.0.0.1", "port": port}, static=True)


def test_round_trip_is_canonical():
    config = SharedConfig(Upstream("10.0.0.9", 8123, "http1"), (static("b"), static("a")))
    encoded = config.encode()
    decoded = SharedConfig.decode(encoded, "k")
    assert decoded == config.normalized() and decoded.encode() == encoded
    assert all(w.static for w in decoded.static_workers)
    # The order of the file does not matter: the same bytes, so no needless publish.
    same = SharedConfig(Upstream("10.0.0.9", 8123, "http1"), (static("a"), static("b")))
    assert same.encode() == encoded and same.normalized() == config.normalized()


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"format": "other/1"}',
        b'{"format": "dhxds-config/1", "web_api_service": {"host": "0.0.0.0", "port": 1}, '
        b'"static_workers": []}',
        b'{"format": "dhxds-config/1", "web_api_service": {"host": "h", "port": 1}, '
        b'"static_workers": {}}',
        b'{"format": "dhxds-config/1", "web_api_service": {"host": "h", "port": 1}, '
        b'"static_workers": [{"id": "a", "host": "h", "port": 1}, '
        b'{"id": "a", "host": "h", "port": 2}]}',
    ],
)
def test_invalid_stored_values_are_a_registry_error_naming_the_key(raw):
    with pytest.raises(RegistryError, match=r"^etcd key /dhxds/config"):
        SharedConfig.decode(raw, "etcd key /dhxds/config")


def test_difference_names_what_changes():
    old = SharedConfig(Upstream("10.0.0.5", 8123, "http1"), (static("s1"), static("s2")))
    new = SharedConfig(
        Upstream("10.0.0.6", 8123, "http1", tls=True), (static("s1", 1), static("s3"))
    )
    assert old.difference(new) == (
        "web_api_service 10.0.0.5:8123 (http1) -> 10.0.0.6:8123 (http1, tls); "
        "static workers added: s3; static workers removed: s2; static workers changed: s1"
    )
    assert old.difference(old) == ""
