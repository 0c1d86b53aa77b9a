"""Security labels per patient, stored beside each labelled version: `patient_labels`.

A provision about security labels denies part of one patient's data: "in Anna's
compartment AND labelled R". As a MongoDB filter that is a conjunction under a negation, a
top-level logical operator that keeps the embedded database from using any index. Stored
as "patient|system|code" values on the document, it becomes one flat condition:
`patient_labels $nin ["anna|...Confidentiality|R", ...]`, no query needed. Written inside the
change's transaction, only for versions that carry labels (unlabelled ones need nothing).
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.consent.region import SECURITY, Region, disjuncts
from fhir_server.hooks import Change
from fhir_server.storage.database import Database

FIELD = "patient_labels"


def _codes(resource: dict[str, Any]) -> list[str]:
    security = (resource.get("meta") or {}).get("security") or []
    return [f"{c['system']}|{c['code']}" for c in security
            if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)]


async def stamp(database: Database, change: Change, session: AsyncClientSession) -> None:
    """Adds `patient_labels` to the version `change` wrote (current and history document)."""
    codes = _codes(change.resource or {})
    if not codes:
        return
    current = database.current(change.resource_type)
    doc = await current.find_one({"_id": change.id}, {"compartments": 1}, session=session)
    patients = ((doc or {}).get("compartments") or {}).get("Patient") or []
    if not patients:
        return
    values = {"$set": {FIELD: [f"{p}|{code}" for p in patients for code in codes]}}
    await current.update_one({"_id": change.id, "v": change.version_id}, values, session=session)
    await database.history(change.resource_type).update_one(
        {"_id": f"{change.id}/{change.version_id}"}, values, session=session)


def label_values(patient: str, region: Region) -> list[str] | None:
    """`region` of `patient` as `patient_labels` values, if it is about labels only."""
    parts = disjuncts(region)
    if not parts:
        return None
    out: list[str] = []
    for part in parts:
        if list(part) != [SECURITY]:
            return None
        condition = part[SECURITY]
        if isinstance(condition, str):
            out.append(f"{patient}|{condition}")
        elif isinstance(condition, dict) and list(condition) == ["$in"]:
            out.extend(f"{patient}|{value}" for value in condition["$in"])
        else:
            return None
    return out
