"""/openapi.json: a valid OpenAPI 3 document that lists exactly the routes aiohttp serves."""

from __future__ import annotations

import re

import jsonschema
import pytest
from dhxds.api import WAIT_TIMEOUT_DEFAULT, WAIT_TIMEOUT_MAX, Api
from dhxds.metrics import Metrics
from dhxds.model import WORKER_ID_PATTERN, Upstream
from dhxds.openapi import spec
from dhxds.registry import Registry, SqliteBackend
from fake_xds import FakeXds, real_xds
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

METHODS = {"get", "put", "post", "delete", "patch"}


def _app(tmp_path):
    registry = Registry(SqliteBackend(tmp_path / "w.db"), Upstream("127.0.0.1", 1), "rds")
    return Api(registry, Metrics(), "t", real_xds(registry)).app()


def test_the_document_is_valid_openapi():
    validate(spec())


def test_every_route_is_described_and_every_description_is_a_route(tmp_path):
    served = set()
    for route in _app(tmp_path).router.routes():
        path = route.resource.canonical
        if route.method == "HEAD" or path == "/v1/workers/{rest}":
            continue  # HEAD comes with GET; the catch-all only explains bad worker paths
        served.add((route.method.lower(), path))
    described = {
        (method, path)
        for path, item in spec()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert served == described


def test_every_operation_documents_its_errors_and_the_error_shape():
    document = spec()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            assert "200" in operation["responses"] or "204" in operation["responses"]
            if path.startswith("/v1/"):
                assert "401" in operation["responses"], (method, path)
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]


def test_wait_parameters_match_the_code():
    params = spec()["components"]["parameters"]
    assert params["Timeout"]["schema"]["maximum"] == WAIT_TIMEOUT_MAX
    assert params["Timeout"]["schema"]["default"] == WAIT_TIMEOUT_DEFAULT
    assert params["Wait"]["schema"]["enum"] == ["routable", "none"]
    # ECMA-262 semantics (what OpenAPI means): `$` is the very end, as fullmatch in Python.
    pattern = params["WorkerId"]["schema"]["pattern"]
    assert pattern == f"^{WORKER_ID_PATTERN}$"
    assert re.fullmatch(pattern[1:-1], "w1") and not re.fullmatch(pattern[1:-1], "w1\n")


def test_the_node_shape_is_the_architecture_contract():
    node = spec()["components"]["schemas"]["Node"]
    assert set(node["required"]) == {"id", "api", "transport", "acked", "nack", "connected_since"}
    assert node["properties"]["transport"]["enum"] == ["ads", "cds", "rds", "delta"]


def test_a_node_of_the_fake_core_fits_the_node_schema():
    """The shape the real core's nodes() must return (use this check in its tests too)."""
    document = spec()
    schema = {**document["components"]["schemas"]["Node"], "components": document["components"]}
    OAS30Validator(schema).validate(FakeXds.NODE)
    OAS30Validator(schema).validate(
        {**FakeXds.NODE, "nack": {"version": "v1", "message": "bad"}, "api": "v2"}
    )
    with pytest.raises(jsonschema.ValidationError):
        OAS30Validator(schema).validate({**FakeXds.NODE, "transport": "grpc"})
    with pytest.raises(jsonschema.ValidationError):
        OAS30Validator(schema).validate({k: v for k, v in FakeXds.NODE.items() if k != "acked"})
