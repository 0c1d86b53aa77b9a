"""The search interactions: type (`GET [base]/Type?`, `POST [base]/Type/_search`), system
(`GET [base]?_type=...`, `POST [base]/_search`) and Patient compartment
(`GET [base]/Patient/id/Type?...`)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.access.decision import in_patient_compartment
from fhir_server.api import bundles
from fhir_server.api.body import read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import FORM, body_media_type, require_fhir, response_format
from fhir_server.api.resources import check_type
from fhir_server.api.responses import json_response
from fhir_server.context import RequestContext
from fhir_server.errors import BadRequest, UnsupportedMediaType
from fhir_server.resource_types import STORED, STORED_TYPES, is_valid_id
from fhir_server.search import SearchQuery
from fhir_server.search.query import Clause
from fhir_server.storage import schema
from fhir_server.storage.repository import SearchPage

# Parameters every type shares: the only ones a search over several types may use.
SYSTEM_PARAMS = frozenset({"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source",
                           "_count", "_cursor", "_type", "_format", "_pretty", "_summary",
                           "_elements", "_total"})


async def _params(request: Request) -> list[tuple[str, str]]:
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        media = body_media_type(request)
        if media not in (None, FORM):
            raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded")
        body = await read_body(request, services(request).settings.max_body_bytes)
        params += parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return params


def _respond(
    request: Request, base: str, params: list[tuple[str, str]], query: SearchQuery,
    page: SearchPage,
) -> Response:
    fmt = response_format(request)
    svc = services(request)
    shown = [(k, v) for k, v in params if k != "_cursor"]
    links = {"self": bundles.page_url(base, params), "first": bundles.page_url(base, shown)}
    if page.next_cursor:
        links["next"] = bundles.page_url(base, shown, page.next_cursor)
    if page.prev_cursor:
        links["previous"] = bundles.page_url(base, shown, page.prev_cursor)
    body = bundles.searchset(
        svc.structure, svc.settings.base_url, links, page.entries, page.total, query.warnings,
        page.includes, summary=query.summary, elements=query.elements,
    )
    return json_response(body, fmt)


async def _search(request: Request, resource_type: str, params: list[tuple[str, str]],
                  compartment: tuple[str, str] | None = None) -> Response:
    require_fhir(response_format(request))
    context = await request_context(request, resource_type=resource_type)
    svc = services(request)
    query = svc.search.parse(resource_type, params, strict=context.prefer_handling == "strict")
    base = f"{svc.settings.base_url}/{resource_type}"
    if compartment is not None:
        name, owner = compartment
        if resource_type != name and not svc.search.compartment_param(name, resource_type):
            raise BadRequest(f"{resource_type} is not in the {name} compartment", code="value")
        within = in_patient_compartment(resource_type, owner) if name == "Patient" else \
            schema.in_compartment(name, owner)
        query.clauses.append(Clause(within, 0, positive=False))
        base = f"{svc.settings.base_url}/{name}/{owner}/{resource_type}"
    page = await svc.repository.search(context, query)
    return _respond(request, base, params, query, page)


async def search_type(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    return await _search(request, resource_type, await _params(request))


async def search_type_post(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    return await _search(request, resource_type, await _params(request))


async def search_compartment(request: Request) -> Response:
    owner = request.path_params["id"]
    if not is_valid_id(owner):
        raise BadRequest(f"'{owner[:64]}' is not a valid id")
    if request.path_params["type"] == "*":
        # GET [base]/Patient/id/*: every type in the compartment, as one search.
        require_fhir(response_format(request))
        svc = services(request)
        context = await request_context(request, interaction="search-system")
        types = [t for t in STORED_TYPES if t == "Patient" or svc.search.compartment_param("Patient", t)]
        base = f"{svc.settings.base_url}/Patient/{owner}/*"
        return await _search_types(request, context, await _params(request), types, base,
                                   lambda t: Clause(in_patient_compartment(t, owner), 0, positive=False))
    resource_type = check_type(request.path_params["type"])
    return await _search(request, resource_type, await _params(request), ("Patient", owner))


async def _search_types(
    request: Request, context: RequestContext, params: list[tuple[str, str]], types: list[str], base: str,
    extra: Callable[[str], Clause] | None = None,
) -> Response:
    """One search over several types: only the parameters every type shares may be used."""
    svc = services(request)
    for key, _ in params:
        if key.split(":")[0] not in SYSTEM_PARAMS:
            raise BadRequest(f"'{key[:60]}' cannot be used in a search across several types "
                             "(only the common parameters can)", code="not-supported")
    queries = [svc.search.parse(t, params, strict=context.prefer_handling == "strict") for t in types]
    if extra is not None:
        for query in queries:
            query.clauses.append(extra(query.resource_type))
    page = await svc.repository.search_types(context, queries)
    return _respond(request, base, params, queries[0], page)


async def search_system(request: Request) -> Response:
    require_fhir(response_format(request))
    params = await _params(request)
    svc = services(request)
    context = await request_context(request)
    strict = context.prefer_handling == "strict"
    names = [t.strip() for k, v in params if k == "_type" for t in v.split(",") if t.strip()]
    for name in names:
        if name not in STORED:
            raise BadRequest(f"_type: '{name[:64]}' is not a resource type this server stores",
                             code="not-supported")
    types = list(dict.fromkeys(names)) or list(STORED_TYPES)
    if len(types) == 1:
        query = svc.search.parse(types[0], params, strict=strict)
        page = await svc.repository.search(context, query)
        return _respond(request, svc.settings.base_url, params, query, page)
    return await _search_types(request, context, params, types, svc.settings.base_url)
