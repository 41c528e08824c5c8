"""Workers and upstreams: the validated records the registry stores and resources are built from.

Every value that reaches Envoy passes through here first, so a bad registration is refused
with a message that names the field instead of turning into a NACKed xDS push.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

# The validation patterns. plugins/module_utils/xds_api.py (the Ansible module side, which
# cannot import dhxds) holds the same pattern texts; tests/unit/plugins/test_validation_rules.py
# asserts they are identical and runs tests/data/validation_corpus.json through both sides.
# Always used with fullmatch(): `$` would also match before a trailing newline.
log = logging.getLogger(__name__)
WORKER_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
# RFC 1123 host names: labels of letters, digits and inner hyphens.
HOST_LABEL_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Path characters that need no escaping and cannot smuggle a query or fragment.
ENVOY_PREFIX_PATTERN = r"(/[A-Za-z0-9._~-]+)+"
WORKER_ID_RE = re.compile(WORKER_ID_PATTERN)
_HOST_LABEL_RE = re.compile(HOST_LABEL_PATTERN)
_PREFIX_RE = re.compile(ENVOY_PREFIX_PATTERN)

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
    "ttl",
)
# Optional fields: left out of a worker's JSON when unset.
OPTIONAL_FIELDS = ("tls_sni", "ttl")
# Worker leases (docs/registry.md): a registration with `ttl` disappears by itself unless a
# PUT renews it within that many seconds. etcd only (an etcd lease); the lower bound is what
# etcd grants exactly with its default election timeout (it rounds smaller TTLs up).
TTL_MIN = 2
TTL_MAX = 86400
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
    if not WORKER_ID_RE.fullmatch(worker_id) or ".." in worker_id:
        raise ValidationError(
            f"worker id {worker_id!r} is invalid: use 1-128 of [A-Za-z0-9._-], "
            "starting with a letter or digit, without '..'"
        )
    return worker_id


def unusable_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why Envoy cannot connect to this address, or None when it can."""
    if getattr(address, "scope_id", None):
        return (
            "has a zone (%" + str(address.scope_id) + "); Envoy cannot connect to scoped "
            "addresses: use a global or unique-local address or a DNS name"
        )
    if address.is_unspecified:
        return "is the unspecified address (any interface), not one a proxy can connect to"
    if address.is_multicast:
        return "is a multicast address; a worker needs a unicast address"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "is the broadcast address; a worker needs a unicast address"
    if address.version == 6 and address.is_link_local:
        return (
            "is an IPv6 link-local address, usable only with a zone that Envoy cannot take: "
            "use a global or unique-local address or a DNS name"
        )
    return None


def validate_host(
    host: object, field: str = "host", listen: bool = False, stored: bool = False
) -> str:
    """A host Envoy can connect to (listen=True: a local address to bind, 0.0.0.0 and :: ok).

    stored=True (a state file written by an older dhxds): an address refused since then only
    gets a warning, so an upgrade does not stop the daemon over a worker that was accepted."""
    if not isinstance(host, str) or host == "":
        raise ValidationError(f"{field} must be a non-empty string")
    if len(host) > 253:
        raise ValidationError(f"{field} is {len(host)} characters long; the limit is 253")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        reason = unusable_address(address)
        if reason and not (listen and address.is_unspecified):
            if not stored:
                raise ValidationError(f"{field} {host!r} {reason}")
            log.warning("stored %s %r %s; the API refuses it now: re-register", field, host, reason)
        return str(address)
    labels = host.rstrip(".").split(".")
    # An all-numeric top label would be read as a (malformed) IP address by Envoy.
    if labels[-1].isdigit() or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        raise ValidationError(f"{field} {host!r} is neither an IP address nor a valid DNS name")
    return host


def validate_port(port: object, field: str = "port") -> int:
    # bool is an int subclass; `true` is not a port.
    if isinstance(port, bool) or not isinstance(port, int):
        raise ValidationError(f"{field} must be an integer between 1 and 65535")
    if not 1 <= port <= 65535:
        # A port of thousands of digits must not turn into a message of thousands of digits
        # (or into int->str's own ValueError past 4300 digits).
        shown = str(port) if -(10**12) < port < 10**12 else "with more than 12 digits"
        raise ValidationError(f"{field} {shown} is outside 1-65535")
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
    if not isinstance(value, str) or not _PREFIX_RE.fullmatch(value) or len(value) > 256:
        raise ValidationError(
            "envoy_prefix must look like /worker/<id>: '/'-separated segments of "
            "[A-Za-z0-9._~-], no trailing '/', at most 256 characters"
        )
    if any(seg in (".", "..") for seg in value.split("/")):
        raise ValidationError("envoy_prefix must not contain '.' or '..' segments")
    return value


def validate_ttl(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"ttl must be an integer number of seconds ({TTL_MIN}-{TTL_MAX})")
    if not TTL_MIN <= value <= TTL_MAX:
        shown = str(value) if -(10**12) < value < 10**12 else "with more than 12 digits"
        raise ValidationError(f"ttl {shown} is outside {TTL_MIN}-{TTL_MAX} seconds")
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


def _upstream_kwargs(data: dict[str, Any], stored: bool = False) -> dict[str, Any]:
    tls_sni = data.get("tls_sni")
    return {
        "host": validate_host(data["host"], stored=stored),
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
    ttl: int | None = None  # seconds: a lease a PUT renews (etcd); None: until removed

    @classmethod
    def from_dict(
        cls,
        data: object,
        worker_id: str | None = None,
        static: bool = False,
        stored: bool = False,
    ) -> Worker:
        """Validate an API body (or stored record: stored=True, see validate_host); worker_id
        comes from the URL when given."""
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
        ttl = fields.get("ttl")
        if ttl is not None and static:
            raise ValidationError(
                "ttl is for workers registered through the API (a lease they renew); a "
                "static worker of the config file stays until the file changes"
            )
        return cls(
            id=worker_id,
            envoy_prefix=default_prefix(worker_id)
            if prefix is None
            else validate_envoy_prefix(prefix),
            strip_prefix=_validate_bool(fields.get("strip_prefix", True), "strip_prefix"),
            static=static,
            ttl=None if ttl is None else validate_ttl(ttl),
            **_upstream_kwargs(fields, stored),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by the API and the state file (static is API-only)."""
        data = asdict(self)
        ordered = {key: data[key] for key in (*WORKER_FIELDS, "static")}
        for key in OPTIONAL_FIELDS:
            if ordered[key] is None:
                del ordered[key]
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
