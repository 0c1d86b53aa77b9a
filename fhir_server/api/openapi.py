"""[base]/openapi.json: an OpenAPI 3.1 document generated from the route table.

Like the CapabilityStatement it is read off `routes.ROUTES`, so it lists exactly what is
routed. A route written once for every type (`/{type}/{id}`) becomes one path per stored type,
so each operation can name its own resource schema and search parameters (from the search
registry), and operationIds are unique: `read-Patient`, `read-Patient-head`, ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI

from fhir_server import FHIR_VERSION, __version__
from fhir_server.api.negotiation import FHIR_JSON, FORM, JSON, JSON_PATCH
from fhir_server.api.openapi_parameters import (
    COMMON_SEARCH,
    IF_MATCH,
    IF_MODIFIED_SINCE,
    IF_NONE_EXIST,
    IF_NONE_MATCH,
    PREFER,
    SHAPE,
    STRINGS,
    component_parameters,
    path_param,
    query,
    results,
    searched,
)
from fhir_server.api.openapi_schemas import Schema, component_schemas, ref
from fhir_server.api.routes import ROUTES
from fhir_server.auth.endpoints.smart_configuration import SCOPES_SUPPORTED
from fhir_server.auth.settings import AuthSettings
from fhir_server.operations.care_gaps import PARAMETERS as CARE_GAPS_PARAMETERS
from fhir_server.resource_types import STORED_TYPES


class RouteLike(Protocol):
    @property
    def methods(self) -> tuple[str, ...]: ...
    @property
    def path(self) -> str: ...
    @property
    def interaction(self) -> str: ...
    @property
    def level(self) -> str: ...
    @property
    def conditional(self) -> bool: ...


class SearchRegistry(Protocol):
    def capability_params(self) -> dict[str, list[dict[str, Any]]]: ...
    def compartment_param(self, compartment: str, resource_type: str) -> list[str]: ...


@dataclass(frozen=True)
class _Concrete:
    """One route with its `{type}` filled in: what one OpenAPI path item describes."""

    route: RouteLike
    path: str
    resource_type: str | None  # the type the interaction is about (None: system level)
    compartment: str | None = None  # Patient, for /Patient/{id}/{type}

    @property
    def operation(self) -> str | None:
        return next((s[1:] for s in self.path.split("/") if s.startswith("$")), None)


# ------------------------------------------------------------------ bodies and responses

def _content(schema: Schema, *media_types: str) -> dict[str, Any]:
    return {m: {"schema": schema} for m in (media_types or (FHIR_JSON, JSON))}


def _response(description: str, schema: Schema | None = None, *, binary: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = _content(schema)
        if binary:  # Binary's raw content, in the Content-Type it was stored with
            out["content"]["*/*"] = {"schema": {"type": "string", "format": "binary"}}
    return out


def _written(rtype: str) -> Schema:
    # Prefer: return=OperationOutcome answers an outcome instead of the resource.
    return {"oneOf": [ref(rtype), ref("OperationOutcome")]}


def _resource_body(rtype: str, schema: Schema | None = None) -> dict[str, Any]:
    content = _content(schema or ref(rtype))
    if rtype == "Binary":
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return {"required": True, "content": content}


def _responses(item: _Concrete, method: str) -> dict[str, Any]:
    route, rtype = item.route, item.resource_type or ""
    code = route.interaction
    ok: dict[str, Any]
    responses: dict[str, Any] = {}
    if item.operation == "validate":
        ok = {"200": _response("The validation outcome", ref("OperationOutcome"))}
    elif item.operation == "everything":
        ok = {"200": _response("The patient's compartment", ref("SearchsetBundle"))}
    elif item.operation == "get-ws-binding-token":
        ok = {"200": _response("A token that binds a websocket", ref("Parameters"))}
    elif item.operation == "join":
        ok = {"200": _response("The participant's join into the virtual visit (url, token, expires)",
                               ref("Parameters"))}
    elif item.operation in ("status", "events"):
        ok = {"200": _response("Subscription status", ref("Resource"))}
    elif item.operation == "care-gaps":
        ok = {"200": _response("One document Bundle per patient (DEQM's shape)", ref("Parameters"))}
    elif code == "read" and rtype == "" and item.path.startswith("/OperationDefinition/"):
        ok = {"200": _response("An OperationDefinition this server publishes", ref("Resource"))}
    elif item.operation == "find":
        ok = {"200": _response("Proposed Appointments", ref("SearchsetBundle"))}
    elif item.operation in ("hold", "book", "cancel", "reschedule"):
        ok = {"200": _response("A collection Bundle of the Appointments written", ref("Resource"))}
    elif item.operation == "bulk-publish" and "{file}" in item.path:
        ok = {"200": {"description": "One resource per line",
                      "content": {"application/fhir+ndjson": {"schema": {"type": "string"}}}}}
    elif item.operation == "bulk-publish":
        ok = {"200": _response("The SMART Scheduling Links manifest", {"type": "object"})}
    elif item.operation in ("render-cursor", "render-state"):
        ok = {"200": _response("Render state: what systems rendered, per participant (docs/messaging.md)",
                               ref("Parameters"))}
    elif code == "capabilities":
        ok = {"200": _response("The CapabilityStatement", ref("CapabilityStatement"))}
    elif code in ("transaction",):
        ok = {"200": _response("The batch-response or transaction-response", ref("BatchResponseBundle"))}
    elif code.startswith("search"):
        ok = {"200": _response("The matches", ref("SearchsetBundle"))}
    elif code.startswith("history"):
        ok = {"200": _response("The versions", ref("HistoryBundle"))}
    elif code in ("read", "vread"):
        ok = {"200": _response(f"The {rtype}", ref(rtype), binary=rtype == "Binary"),
              "304": _response("Not modified (If-None-Match / If-Modified-Since)")}
    elif code == "create":
        ok = {"201": _response("Created (empty with Prefer: return=minimal)", _written(rtype)),
              "200": _response("A conditional create matched an existing resource", _written(rtype))}
    elif code == "update":
        ok = {"200": _response("Updated", _written(rtype)),
              "201": _response("Created by update", _written(rtype))}
    elif code == "patch":
        ok = {"200": _response("Patched", _written(rtype))}
    elif code == "delete":
        ok = {"200": _response("Deleted", ref("OperationOutcome")),
              "204": _response("Deleted (Prefer: return=minimal)")}
    else:
        raise ValueError(f"no OpenAPI responses for interaction {code!r} ({route.path})")
    responses.update(ok)
    responses["default"] = _response("An error (4xx, 5xx)", ref("OperationOutcome"))
    return responses


def _parameters(item: _Concrete, method: str, search: dict[str, list[dict[str, Any]]]) -> list[Any]:
    code, rtype = item.route.interaction, item.resource_type
    params: list[Any] = [path_param(n) for n in ("id", "vid", "file") if "{" + n + "}" in item.path]
    if code == "search-type" and rtype not in (None, "*") and method != "POST":
        names = ["_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total"]
        params += searched(rtype, search.get(rtype, []))
        params += results(*names)
    elif code.startswith("search") and method != "POST":  # across types: the common parameters
        common = [p for p in search.get("Patient", []) if p["name"] in COMMON_SEARCH]
        params += searched("Resource", common)
        params += results("_type", "_count", "_summary", "_elements", "_total")
    elif code.startswith("history"):
        params += results("_count", "_since", "_at")
    elif item.operation == "everything":
        params += results("_count", "_since", "_type")
    elif item.operation == "find" and method == "GET":
        params += [query(n, {"type": "string"}, f"$find {n}") for n in (
            "start", "end", "practitioner", "specialty", "service-type", "location", "patient", "visit-type",
            "_count")]
    elif item.operation == "bulk-publish":
        params += results("_since")
    elif item.operation == "events" and method == "GET":
        params += [query(n, {"type": "integer"}, n) for n in ("eventsSinceNumber", "eventsUntilNumber")]
        params.append(query("content", {"enum": ["empty", "id-only", "full-resource"]}, "Payload content"))
    elif item.operation == "care-gaps" and method == "GET":
        params += [query(n, {"type": "string"}, n) for n in CARE_GAPS_PARAMETERS]
    elif item.operation == "render-state":
        params.append(query("participant", {"type": "string"}, "Type/id: the participant's inbox")
                      if "{id}" not in item.path else
                      query("rebuild", {"type": "boolean"}, "Rebuild the cursors from the message history"))
    elif item.operation in ("status", "get-ws-binding-token") and "{id}" not in item.path and method == "GET":
        params.append(query("id", STRINGS, "Subscription ids"))
    elif code in ("update", "delete") and "{id}" not in item.path and rtype is not None:
        params += searched(rtype, search.get(rtype, []))  # conditional: the criteria
    if code in ("read", "vread"):
        params += [IF_NONE_MATCH, IF_MODIFIED_SINCE]
    if code == "create":
        params.append(IF_NONE_EXIST)
    if code in ("update", "patch", "delete") and "{id}" in item.path:
        params.append(IF_MATCH)
    if code in ("create", "update", "patch", "delete") or code.startswith("search"):
        params.append(PREFER)
    if code not in ("create", "update", "patch", "delete", "transaction") and item.operation is None:
        params += results(*(n for n in SHAPE if n not in ("_summary", "_elements")
                             or code in ("read", "vread")))
    return params


def _request_body(item: _Concrete, method: str, search: dict[str, list[dict[str, Any]]]) -> Any:
    code, rtype = item.route.interaction, item.resource_type
    if method not in ("POST", "PUT", "PATCH"):
        return None
    if code in ("create", "update") and rtype is not None:
        return _resource_body(rtype)
    if code == "patch":
        return {"required": True, "content": {JSON_PATCH: {"schema": ref("JsonPatch")}}}
    if code == "transaction":
        return {"required": True, "content": _content(ref("Bundle"))}
    if item.operation == "validate" and rtype is not None:
        return _resource_body(rtype, {"oneOf": [ref(rtype), ref("Parameters")]})
    if item.operation is not None:
        return {"required": False, "content": _content(ref("Parameters"))}
    if code.startswith("search"):
        names = [p["name"] for p in search.get(rtype or "", [])] if rtype else list(COMMON_SEARCH)
        form = {"type": "object", "properties": {n: {"type": "string"} for n in names}}
        return {"required": False, "content": {FORM: {"schema": form}}}
    raise ValueError(f"no OpenAPI request body for {method} {item.route.path}")


# ------------------------------------------------------------------ paths

def _expand(routes: Iterable[RouteLike], compartment_types: Callable[[str], list[str]]) -> Iterator[_Concrete]:
    for route in routes:
        segments = route.path.strip("/").split("/") if route.path else []
        if "{type}" not in segments:
            literal = segments[0] if segments and segments[0] in STORED_TYPES else None
            yield _Concrete(route, route.path or "/", literal)
        elif segments[0] == "{type}":
            for rtype in STORED_TYPES:
                yield _Concrete(route, route.path.replace("{type}", rtype), rtype)
        else:  # a compartment: /Patient/{id}/{type}
            for rtype in compartment_types(segments[0]):
                yield _Concrete(route, route.path.replace("{type}", rtype), rtype, segments[0])


def _base_id(item: _Concrete) -> str:
    """read-Patient, conditional-update-Task, validate-instance-Task, search-compartment-Patient-Task."""
    route = item.route
    name = f"{item.operation}-{route.level}" if item.operation else route.interaction
    if item.operation:
        # A route below the operation's own ($bulk-publish/{file}): named by what follows.
        tail = route.path.split(f"${item.operation}", 1)[1].strip("/")
        if tail:
            name += "-" + tail.replace("{", "").replace("}", "").replace("/", "-")
    if route.conditional:
        name = f"conditional-{name}"
    if item.compartment:
        name = f"search-compartment-{item.compartment}"
    if item.resource_type:
        name += "-" + item.resource_type.replace("*", "all")
    return name


def _operation_ids(items: list[_Concrete]) -> dict[tuple[str, str], str]:
    """(path, method) -> operationId. The GET of an interaction keeps its plain name; the same
    interaction by another method (HEAD, POST _search) gets the method as a suffix."""
    by_base: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        for method in item.route.methods:
            by_base.setdefault(_base_id(item), []).append((item.path, method))
    ids: dict[tuple[str, str], str] = {}
    for base, uses in by_base.items():
        for path, method in uses:
            plain = len(uses) == 1 or method == "GET"
            ids[(path, method)] = base if plain else f"{base}-{method.lower()}"
    if len(set(ids.values())) != len(ids):
        raise ValueError("the route table gives two OpenAPI operations the same operationId")
    return ids


def _summary(item: _Concrete, method: str) -> str:
    what = f"${item.operation}" if item.operation else item.route.interaction
    on = item.resource_type or "the server"
    if item.compartment:
        on = f"{item.resource_type} in a {item.compartment}'s compartment"
    return f"{what} ({method}) on {on}"


def _tag(item: _Concrete) -> str:
    if item.resource_type == "*":
        return item.compartment or "system"
    return item.resource_type or "system"


def security_schemes(auth: AuthSettings) -> dict[str, Any]:
    """SMART on FHIR: OAuth2 (authorization code for apps, client credentials for backend
    services), the token being a bearer JWT, as .well-known/smart-configuration says."""
    scopes = {s: s for s in SCOPES_SUPPORTED}
    return {
        "smart": {
            "type": "oauth2",
            "description": "SMART App Launch / Backend Services ([base]/.well-known/smart-configuration)",
            "flows": {
                "authorizationCode": {"authorizationUrl": auth.authorize_url, "tokenUrl": auth.token_url,
                                      "refreshUrl": auth.token_url, "scopes": scopes},
                "clientCredentials": {"tokenUrl": auth.token_url, "scopes": scopes},
            },
        },
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }


def openapi_document(
    routes: Iterable[RouteLike], search: SearchRegistry, base_url: str, auth: AuthSettings | None,
) -> dict[str, Any]:
    """The OpenAPI document; `auth` is None when the server runs without authorization."""
    # One parameter per name (the registry may list a special parameter such as _id twice).
    params: dict[str, list[dict[str, Any]]] = {}
    for rtype, entries in search.capability_params().items():
        unique: dict[str, dict[str, Any]] = {}
        for entry in entries:
            unique.setdefault(entry["name"], entry)
        params[rtype] = list(unique.values())

    def compartment_types(compartment: str) -> list[str]:
        members = [t for t in STORED_TYPES if t == compartment or search.compartment_param(compartment, t)]
        return [*members, "*"]

    items = list(_expand(routes, compartment_types))
    ids = _operation_ids(items)
    paths: dict[str, dict[str, Any]] = {}
    for item in items:
        path_item = paths.setdefault(item.path, {})
        for method in item.route.methods:
            operation: dict[str, Any] = {
                "operationId": ids[(item.path, method)],
                "summary": _summary(item, method),
                "tags": [_tag(item)],
                "parameters": _parameters(item, method, params),
                "responses": _responses(item, method),
            }
            if auth is not None and item.route.interaction == "capabilities":
                operation["security"] = []  # discovery needs no token
            body = _request_body(item, method, params)
            if body is not None:
                operation["requestBody"] = body
            path_item[method.lower()] = operation
    components: dict[str, Any] = {"schemas": component_schemas(), "parameters": component_parameters(params)}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "FHIR R4 care-coordination server",
            "version": __version__,
            "description": f"FHIR {FHIR_VERSION} REST API. The CapabilityStatement ([base]/metadata) "
                           "is the authoritative description; this document is generated from the "
                           "same route table.",
        },
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": components,
    }
    if auth is not None:
        components["securitySchemes"] = security_schemes(auth)
        document["security"] = [{"smart": []}, {"bearer": []}]
    return document


def install(app: FastAPI) -> None:
    """Serve this document at the app's openapi_url instead of FastAPI's own, which cannot see
    the path parameters of handlers that take the bare Request. Built once, on first request
    (it needs the search registry the app builds at start-up)."""

    def generate() -> dict[str, Any]:
        if app.openapi_schema is None:
            svc = app.state.services
            auth = svc.auth if svc.auth.enabled else None
            app.openapi_schema = openapi_document(ROUTES, svc.search, svc.settings.base_url, auth)
        return app.openapi_schema

    app.openapi = generate  # type: ignore[method-assign]
