"""What makes a Communication a thread header or a message, and who takes part.

The server marks what it recognises with a `meta.tag` of its own (`thread`, `message`,
`render-state`, `unrendered`), sets `sender` from the caller's identity, and keeps the list
of a thread's participants in the `thread-participant` extension: the recipients and the
sender, and the current members of every CareTeam among them. The custom SearchParameter
`participant` (profiles/) indexes that list, so one search finds a participant's threads,
and every message carries the list its thread had when it was sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.consent.model import period_of, relative_reference
from fhir_server.context import Principal
from fhir_server.storage import schema
from fhir_server.storage.database import Database

Doc = dict[str, Any]
BASE = "http://fhir.care-coord.example"
TAG_SYSTEM = f"{BASE}/CodeSystem/messaging"
PARTICIPANT_EXTENSION = f"{BASE}/StructureDefinition/thread-participant"
THREAD, MESSAGE, RENDER_STATE, UNRENDERED = "thread", "message", "render-state", "unrendered"
KINDS = (THREAD, MESSAGE, RENDER_STATE, UNRENDERED)
# Who takes part in a thread (the list); a CareTeam's members take part through it.
PARTICIPANT_TYPES = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson", "CareTeam", "Device")
PERSON_TYPES = ("Practitioner", "PractitionerRole", "Patient", "RelatedPerson")


def tag(kind: str) -> Doc:
    return {"system": TAG_SYSTEM, "code": kind}


def kind_of(resource: Doc | None) -> str | None:
    """The server's mark on a resource it recognised (`thread`, `message`, ...), or None."""
    for t in ((resource or {}).get("meta") or {}).get("tag") or []:
        if isinstance(t, dict) and t.get("system") == TAG_SYSTEM and t.get("code") in KINDS:
            return str(t["code"])
    return None


def mark(resource: Doc, kind: str | None) -> None:
    """Replaces the server's mark (a client's spelling of it is never kept)."""
    meta = resource.setdefault("meta", {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == TAG_SYSTEM)]
    if kind is not None:
        tags.append(tag(kind))
    if tags:
        meta["tag"] = tags
    else:
        meta.pop("tag", None)
    if not meta:
        resource.pop("meta", None)


def looks_like_header(resource: Doc) -> bool:
    return not resource.get("payload") and not resource.get("partOf")


def reference_of(value: Any, base_url: str) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return relative_reference(value["reference"], base_url)
    return None


def thread_of(resource: Doc, base_url: str) -> str | None:
    """The id of the Communication a message's `partOf` names (the first one), or None."""
    for part in resource.get("partOf") or []:
        ref = reference_of(part, base_url)
        if ref and ref.startswith("Communication/"):
            return ref.removeprefix("Communication/")
    return None


def participants(resource: Doc | None) -> list[str]:
    """The participant list the server keeps on a header or message."""
    out: list[str] = []
    for ext in (resource or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == PARTICIPANT_EXTENSION:
            ref = (ext.get("valueReference") or {}).get("reference")
            if isinstance(ref, str) and ref not in out:
                out.append(ref)
    return out


def set_participants(resource: Doc, refs: Iterable[str]) -> None:
    kept = [e for e in resource.get("extension") or []
            if not (isinstance(e, dict) and e.get("url") == PARTICIPANT_EXTENSION)]
    kept += [{"url": PARTICIPANT_EXTENSION, "valueReference": {"reference": r}} for r in refs]
    if kept:
        resource["extension"] = kept
    else:
        resource.pop("extension", None)


def caller_reference(principal: Principal) -> str | None:
    """Who the caller is, as a sender: their `fhirUser`, else the patient in context, else the
    system itself as `Device/<client_id>` (how Consent names a system, docs/consent.md)."""
    if principal.fhir_user:
        return principal.fhir_user
    if principal.patient:
        return f"Patient/{principal.patient}"
    if principal.client_id:
        return f"Device/{principal.client_id}"
    return None


def caller_identities(principal: Principal) -> frozenset[str]:
    """The references a caller takes part in threads as: who the user is (`fhirUser`), never
    the patient in context beside it. A practitioner launched in a patient's record, or a
    family member acting for the patient, is not that patient: taking them for her would show
    them her every thread and let them set her cursors and withdraw her messages. Only a
    token that names no user stands for the patient in its context."""
    if principal.fhir_user:
        return frozenset({principal.fhir_user})
    if principal.patient:
        return frozenset({f"Patient/{principal.patient}"})
    return frozenset({f"Device/{principal.client_id}"}) if principal.client_id else frozenset()


def _current_members(team: Doc, now: datetime, base_url: str) -> list[str]:
    if team.get("status") not in (None, "active"):
        return []
    out: list[str] = []
    for participant in team.get("participant") or []:
        period = period_of(participant.get("period"))
        member = reference_of(participant.get("member"), base_url)
        if member and (period is None or period.covers(now)) and member not in out:
            out.append(member)
    return out


async def expand(database: Database, named: Iterable[str], base_url: str,
                 session: AsyncClientSession | None = None) -> list[str]:
    """`named` and the current members of every CareTeam among them (one level: a team in a
    team takes part as a team)."""
    refs = list(dict.fromkeys(named))
    teams = [r.removeprefix("CareTeam/") for r in refs if r.startswith("CareTeam/")]
    if teams:
        now = datetime.now(UTC)
        async for doc in database.current("CareTeam").find(
                {"_id": {"$in": teams}, schema.DELETED: False}, schema.RESOURCE_ONLY, session=session):
            team = schema.resource_of(doc)
            for member in _current_members(team or {}, now, base_url):
                if member not in refs:
                    refs.append(member)
    return refs


def named_participants(resource: Doc, base_url: str) -> list[str]:
    """The recipients and the sender a header names."""
    refs = [reference_of(r, base_url) for r in resource.get("recipient") or []]
    refs.append(reference_of(resource.get("sender"), base_url))
    return list(dict.fromkeys(r for r in refs if r))


async def header(database: Database, thread_id: str, session: AsyncClientSession | None = None) -> Doc | None:
    """The live thread header `thread_id`, or None (not a thread, deleted, unknown)."""
    doc = await database.current("Communication").find_one(
        {"_id": thread_id, schema.DELETED: False}, schema.RESOURCE_ONLY, session=session)
    resource = schema.resource_of(doc)
    return resource if kind_of(resource) == THREAD else None
