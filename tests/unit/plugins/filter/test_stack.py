"""dhops.envoy.stack_address / local_url / url_host: one way to address the stack's hosts."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dhops.envoy.plugins.filter.stack import (
    FilterModule,
    local_url,
    stack_address,
    url_host,
)

HOSTVARS = {
    "xds-1": {"dhops_address": "10.0.0.21", "ansible_host": "192.0.2.1"},
    "xds-2": {"ansible_host": "fd00::22"},
    "xds-3": {"dhops_address": "", "ansible_host": ""},
    "xds-4": {"dhops_address": "xds-4.internal.example"},
}


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {"stack_address", "local_url", "url_host"}


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("xds-1", "10.0.0.21"),  # dhops_address wins over ansible_host
        ("xds-2", "fd00::22"),  # IPv6 ansible_host, unbracketed (Envoy wants it bare)
        ("xds-3", "xds-3"),  # empty values fall back to the name
        ("xds-4", "xds-4.internal.example"),  # a DNS name
        ("not-in-inventory", "not-in-inventory"),
    ],
)
def test_stack_address_of_one_host(name, address):
    assert stack_address(name, HOSTVARS) == address


def test_stack_address_of_a_list_keeps_the_order():
    assert stack_address(["xds-4", "xds-1", "xds-2"], HOSTVARS) == [
        "xds-4.internal.example",
        "10.0.0.21",
        "fd00::22",
    ]
    assert stack_address([], HOSTVARS) == []


def test_stack_address_rejects_what_is_not_a_name():
    with pytest.raises(AnsibleFilterError, match="non-empty strings"):
        stack_address([""], HOSTVARS)
    with pytest.raises(AnsibleFilterError, match="host name or a list"):
        stack_address(42, HOSTVARS)


@pytest.mark.parametrize(
    ("address", "port", "kwargs", "url"),
    [
        ("127.0.0.1", 8001, {}, "http://127.0.0.1:8001"),
        ("0.0.0.0", 8001, {}, "http://127.0.0.1:8001"),
        ("", "8125", {}, "http://127.0.0.1:8125"),
        ("::", 8001, {}, "http://[::1]:8001"),  # not http://::1:8001
        ("[::]", 8001, {}, "http://[::1]:8001"),
        ("::1", 9001, {"path": "/ready"}, "http://[::1]:9001/ready"),
        ("fd00::5", 443, {"scheme": "https"}, "https://[fd00::5]:443"),
        ("[fd00::5]", 443, {"scheme": "https"}, "https://[fd00::5]:443"),
        (
            "envoy-1.example.com",
            443,
            {"scheme": "https", "path": "healthz"},
            "https://envoy-1.example.com:443/healthz",
        ),
    ],
)
def test_local_url(address, port, kwargs, url):
    assert local_url(address, port, **kwargs) == url


@pytest.mark.parametrize("port", ["http", 0, 70000, None])
def test_local_url_rejects_bad_ports(port):
    with pytest.raises(AnsibleFilterError, match="port"):
        local_url("127.0.0.1", port)


@pytest.mark.parametrize(
    ("address", "host"),
    [("10.0.0.1", "10.0.0.1"), ("::1", "[::1]"), ("[::1]", "[::1]"), ("a.example", "a.example")],
)
def test_url_host(address, host):
    assert url_host(address) == host
