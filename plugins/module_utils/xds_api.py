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

WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ApiError(Exception):
    """A failed API call, with a message meant for the operator."""

    def __init__(self, message, status=None):
        super(ApiError, self).__init__(message)
        self.status = status


def check_worker_id(worker_id):
    if not WORKER_ID_RE.match(worker_id or "") or ".." in worker_id:
        raise ApiError(
            "worker id %r is invalid: use 1-128 of [A-Za-z0-9._-], starting with a letter or "
            "digit, without '..'" % (worker_id,)
        )


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

    def worker_url(self, worker_id):
        return "%s/v1/workers/%s" % (self.api_url, quote(worker_id, safe=""))

    def request(self, method, url, body=None):
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
                timeout=self.timeout,
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

    def put_worker(self, worker_id, worker):
        _status, body = self.request("PUT", self.worker_url(worker_id), worker)
        return body

    def delete_worker(self, worker_id):
        """True when the worker was deleted, False when it was already gone."""
        status, _body = self.request("DELETE", self.worker_url(worker_id))
        return status != 404


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
