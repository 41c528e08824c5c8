"""A minimal client of the registration API (stdlib only), used by the CLI."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call(method, path, body)[1]

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, extra_timeout: float = 0
    ) -> tuple[int, Any]:
        """(status, decoded body); raises ApiError for HTTP errors and connection problems."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(  # noqa: S310
                req, timeout=self.timeout + extra_timeout
            ) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _error_text(exc.read(), exc.code)) from exc
        except urllib.error.URLError as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc.reason}") from exc
        return status, (json.loads(raw) if raw else None)


def _error_text(raw: bytes, status: int) -> str:
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}"
