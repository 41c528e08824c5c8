"""The OpenAPI 3 description of the HTTP API, served at GET /openapi.json.

Kept as data next to the code it describes; tests/unit/dhxds/test_openapi.py validates it and
checks that it lists exactly the routes registered in aiohttp.
"""

from __future__ import annotations

import copy
from typing import Any

from . import __version__
from .model import (
    ENVOY_PREFIX_PATTERN,
    OPTIONAL_FIELDS,
    TTL_MAX,
    TTL_MIN,
    UPSTREAM_PROTOCOLS,
    WORKER_FIELDS,
    WORKER_ID_PATTERN,
)

_JSON = "application/json"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{name}"}


_WORKER_FIELDS: dict[str, Any] = {
    "host": {
        "type": "string",
        "maxLength": 253,
        "description": "IP address or DNS name Envoy connects to. Refused: 0.0.0.0, ::, "
        "multicast, 255.255.255.255, IPv6 link-local and addresses with a zone (%eth0).",
    },
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "envoy_prefix": {
        "type": "string",
        "pattern": f"^{ENVOY_PREFIX_PATTERN}$",
        "maxLength": 256,
        "description": "Path prefix and `envoy-prefix` header value (unique). "
        "Default `/worker/<id>`.",
    },
    "strip_prefix": {"type": "boolean", "default": True},
    "upstream_protocol": {
        "type": "string",
        "enum": list(UPSTREAM_PROTOCOLS),
        "default": "downstream",
    },
    "tls": {"type": "boolean", "default": False},
    "tls_sni": {"type": "string", "maxLength": 253},
    "ttl": {
        "type": "integer",
        "minimum": TTL_MIN,
        "maximum": TTL_MAX,
        "description": "Seconds: a worker lease (state.backend etcd only; the SQLite registry "
        "answers 400). The worker disappears by itself unless a PUT renews it within this "
        "time; a repeated PUT of the same worker renews it. Left out: stays until removed.",
    },
}

_SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "dhxds registration API",
        "version": __version__,
        "description": "Register Deephaven workers with the dhxds xDS control plane. Every "
        'error is `{"error": "<message>"}`; a rejected request changes nothing. All '
        "paths except /healthz and /openapi.json (and /metrics when "
        "api.metrics_require_token is false) need `Authorization: Bearer <token>`.",
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/workers": {
            "get": {
                "operationId": "listWorkers",
                "summary": "All workers (static ones from the config file included)",
                "responses": {
                    "200": {
                        "description": "The workers, sorted by id",
                        "content": {
                            _JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["workers"],
                                    "properties": {
                                        "workers": {
                                            "type": "array",
                                            "items": _ref("schemas/Worker"),
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "401": _ref("responses/Unauthorized"),
                },
            }
        },
        "/v1/workers/{id}": {
            "parameters": [_ref("parameters/WorkerId")],
            "get": {
                "operationId": "getWorker",
                "summary": "One worker; with wait=routable, once it is routable",
                "parameters": [_ref("parameters/Wait"), _ref("parameters/Timeout")],
                "responses": {
                    "200": _ref("responses/Worker"),
                    "202": _ref("responses/Pending"),
                    "400": _ref("responses/BadRequest"),
                    "401": _ref("responses/Unauthorized"),
                    "404": _error("The worker is not registered"),
                },
            },
            "put": {
                "operationId": "putWorker",
                "summary": "Register or replace a worker",
                "description": "Answers once the change is stored durably (a worker with "
                "ttl: its lease is renewed, also when nothing else changed). With "
                "wait=routable it then waits until every connected Envoy node has ACKed "
                "the worker's cluster and a route to it: 201/200 when that holds, 202 with "
                "the pending node ids when the timeout passes first (the change is stored "
                "either way).",
                "parameters": [_ref("parameters/Wait"), _ref("parameters/Timeout")],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("schemas/WorkerInput")}},
                },
                "responses": {
                    "200": _ref("responses/Worker"),
                    "201": _ref("responses/Worker"),
                    "202": _ref("responses/Pending"),
                    "400": _error(
                        "Invalid id, body or query; ttl with the SQLite registry (leases "
                        "need state.backend etcd)"
                    ),
                    "401": _ref("responses/Unauthorized"),
                    "409": _error("A static worker, or the envoy_prefix is already used"),
                    "413": _error("The body is larger than 64 KiB"),
                    "500": _error("The registry could not store the change (the message says why)"),
                    "503": _error(
                        "The registry is unavailable (etcd: no member answers); nothing changed"
                    ),
                },
            },
            "delete": {
                "operationId": "deleteWorker",
                "summary": "Remove a worker (does not wait for Envoy)",
                "responses": {
                    "204": {"description": "Removed"},
                    "400": _ref("responses/BadRequest"),
                    "401": _ref("responses/Unauthorized"),
                    "404": _error("The worker is not registered"),
                    "409": _error("A static worker: change the config file"),
                    "500": _error("The registry could not store the change (the message says why)"),
                    "503": _error(
                        "The registry is unavailable (etcd: no member answers); nothing changed"
                    ),
                },
            },
        },
        "/v1/nodes": {
            "get": {
                "operationId": "listNodes",
                "summary": "Connected Envoy nodes and their xDS sync state",
                "responses": {
                    "200": {
                        "description": "One entry per connected node",
                        "content": {
                            _JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["nodes"],
                                    "properties": {
                                        "nodes": {
                                            "type": "array",
                                            "items": _ref("schemas/Node"),
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "401": _ref("responses/Unauthorized"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and readiness (no token)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Serving. status is `degraded` (with a reason) when the "
                        "registry is not in its normal state (a failed write or watch, invalid "
                        "stored workers).",
                        "content": {
                            _JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["status", "workers"],
                                    "properties": {
                                        "status": {"type": "string", "enum": ["ok", "degraded"]},
                                        "workers": {"type": "integer", "minimum": 0},
                                        "reason": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "503": _error("Starting or shutting down"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (token unless api.metrics_require_token: false)",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": _ref("responses/Unauthorized"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description (no token)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document",
                        "content": {_JSON: {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "parameters": {
            "WorkerId": {
                "name": "id",
                "in": "path",
                "required": True,
                "description": "1-128 of [A-Za-z0-9._-], starting with a letter or digit, "
                "without '..'",
                "schema": {"type": "string", "pattern": f"^{WORKER_ID_PATTERN}$"},
            },
            "Wait": {
                "name": "wait",
                "in": "query",
                "required": False,
                "description": "`routable`: answer once every connected Envoy node has ACKed "
                "the worker's cluster and route (or 202 at the timeout). Default `none`.",
                "schema": {"type": "string", "enum": ["routable", "none"], "default": "none"},
            },
            "Timeout": {
                "name": "timeout",
                "in": "query",
                "required": False,
                "description": "Seconds to wait with wait=routable (only with it).",
                "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 5},
            },
        },
        "responses": {
            "Worker": {
                "description": "The worker (200 replaced or unchanged, 201 created)",
                "content": {_JSON: {"schema": _ref("schemas/Worker")}},
            },
            "Pending": {
                "description": "Stored, but not yet routable on every node at the timeout",
                "content": {
                    _JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["worker", "pending"],
                            "properties": {
                                "worker": _ref("schemas/Worker"),
                                "pending": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "Ids of the nodes that have not ACKed yet",
                                },
                                "created": {"type": "boolean"},
                            },
                        }
                    }
                },
            },
            "BadRequest": _error("Invalid id, body or query"),
            "Unauthorized": _error("Missing, malformed or wrong bearer token"),
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "WorkerInput": {
                "type": "object",
                "required": ["host", "port"],
                "additionalProperties": False,
                "properties": {
                    "id": {
                        "type": "string",
                        "description": "Optional; must equal the id in the path",
                    },
                    **_WORKER_FIELDS,
                },
            },
            "Worker": {
                "type": "object",
                # Every stored field but the optional ones, plus `static` (API only).
                "required": [f for f in WORKER_FIELDS if f not in OPTIONAL_FIELDS] + ["static"],
                "properties": {
                    "id": {"type": "string"},
                    **_WORKER_FIELDS,
                    "static": {
                        "type": "boolean",
                        "description": "Defined in the config file (read-only here)",
                    },
                },
            },
            "Node": {
                "type": "object",
                "required": ["id", "api", "transport", "acked", "nack", "connected_since"],
                "properties": {
                    "id": {"type": "string", "description": "Envoy's node id"},
                    "cluster": {"type": "string", "description": "Envoy's node cluster"},
                    "peer": {"type": "string", "description": "gRPC peer address"},
                    "api": {"type": "string", "enum": ["v2", "v3"]},
                    "transport": {"type": "string", "enum": ["ads", "cds", "rds", "delta"]},
                    "acked": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "Last ACKed version by type URL",
                    },
                    "nack": {
                        "type": "object",
                        "nullable": True,
                        "required": ["version", "message"],
                        "properties": {
                            "version": {"type": "string"},
                            "message": {"type": "string"},
                        },
                        "description": "The last NACK (rejected version and Envoy's message)",
                    },
                    "connected_since": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}


def spec() -> dict[str, Any]:
    """A copy of the OpenAPI document (callers may change it)."""
    return copy.deepcopy(_SPEC)
