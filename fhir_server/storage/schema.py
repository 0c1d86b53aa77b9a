"""The stored document of a resource version: its field names, and a small reader.

Storage owns this layout. Per type there is a current collection (`Task`: the latest
version of each resource, a tombstone after a delete) and a history collection
(`Task_history`: every version, keyed `id/version`). Both hold the resource as its JSON text
beside the fields the server queries. Modules outside storage name those fields, build
filters on them and read documents through this module, never by spelling them out.
"""

from __future__ import annotations

from typing import Any

from fhir_server import fhirjson

Doc = dict[str, Any]

# -- fields of every version document ------------------------------------------------------
RESOURCE = "res"  # the resource's JSON text (bytes); None on a tombstone
VERSION = "v"  # versionId, an integer
LAST_UPDATED = "ts"  # meta.lastUpdated, a datetime
DELETED = "del"  # True on a tombstone (a deleted resource's last version)
INDEX = "sp"  # extracted search values by parameter code (layout: fhir_server.search.extract)
COMPARTMENTS = "compartments"  # compartment name -> ids of its owners (Patient -> [ids])
# -- history documents only ----------------------------------------------------------------
RESOURCE_ID = "id"  # the resource's id (the document's _id is `id/version`)
METHOD = "m"  # the HTTP method that wrote the version: POST, PUT, PATCH, DELETE

PATIENT_COMPARTMENT = f"{COMPARTMENTS}.Patient"

# Append-only types: every resource has one version, ever (updates and deletes are refused),
# so no history copy is kept. Their current document carries the history fields too (`id`,
# `m`) and stands for version 1 wherever history is read (`history_collection`).
APPEND_ONLY = frozenset({"AuditEvent"})
# Projections: the resource alone; the index fields a client never sees, left out.
RESOURCE_ONLY: Doc = {RESOURCE: 1}
WITHOUT_INDEX: Doc = {INDEX: 0, COMPARTMENTS: 0}
LIVE: Doc = {DELETED: False}


def history_collection(resource_type: str) -> str:
    """Where the versions of `resource_type` are: its own current collection if append-only."""
    return resource_type if resource_type in APPEND_ONLY else f"{resource_type}_history"


def history_key(resource_id: str, version: int | str) -> str:
    """The `_id` of one version in the history collection."""
    return f"{resource_id}/{version}"


def version_key(resource_type: str, resource_id: str, version: int | str) -> str:
    """The `_id` of one version in `history_collection(resource_type)`."""
    return resource_id if resource_type in APPEND_ONLY else history_key(resource_id, version)


def versions_of(resource_type: str, resource_id: str) -> Doc:
    """A filter on `history_collection(resource_type)`: the versions of one resource (by the
    key an index serves: `_id` of an append-only type, else `id`)."""
    return {"_id" if resource_type in APPEND_ONLY else RESOURCE_ID: resource_id}


def compartment_field(compartment: str) -> str:
    """The field listing the owners of `compartment` (e.g. the Patients) a document is in."""
    return f"{COMPARTMENTS}.{compartment}"


def index_field(code: str) -> str:
    """The field holding the extracted values of search parameter `code`."""
    return f"{INDEX}.{code}"


def in_compartment(compartment: str, owner: str) -> Doc:
    """A filter: documents in `owner`'s `compartment` (e.g. Patient/123's)."""
    return {compartment_field(compartment): owner}


# -- reading a document --------------------------------------------------------------------
def is_live(doc: Doc | None) -> bool:
    """A document holding a resource: found, not a tombstone."""
    return doc is not None and not doc.get(DELETED) and bool(doc.get(RESOURCE))


def resource_of(doc: Doc | None) -> dict[str, Any] | None:
    """The resource a document holds, parsed; None for a missing or deleted one."""
    if not is_live(doc):
        return None
    assert doc is not None
    value: dict[str, Any] = fhirjson.loads(doc[RESOURCE])
    return value


def index_of(doc: Doc | None) -> Doc:
    """The extracted search values of a document (empty for a tombstone)."""
    values: Doc = (doc or {}).get(INDEX) or {}
    return values


def compartment_owners(doc: Doc | None, compartment: str = "Patient") -> list[str]:
    """Ids of the owners of `compartment` a document is in (computed at write time)."""
    owners: list[str] = ((doc or {}).get(COMPARTMENTS) or {}).get(compartment) or []
    return owners
