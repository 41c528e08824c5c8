# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small client for the dhxds registration API (``/v1/workers``), on Ansible's own urls code.

No requests dependency: targets only need the Python standard library and ansible-core.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import re
import socket
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.urls import open_url

# The same pattern texts as dhxds/src/dhxds/model.py (modules cannot import dhxds);
# tests/unit/plugins/test_validation_rules.py asserts they are identical and runs the shared
# corpus tests/data/validation_corpus.json through both sides. Always used with fullmatch():
# `$` would also match before a trailing newline.
WORKER_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
HOST_LABEL_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ENVOY_PREFIX_PATTERN = r"(/[A-Za-z0-9._~-]+)+"
WORKER_ID_RE = re.compile(WORKER_ID_PATTERN)
HOST_LABEL_RE = re.compile(HOST_LABEL_PATTERN)
ENVOY_PREFIX_RE = re.compile(ENVOY_PREFIX_PATTERN)


class ApiError(Exception):
    """A failed API call, with a message meant for the operator."""

    def __init__(self, message, status=None):
        super(ApiError, self).__init__(message)
        self.status = status


def check_worker_id(worker_id):
    if not WORKER_ID_RE.fullmatch(worker_id or "") or ".." in worker_id:
        raise ApiError(
            "worker id %r is invalid: use 1-128 of [A-Za-z0-9._-], starting with a letter or "
            "digit, without '..'" % (worker_id,)
        )


# Worker leases: the same range as dhxds.model.TTL_MIN / TTL_MAX (asserted by a unit test).
TTL_MIN = 2
TTL_MAX = 86400


def check_ttl(ttl):
    """A worker lease in seconds (the daemon's rule); None means no lease."""
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise ApiError("ttl must be an integer number of seconds (%d-%d)" % (TTL_MIN, TTL_MAX))
    if not TTL_MIN <= ttl <= TTL_MAX:
        raise ApiError("ttl %d is outside %d-%d seconds" % (ttl, TTL_MIN, TTL_MAX))


def check_envoy_prefix(prefix):
    if not ENVOY_PREFIX_RE.fullmatch(prefix or "") or len(prefix) > 256:
        raise ApiError(
            "envoy_prefix %r is invalid: it must look like /worker/<id>: '/'-separated "
            "segments of [A-Za-z0-9._~-], no trailing '/', at most 256 characters" % (prefix,)
        )
    if any(segment in (".", "..") for segment in prefix.split("/")):
        raise ApiError("envoy_prefix %r must not contain '.' or '..' segments" % (prefix,))


def _unusable_address(address):
    """Why Envoy cannot connect to this address, or None (the rule of dhxds.model)."""
    if getattr(address, "scope_id", None):
        return "has a zone; Envoy cannot connect to scoped addresses"
    if address.is_unspecified:
        return "is the unspecified address (any interface), not one a proxy can connect to"
    if address.is_multicast:
        return "is a multicast address; a worker needs a unicast address"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "is the broadcast address; a worker needs a unicast address"
    if address.version == 6 and address.is_link_local:
        return "is an IPv6 link-local address, usable only with a zone that Envoy cannot take"
    return None


def check_host(host, field="host"):
    """Refuse what the daemon refuses, before any call; returns the canonical form."""
    if not host:
        raise ApiError("%s must be a non-empty string" % field)
    if len(host) > 253:
        raise ApiError("%s is %d characters long; the limit is 253" % (field, len(host)))
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        reason = _unusable_address(address)
        if reason:
            raise ApiError("%s %r %s" % (field, host, reason))
        return str(address)
    labels = host.rstrip(".").split(".")
    if labels[-1].isdigit() or not all(HOST_LABEL_RE.fullmatch(label) for label in labels):
        raise ApiError("%s %r is neither an IP address nor a valid DNS name" % (field, host))
    return host


def canonical_host(host):
    """The daemon stores IP addresses in canonical form; compare in the same form."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class XdsApi:
    def __init__(self, api_url, token=None, validate_certs=True, ca_path=None, timeout=10):
        if not re.match(r"^https?://[^/]+", api_url or ""):
            raise ApiError("api_url %r must be an http:// or https:// URL" % (api_url,))
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout

    def worker_url(self, worker_id, wait_timeout=None):
        url = "%s/v1/workers/%s" % (self.api_url, quote(worker_id, safe=""))
        if wait_timeout is not None:
            url += "?wait=routable&timeout=%s" % wait_timeout
        return url

    def request(self, method, url, body=None, extra_timeout=0):
        """Return (status, decoded JSON body or None). Raises ApiError for >= 400."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer %s" % self.token
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            response = open_url(
                url,
                data=data,
                method=method,
                headers=headers,
                validate_certs=self.validate_certs,
                ca_path=self.ca_path,
                timeout=self.timeout + extra_timeout,
                follow_redirects="none",
            )
            return response.getcode(), _decode(response.read())
        except HTTPError as exc:
            status = exc.code
            payload = _decode(_read(exc))
            message = payload.get("error") if isinstance(payload, dict) else None
            if status == 404 and method in ("GET", "DELETE"):
                return status, payload
            if status == 401:
                what = "rejected the token" if self.token else "requires a token"
                raise ApiError(
                    "dhxds API at %s %s (401 Unauthorized)%s; check token or token_file"
                    % (self.api_url, what, ": %s" % message if message else ""),
                    status,
                ) from None
            raise ApiError(
                "dhxds API %s %s failed with HTTP %d: %s"
                % (method, url, status, message or exc.reason or "no error message"),
                status,
            ) from None
        except (URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError("cannot reach dhxds API at %s: %s" % (self.api_url, reason)) from None

    def get_worker(self, worker_id):
        status, body = self.request("GET", self.worker_url(worker_id))
        if status == 404:
            return None
        if not isinstance(body, dict):
            raise ApiError(
                "dhxds API returned an unexpected body for worker %s: %r" % (worker_id, body)
            )
        return body

    def put_worker(self, worker_id, worker, wait_timeout=None):
        """Returns (worker as stored, pending node ids or None).

        With wait_timeout the daemon answers once every connected Envoy has ACKed the
        worker's cluster and route (pending []), or 202 with the nodes still pending. A daemon
        without wait support ignores the query and answers 200/201: nothing is known to be
        pending, so pending is [] as well."""
        url = self.worker_url(worker_id, wait_timeout)
        status, body = self.request("PUT", url, worker, extra_timeout=wait_timeout or 0)
        return _split_pending(status, body, wait_timeout)

    def wait_routable(self, worker_id, wait_timeout):
        """Wait for an unchanged worker (GET with wait=routable); returns pending node ids."""
        url = self.worker_url(worker_id, wait_timeout)
        status, body = self.request("GET", url, extra_timeout=wait_timeout)
        if status == 404:
            raise ApiError("worker %s disappeared from the daemon while waiting" % worker_id, 404)
        return _split_pending(status, body, wait_timeout)[1]

    def delete_worker(self, worker_id):
        """True when the worker was deleted, False when it was already gone."""
        status, _body = self.request("DELETE", self.worker_url(worker_id))
        return status != 404


def _split_pending(status, body, wait_timeout):
    if status == 202 and isinstance(body, dict) and "pending" in body:
        return body.get("worker"), [str(node) for node in body["pending"]]
    return body, (None if wait_timeout is None else [])


def _read(exc):
    try:
        return exc.read()
    except Exception:  # a closed or empty error body is not worth failing over
        return b""


def _decode(raw):
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except ValueError:
        return None
