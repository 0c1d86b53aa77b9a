"""POST [base]: batch and transaction Bundles."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import bundles
from fhir_server.api.body import parse_json, read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, require_json_body, response_format
from fhir_server.api.responses import json_response
from fhir_server.batch.batch import run_batch
from fhir_server.batch.dispatch import Dispatcher
from fhir_server.batch.entries import parse_entries
from fhir_server.batch.transaction import Transaction
from fhir_server.errors import BadRequest
from fhir_server.storage.pipeline.group import SCOPE_KEY as GROUP_SCOPE_KEY


async def batch_or_transaction(request: Request) -> Response:
    fmt = response_format(request)
    require_fhir(fmt)
    svc = services(request)
    require_json_body(request)
    body = parse_json(await read_body(request, svc.settings.max_body_bytes), svc.settings.max_json_depth)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest("POST [base] takes a Bundle of type batch or transaction")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(f"Bundle.type must be batch or transaction, not '{str(kind)[:40]}'",
                         expression=("Bundle.type",))
    context = await request_context(request, interaction=kind)
    entries = parse_entries(body, svc.settings.base_url, svc.settings.max_bundle_entries,
                            per_entry_errors=kind == "batch")
    # A batch's independent writes share transactions (storage/pipeline/group.py).
    grouped = kind == "batch" and svc.settings.batch_group_commit
    scope = {GROUP_SCOPE_KEY: svc.repository.commit_group()} if grouped else None
    dispatcher = Dispatcher(request.app, request, svc.settings.base_url, scope)
    try:
        if kind == "batch":
            responses = await run_batch(entries, dispatcher, svc.settings.batch_concurrency)
        else:
            responses = await Transaction(svc.repository, context, entries).run(dispatcher)
    finally:
        await dispatcher.close()
    return json_response(bundles.bundle(f"{kind}-response", responses, [], None), fmt)
