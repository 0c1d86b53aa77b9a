"""[base]/openapi.json: a valid OpenAPI 3.1 document that lists every routed interaction."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from fhir_server.api.routes import ROUTES
from fhir_server.resource_types import STORED_TYPES
from tests.conftest import RunningServer

METHODS = ("get", "head", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def document(server: RunningServer) -> dict[str, Any]:
    response = httpx.get(f"{server.settings.base_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in METHODS]


def parameter_names(document: dict[str, Any], op: dict[str, Any]) -> set[str]:
    """The names of an operation's parameters, through their $refs to components.parameters."""
    shared = document["components"]["parameters"]
    return {(shared[p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p)["name"] for p in op["parameters"]}


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema and its rules
    assert document["openapi"] == "3.1.0"


def test_every_path_parameter_is_declared(document: dict[str, Any]) -> None:
    missing = []
    for path, method, op in operations(document):
        declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "path" and p["required"]}
        for name in re.findall(r"{([^}]+)}", path):
            if name not in declared:
                missing.append(f"{method.upper()} {path}: {name}")
    assert missing == []


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))
    by_path = {(path, method): op["operationId"] for path, method, op in operations(document)}
    assert by_path[("/Patient/{id}", "get")] == "read-Patient"
    assert by_path[("/Patient/{id}", "head")] == "read-Patient-head"
    assert by_path[("/Task", "put")] == "conditional-update-Task"
    assert by_path[("/Task/{id}", "put")] == "update-Task"


def test_every_route_of_the_route_table_is_listed(document: dict[str, Any]) -> None:
    expected: set[tuple[str, str]] = set()
    for route in ROUTES:
        path = route.path or "/"
        if path.startswith("/{type}"):
            paths = [path.replace("{type}", t) for t in STORED_TYPES]
        elif "{type}" in path:  # the Patient compartment: its member types and *
            paths = [path.replace("{type}", t) for t in ("Task", "Appointment", "Patient", "*")]
        else:
            paths = [path]
        expected |= {(p, m.lower()) for p in paths for m in route.methods}
    listed = {(path, method) for path, method, _ in operations(document)}
    assert expected - listed == set()
    # Nothing that is not routed: every listed path comes from a route.
    assert all("{type}" not in path for path, _ in listed)
    assert ("/Practitioner/{id}/Task", "get") not in listed  # only the Patient compartment is routed


def test_search_declares_the_types_search_parameters(document: dict[str, Any]) -> None:
    names = parameter_names(document, document["paths"]["/Patient"]["get"])
    assert {"birthdate", "family", "identifier", "_id", "_lastUpdated"} <= names
    assert {"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total"} <= names
    task = parameter_names(document, document["paths"]["/Task"]["get"])
    assert {"owner", "status", "patient"} <= task
    assert "birthdate" not in task
    assert {"status", "owner"} <= parameter_names(document, document["paths"]["/Task"]["put"])  # conditional update
    assert "status" not in parameter_names(document, document["paths"]["/Task/{id}"]["put"])
    assert {"_id", "_type", "_count"} <= parameter_names(document, document["paths"]["/"]["get"])


def test_bodies_and_responses(document: dict[str, Any]) -> None:
    paths = document["paths"]
    create = paths["/Task"]["post"]
    assert create["requestBody"]["content"]["application/fhir+json"]["schema"] == {"$ref": "#/components/schemas/Task"}
    patch = paths["/Task/{id}"]["patch"]
    assert list(patch["requestBody"]["content"]) == ["application/json-patch+json"]
    read = paths["/Task/{id}"]["get"]["responses"]
    assert read["200"]["content"]["application/fhir+json"]["schema"] == {"$ref": "#/components/schemas/Task"}
    assert read["default"]["content"]["application/fhir+json"]["schema"] == {"$ref": "#/components/schemas/OperationOutcome"}
    search = paths["/Task"]["get"]["responses"]["200"]["content"]["application/fhir+json"]["schema"]
    assert search == {"$ref": "#/components/schemas/SearchsetBundle"}
    task = document["components"]["schemas"]["Task"]
    assert task["properties"]["resourceType"] == {"const": "Task"}
    assert task["properties"]["input"]["type"] == "array"
    assert task["properties"]["status"] == {"type": "string"}


def test_no_security_scheme_when_auth_is_off(document: dict[str, Any]) -> None:
    assert "security" not in document
    assert "securitySchemes" not in document["components"]


def test_security_scheme_says_what_smart_configuration_says(secure_server: RunningServer) -> None:
    base = secure_server.settings.base_url
    body = httpx.get(f"{base}/openapi.json", timeout=30).json()
    smart = httpx.get(f"{base}/.well-known/smart-configuration", timeout=30).json()
    schemes = body["components"]["securitySchemes"]
    assert schemes["smart"]["flows"]["authorizationCode"]["authorizationUrl"] == smart["authorization_endpoint"]
    assert schemes["smart"]["flows"]["clientCredentials"]["tokenUrl"] == smart["token_endpoint"]
    assert set(schemes["smart"]["flows"]["clientCredentials"]["scopes"]) == set(smart["scopes_supported"])
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert body["security"] == [{"smart": []}, {"bearer": []}]
    assert body["servers"] == [{"url": base}]
    assert body["paths"]["/metadata"]["get"]["security"] == []  # discovery needs no token
    assert "security" not in body["paths"]["/Patient"]["get"]
