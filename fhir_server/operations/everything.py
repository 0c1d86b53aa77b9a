"""The Patient `$everything` operation: the patient, every stored resource in their
compartment, and the directory resources those reference (Practitioner, Organization, ...).

It is a search across types (keyset-paged like any search, `_count`, `_since`, `_type`), run
through the repository's read pipeline: every query carries the access filter (SMART,
Consent) and every resource passes `release`. Directory resources come as `include` entries
of the page that references them. AuditEvents and Provenance (one per access and change: they
grow without bound, and name other people) are left out, unless a caller holding an audit
scope names them in `_type`. The HTTP adapter is `fhir_server.api.everything`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from fhir_server.access.decision import AUDIT_RECORDS, holds_audit_scope, in_patient_compartment
from fhir_server.batch.references import references
from fhir_server.context import RequestContext
from fhir_server.errors import BadRequest
from fhir_server.resource_types import DIRECTORY, STORED, STORED_TYPES
from fhir_server.search import SearchEngine
from fhir_server.search.query import Clause, SearchQuery
from fhir_server.storage import schema
from fhir_server.storage.documents import StoredResource
from fhir_server.storage.repository import Repository


@dataclass
class EverythingRequest:
    patient_id: str
    count: int
    since: datetime | None = None
    types: list[str] | None = None  # `_type`: only these types
    cursor: str | None = None


@dataclass
class EverythingPage:
    entries: list[StoredResource]
    next_cursor: str | None
    included: list[StoredResource] = field(default_factory=list)


def _directory_ids(entries: list[StoredResource]) -> dict[str, list[str]]:
    """Directory resources referenced by the page, by type (relative references only)."""
    present = {(e.resource_type, e.id) for e in entries}
    wanted: dict[str, list[str]] = {}
    for entry in entries:
        for reference in references(entry.resource):
            rtype, _, rid = reference.partition("/")
            if rtype in DIRECTORY and rid and "/" not in rid and (rtype, rid) not in present:
                wanted.setdefault(rtype, [])
                if rid not in wanted[rtype]:
                    wanted[rtype].append(rid)
    return wanted


def compartment_types(search: SearchEngine) -> list[str]:
    """The stored types a Patient's compartment can hold, the Patient first among them."""
    return [t for t in STORED_TYPES if t == "Patient" or search.compartment_param("Patient", t)]


async def everything(repository: Repository, search: SearchEngine, context: RequestContext,
                     asked: EverythingRequest) -> EverythingPage:
    await repository.read(context, "Patient", asked.patient_id)  # 404, 410 or 403 first
    clauses: list[Clause] = []
    if asked.since is not None:
        clauses.append(Clause({schema.LAST_UPDATED: {"$gte": asked.since}}))
    types = compartment_types(search)
    if asked.types is not None:
        unknown = [t for t in asked.types if t not in STORED]
        if unknown:
            raise BadRequest(f"_type names types this server does not store: {', '.join(unknown)[:200]}")
        principal = context.principal
        types = [t for t in types if t in asked.types and (
            t not in AUDIT_RECORDS or principal is None or principal.kind != "token"
            or holds_audit_scope(principal, t))]
    else:
        types = [t for t in types if t not in AUDIT_RECORDS]
    if not types:
        return EverythingPage([], None)
    # Per type: an AuditEvent's compartment is judged by its `patient` parameter's index.
    queries = [SearchQuery(t, clauses=[Clause(in_patient_compartment(t, asked.patient_id)), *clauses],
                           count=asked.count, cursor=asked.cursor) for t in types]
    page = await repository.search_types(context, queries)
    included: list[StoredResource] = []
    for rtype, ids in _directory_ids(page.entries).items():
        included.extend(await repository.read_many(context, rtype, ids))
    return EverythingPage(page.entries, page.next_cursor, included)
