# Copyright: dhops.envoy maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Addresses of the stack's hosts and local URLs of listen addresses, worked out one way for
every role: dhops.envoy.stack_address and dhops.envoy.local_url."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

# A wildcard bind is reached on the loopback address of the same family.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}  # noqa: S104


def _address_of(name, hostvars):
    if not isinstance(name, str) or not name:
        raise AnsibleFilterError(
            "stack_address: host names must be non-empty strings, got %r" % (name,)
        )
    host = hostvars.get(name) if isinstance(hostvars, Mapping) else None
    if host is None:
        return name
    for key in ("dhops_address", "ansible_host"):
        value = host.get(key) if isinstance(host, Mapping) else None
        if value:
            return str(value).strip()
    return name


def stack_address(hosts, hostvars=None):
    """The address the other hosts of the stack reach a host at: its dhops_address, else its
    ansible_host, else its inventory name. A name gives one address, a list gives a list."""
    hostvars = hostvars or {}
    if isinstance(hosts, str):
        return _address_of(hosts, hostvars)
    try:
        return [_address_of(name, hostvars) for name in hosts]
    except TypeError as exc:
        msg = "stack_address: expected a host name or a list of names, got %r" % (hosts,)
        raise AnsibleFilterError(msg) from exc


def url_host(address):
    """An address as the host part of a URL: IPv6 literals in brackets, names and IPv4 as is."""
    address = str(address).strip()
    if ":" in address and not address.startswith("["):
        return "[%s]" % address
    return address


def local_url(address, port, scheme="http", path=""):
    """URL of a listen address from the host itself: a wildcard bind (0.0.0.0, ::, "") is
    reached on loopback, an IPv6 literal is bracketed, names and IPv4 stay as they are."""
    address = "" if address is None else str(address).strip()
    address = _WILDCARDS.get(address, address)
    try:
        port = int(port)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError("local_url: port must be a number, got %r" % (port,)) from exc
    if not 0 < port < 65536:
        raise AnsibleFilterError("local_url: port %d is outside 1-65535" % port)
    if path and not str(path).startswith("/"):
        path = "/" + str(path)
    return "%s://%s:%d%s" % (scheme, url_host(address), port, path or "")


class FilterModule(object):
    def filters(self):
        return {
            "stack_address": stack_address,
            "local_url": local_url,
            "url_host": url_host,
        }
