"""Workers and upstreams: the validated records the registry stores and resources are built from.

Every value that reaches Envoy passes through here first, so a bad registration is refused
with a message that names the field instead of turning into a NACKed xDS push.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Any

WORKER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# RFC 1123 host names: labels of letters, digits and inner hyphens.
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Path characters that need no escaping and cannot smuggle a query or fragment.
_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")

UPSTREAM_PROTOCOLS = ("downstream", "http1", "http2")
WORKER_FIELDS = (
    "id",
    "host",
    "port",
    "envoy_prefix",
    "strip_prefix",
    "upstream_protocol",
    "tls",
    "tls_sni",
)
UPSTREAM_FIELDS = ("host", "port", "upstream_protocol", "tls", "tls_sni")


class ValidationError(ValueError):
    """Input that cannot become a worker; the message is meant for the operator."""


def validate_worker_id(worker_id: object) -> str:
    if not isinstance(worker_id, str) or worker_id == "":
        raise ValidationError("worker id must be a non-empty string")
    if not worker_id.isascii():
        raise ValidationError(f"worker id {worker_id!r} must be ASCII")
    if len(worker_id) > 128:
        raise ValidationError(f"worker id is {len(worker_id)} characters long; the limit is 128")
    if not WORKER_ID_RE.match(worker_id) or ".." in worker_id:
        raise ValidationError(
            f"worker id {worker_id!r} is invalid: use 1-128 of [A-Za-z0-9._-], "
            "starting with a letter or digit, without '..'"
        )
    return worker_id


def validate_host(host: object, field: str = "host") -> str:
    if not isinstance(host, str) or host == "":
        raise ValidationError(f"{field} must be a non-empty string")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    # An all-numeric top label would be read as a (malformed) IP address by Envoy.
    if (
        len(host) > 253
        or labels[-1].isdigit()
        or not all(_HOST_LABEL_RE.match(label) for label in labels)
    ):
        raise ValidationError(f"{field} {host!r} is neither an IP address nor a valid DNS name")
    return host


def validate_port(port: object, field: str = "port") -> int:
    # bool is an int subclass; `true` is not a port.
    if isinstance(port, bool) or not isinstance(port, int):
        raise ValidationError(f"{field} must be an integer between 1 and 65535")
    if not 1 <= port <= 65535:
        raise ValidationError(f"{field} {port} is outside 1-65535")
    return port


def _validate_bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{field} must be true or false")
    return value


def _validate_protocol(value: object) -> str:
    if value not in UPSTREAM_PROTOCOLS:
        raise ValidationError(f"upstream_protocol must be one of {', '.join(UPSTREAM_PROTOCOLS)}")
    return str(value)


def validate_envoy_prefix(value: object) -> str:
    if not isinstance(value, str) or not _PREFIX_RE.match(value) or len(value) > 256:
        raise ValidationError(
            "envoy_prefix must look like /worker/<id>: '/'-separated segments of "
            "[A-Za-z0-9._~-], no trailing '/', at most 256 characters"
        )
    if any(seg in (".", "..") for seg in value.split("/")):
        raise ValidationError("envoy_prefix must not contain '.' or '..' segments")
    return value


def _check_fields(data: object, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError(f"{what} must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValidationError(
            f"unknown field(s) in {what}: {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    missing = [f for f in ("host", "port") if f not in data]
    if missing:
        raise ValidationError(f"missing required field(s) in {what}: {', '.join(missing)}")
    return data


@dataclass(frozen=True)
class Upstream:
    """Where Envoy sends traffic, and how it talks to it."""

    host: str
    port: int
    upstream_protocol: str = "downstream"
    tls: bool = False
    tls_sni: str | None = None

    @classmethod
    def from_dict(cls, data: object, what: str = "upstream") -> Upstream:
        fields = _check_fields(data, UPSTREAM_FIELDS, what)
        return cls(**_upstream_kwargs(fields))


def _upstream_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    tls_sni = data.get("tls_sni")
    return {
        "host": validate_host(data["host"]),
        "port": validate_port(data["port"]),
        "upstream_protocol": _validate_protocol(data.get("upstream_protocol", "downstream")),
        "tls": _validate_bool(data.get("tls", False), "tls"),
        "tls_sni": None if tls_sni is None else validate_host(tls_sni, "tls_sni"),
    }


@dataclass(frozen=True)
class Worker(Upstream):
    id: str = ""
    envoy_prefix: str = ""
    strip_prefix: bool = True
    static: bool = False  # from the config file; the API cannot change it

    @classmethod
    def from_dict(cls, data: object, worker_id: str | None = None, static: bool = False) -> Worker:
        """Validate an API body (or stored record); worker_id comes from the URL when given."""
        fields = _check_fields(data, WORKER_FIELDS, "worker")
        body_id = fields.get("id")
        if worker_id is None:
            if body_id is None:
                raise ValidationError("missing required field(s) in worker: id")
            worker_id = body_id
        elif body_id is not None and body_id != worker_id:
            raise ValidationError(f"id {body_id!r} in the body does not match {worker_id!r}")
        worker_id = validate_worker_id(worker_id)
        prefix = fields.get("envoy_prefix")
        return cls(
            id=worker_id,
            envoy_prefix=default_prefix(worker_id)
            if prefix is None
            else validate_envoy_prefix(prefix),
            strip_prefix=_validate_bool(fields.get("strip_prefix", True), "strip_prefix"),
            static=static,
            **_upstream_kwargs(fields),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by the API and the state file (static is API-only)."""
        data = asdict(self)
        ordered = {key: data[key] for key in (*WORKER_FIELDS, "static")}
        if ordered["tls_sni"] is None:
            del ordered["tls_sni"]
        return ordered

    def stored_dict(self) -> dict[str, Any]:
        data = self.to_dict()
        del data["static"]
        return data


def default_prefix(worker_id: str) -> str:
    return f"/worker/{worker_id}"


def cluster_name(worker_id: str) -> str:
    # Ids are already restricted to [A-Za-z0-9._-]; the prefix keeps them apart from
    # web_api_service and any static cluster in Envoy's bootstrap.
    return f"worker_{worker_id}"


WEB_API_CLUSTER = "web_api_service"
