"""YAML configuration: loading, defaults and validation with messages that name the key."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .model import Upstream, ValidationError, Worker, validate_host, validate_port

# key -> allowed sub-keys (None: a scalar or list)
SCHEMA: dict[str, set[str] | None] = {
    "xds": {"listen", "tls"},
    "api": {"listen", "token_file", "metrics_require_token"},
    "state": {"path", "backend", "etcd"},
    "route_config_name": None,
    "web_api_service": {"host", "port", "upstream_protocol", "tls", "tls_sni"},
    "static_workers": None,
    "log_level": None,
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Deephaven's web_api_service is an HTTP/1.1 (Jetty) endpoint: a cleartext HTTP/2 upstream
# (what `downstream` picks for browsers on h2) gets 505 and the client 502. Workers keep
# `downstream` (gRPC over HTTP/2, websockets over HTTP/1.1).
WEB_API_SERVICE_PROTOCOL = "http1"
STATE_BACKENDS = ("sqlite", "etcd")
ETCD_KEYS = {"endpoints", "prefix", "ca_file", "cert_file", "key_file"}
XDS_TLS_KEYS = ("cert_file", "key_file", "client_ca_file")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class EtcdSettings:
    """`state.etcd`: where the shared registry lives (docs/registry.md)."""

    endpoints: tuple[str, ...]
    prefix: str = "/dhxds/"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class XdsTls:
    """`xds.tls`: the gRPC xDS listener speaks TLS and requires a client certificate signed by
    client_ca_file (mutual TLS between Envoy and dhxds)."""

    cert_file: str
    key_file: str
    client_ca_file: str


@dataclass(frozen=True)
class Config:
    xds_listen: str = "127.0.0.1:8124"
    xds_tls: XdsTls | None = None
    api_listen: str = "127.0.0.1:8125"
    token_file: str = "/etc/dhxds/api-token"  # noqa: S105 - a path, not a secret
    metrics_require_token: bool = True
    state_path: str = "/var/lib/dhxds/workers.db"
    state_backend: str = "sqlite"
    etcd: EtcdSettings | None = None
    route_config_name: str = "rds_config"
    web_api_service: Upstream = field(
        default_factory=lambda: Upstream("127.0.0.1", 8123, WEB_API_SERVICE_PROTOCOL)
    )
    static_workers: tuple[Worker, ...] = ()
    log_level: str = "INFO"

    @property
    def log_level_number(self) -> int:
        return logging.getLevelName(self.log_level)


def split_listen(value: object, key: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{key} must be 'host:port', got {value!r}")
    host, _sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        validate_host(host, key, listen=True)
        # isdigit() and a short length first: int() of thousands of digits raises ValueError.
        validate_port(
            int(port) if port.isascii() and port.isdigit() and len(port) <= 6 else port, key
        )
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc
    return host, int(port)


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping")
    unknown = sorted(set(value) - (SCHEMA[key] or set()))
    if unknown:
        raise ConfigError(f"unknown key(s) in {key}: {', '.join(unknown)}")
    return value


def _string(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string")
    return value


def parse_config(data: object) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping")
    unknown = sorted(set(data) - set(SCHEMA))
    if unknown:
        raise ConfigError(
            f"unknown key(s): {', '.join(map(str, unknown))} (known: {', '.join(SCHEMA)})"
        )
    defaults = Config()
    xds, api, state = (_section(data, k) for k in ("xds", "api", "state"))
    values: dict[str, Any] = {
        "xds_listen": xds.get("listen", defaults.xds_listen),
        "api_listen": api.get("listen", defaults.api_listen),
        "token_file": _string(api.get("token_file", defaults.token_file), "api.token_file"),
        "state_path": _string(state.get("path", defaults.state_path), "state.path"),
        "state_backend": state.get("backend", defaults.state_backend),
        "route_config_name": _string(
            data.get("route_config_name", defaults.route_config_name), "route_config_name"
        ),
        "log_level": str(data.get("log_level", defaults.log_level)).upper(),
    }
    split_listen(values["xds_listen"], "xds.listen")
    if "tls" in xds:
        values["xds_tls"] = _xds_tls(xds["tls"])
    split_listen(values["api_listen"], "api.listen")
    metrics_token = api.get("metrics_require_token", True)
    if not isinstance(metrics_token, bool):
        raise ConfigError("api.metrics_require_token must be true or false")
    values["metrics_require_token"] = metrics_token
    if values["state_backend"] not in STATE_BACKENDS:
        raise ConfigError(
            f"state.backend must be one of {', '.join(STATE_BACKENDS)}, not "
            f"{values['state_backend']!r} (the JSON file backend was replaced by sqlite: a "
            "state.path ending in .json is imported into the .db next to it)"
        )
    if values["state_backend"] == "etcd":
        values["etcd"] = _etcd(state.get("etcd"))
    elif "etcd" in state:
        raise ConfigError("state.etcd is set but state.backend is not etcd")
    if values["log_level"] not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if "web_api_service" in data:
        section = {"upstream_protocol": WEB_API_SERVICE_PROTOCOL}
        section.update(_section(data, "web_api_service"))
        try:
            values["web_api_service"] = Upstream.from_dict(section, "web_api_service")
        except ValidationError as exc:
            raise ConfigError(f"web_api_service: {exc}") from exc
    values["static_workers"] = _static_workers(data.get("static_workers", []))
    return Config(**values)


def _xds_tls(data: object) -> XdsTls:
    if not isinstance(data, dict):
        raise ConfigError(
            "xds.tls must be a mapping {cert_file, key_file, client_ca_file} (all three)"
        )
    unknown = sorted(map(str, set(data) - set(XDS_TLS_KEYS)))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in xds.tls: {', '.join(unknown)} (known: {', '.join(XDS_TLS_KEYS)})"
        )
    missing = [key for key in XDS_TLS_KEYS if key not in data]
    if missing:
        raise ConfigError(
            f"xds.tls needs {', '.join(missing)}: the xDS listener requires client certificates "
            "(mutual TLS), so cert_file, key_file and client_ca_file go together"
        )
    return XdsTls(**{key: _string(data[key], f"xds.tls.{key}") for key in XDS_TLS_KEYS})


def read_pem(path: str, key: str, marker: str = "-----BEGIN ") -> bytes:
    """A PEM file named by config key `key` (ConfigError naming key and file)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {key} {path}: {exc.strerror}") from exc
    if marker.encode() not in data:
        raise ConfigError(f"{key} {path} is not a PEM file (no '{marker.strip()}' line)")
    return data


def xds_tls_files(tls: XdsTls) -> tuple[bytes, bytes, bytes]:
    """(certificate chain, private key, client CA) of xds.tls, read and checked."""
    return (
        read_pem(tls.cert_file, "xds.tls.cert_file", "-----BEGIN CERTIFICATE"),
        read_pem(tls.key_file, "xds.tls.key_file"),
        read_pem(tls.client_ca_file, "xds.tls.client_ca_file", "-----BEGIN CERTIFICATE"),
    )


def check_files(config: Config) -> None:
    """What `serve --check` and the start read besides the config file: the token file, the
    xDS TLS files and the etcd TLS files (ConfigError naming the first problem)."""
    read_tokens(config.token_file)
    if config.xds_tls is not None:
        xds_tls_files(config.xds_tls)
    if config.etcd is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(config.etcd, key)
            if path is not None:
                read_pem(path, f"state.etcd.{key}")


def _etcd(data: object) -> EtcdSettings:
    if not isinstance(data, dict):
        raise ConfigError(
            "state.backend etcd needs state.etcd: {endpoints: [http://host:2379, ...]}"
        )
    unknown = sorted(set(data) - ETCD_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in state.etcd: {', '.join(map(str, unknown))} "
            f"(known: {', '.join(sorted(ETCD_KEYS))})"
        )
    endpoints = data.get("endpoints")
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    if not isinstance(endpoints, list) or not endpoints:
        raise ConfigError("state.etcd.endpoints must be a non-empty list of http(s)://host:port")
    schemes = set()
    for index, url in enumerate(endpoints):
        if not isinstance(url, str):
            raise ConfigError(f"state.etcd.endpoints[{index}] must be a string")
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or port == -1
        ):
            raise ConfigError(
                f"state.etcd.endpoints[{index}] must be http(s)://host:port, got {url!r}"
            )
        schemes.add(parts.scheme)
    if len(endpoints) != len(set(endpoints)):
        raise ConfigError("state.etcd.endpoints lists an endpoint twice")
    prefix = data.get("prefix", "/dhxds/")
    if not isinstance(prefix, str) or not prefix.startswith("/") or not prefix.endswith("/"):
        raise ConfigError(f"state.etcd.prefix must start and end with '/', got {prefix!r}")
    files: dict[str, str | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        value = data.get(key)
        files[key] = None if value is None else _string(value, f"state.etcd.{key}")
    if bool(files["cert_file"]) != bool(files["key_file"]):
        raise ConfigError("state.etcd.cert_file and state.etcd.key_file go together")
    if any(files.values()) and schemes != {"https"}:
        raise ConfigError("state.etcd TLS files need https:// endpoints (all of them)")
    return EtcdSettings(tuple(endpoints), prefix, **files)


def _static_workers(items: object) -> tuple[Worker, ...]:
    if not isinstance(items, list):
        raise ConfigError("static_workers must be a list of workers")
    workers: dict[str, Worker] = {}
    prefixes: dict[str, str] = {}
    for index, item in enumerate(items):
        try:
            worker = Worker.from_dict(item, static=True)
        except ValidationError as exc:
            raise ConfigError(f"static_workers[{index}]: {exc}") from exc
        if worker.id in workers:
            raise ConfigError(f"static_workers[{index}]: duplicate id {worker.id}")
        if worker.envoy_prefix in prefixes:
            raise ConfigError(
                f"static_workers[{index}]: envoy_prefix {worker.envoy_prefix} is already "
                f"used by {prefixes[worker.envoy_prefix]}"
            )
        workers[worker.id] = worker
        prefixes[worker.envoy_prefix] = worker.id
    return tuple(workers.values())


def load_config(path: str | Path) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def parse_tokens(text: str, path: str) -> tuple[str, ...]:
    """The tokens of an api.token_file: one per line; blank lines and '#' comments ignored.
    Several tokens are all accepted (rotation: add the new line, move the clients, remove the
    old line). A line with whitespace inside cannot be a bearer token and is refused."""
    tokens: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if any(ch.isspace() for ch in token) or not token.isprintable():
            # Never echo the line: it may be a secret with a typo in it.
            raise ConfigError(
                f"api.token_file {path} line {number}: a token must be one word of printable "
                "characters (no spaces inside)"
            )
        tokens.append(token)
    if not tokens:
        raise ConfigError(
            f"api.token_file {path} is empty (no token; blank lines and # comments only)"
        )
    return tuple(dict.fromkeys(tokens))


def read_tokens(path: str) -> tuple[str, ...]:
    """Every token of api.token_file (ConfigError naming the file when unreadable or empty)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"api.token_file {path} is not UTF-8 text") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read api.token_file {path}: {exc.strerror}") from exc
    return parse_tokens(text, path)


def read_token(path: str) -> str:
    """The token a client sends: the LAST token of the file (during a rotation the new one is
    added below the old one, so clients move to it as soon as it is there)."""
    return read_tokens(path)[-1]
