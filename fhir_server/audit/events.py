"""AuditEvents shaped after IHE Basic Audit Log Patterns (BALP). Pure functions.

Every event has: `type` rest (or DICOM User Authentication for token issuance), `subtype`
the FHIR interaction, `action` C/R/U/D/E, `recorded`, `outcome`; agents: the user (BALP
UserOauthAgent: `who` = fhirUser, `policy` = the token's jti, `purposeOfUse`), the client
(DICOM Source Role ID, its network address) and this server (Destination Role ID); `source`
this server; entities: the resource (`Type/id/_history/v`), each patient whose data it was,
the query (base64) of a search, the request id, and each Consent that decided, with the
decision (permit, deny, break-the-glass) in `entity.detail`.

One event per request (BALP suggests one per patient for multi-patient queries; we list
every patient in one event instead: `AuditEvent?patient=` finds it either way).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fhir_server.consent import Decision
from fhir_server.context import Automation, RequestContext
from fhir_server.hooks import Change
from fhir_server.resource_types import MACHINERY
from fhir_server.storage.documents import format_instant

Doc = dict[str, Any]
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
BALP_AGENT = "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
# At most this many Consent entities per event (an opt-in practice may have many).
MAX_CONSENTS = 100

# interaction -> (subtype code, action)
_INTERACTIONS = {
    "read": ("read", "R"), "vread": ("vread", "R"), "history-instance": ("history-instance", "R"),
    "history-type": ("history-type", "E"), "history-system": ("history-system", "E"),
    "search-type": ("search-type", "E"), "search-system": ("search-system", "E"),
    "create": ("create", "C"), "update": ("update", "U"), "patch": ("patch", "U"),
    "delete": ("delete", "D"), "transaction": ("transaction", "E"), "batch": ("batch", "E"),
    "operation": ("operation", "E"),
}
SEARCHES = frozenset({"search-type", "search-system", "history-type", "history-system"})

Seen = tuple[str, str, str]  # (type, id, versionId) of a resource that left the server


def records_change(context: RequestContext, change: Change) -> bool:
    """Whether a change gets a Provenance and an AuditEvent of its own: not Provenance and
    AuditEvent themselves, not bulk loads (imported data brings its own history), not the
    server's own bookkeeping of machinery (a Subscription's status, ...)."""
    if change.resource_type in ("Provenance", "AuditEvent") or context.interaction == "load":
        return False
    return context.caller is not None or change.resource_type not in MACHINERY


def new_id() -> str:
    return str(uuid.uuid4())


def interaction_of(context: RequestContext) -> str:
    # The route table gives every request its FHIR interaction code already.
    return context.interaction


def _outcome(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def _coding(system: str, code: str, display: str | None = None) -> Doc:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def purposes(context: RequestContext) -> list[Doc]:
    # The purpose in force: the token's, as the request narrowed it (fhir_server.access.purpose).
    values = list(context.purpose_of_use)
    out = []
    for value in dict.fromkeys(values):
        system, bar, code = value.rpartition("|")
        out.append({"coding": [_coding(system if bar else ACT_REASON, code)]})
    return out


def _engine_agent(automation: Automation) -> Doc:
    """A workflow's effect: the coordination engine's Device asked for it (the server's own
    work has no user or client of its own)."""
    return {"type": {"coding": [_coding(DCM, "110150", "Application")]},
            "who": {"reference": automation.device} if automation.device else
            {"display": f"coordination engine ({automation.workflow})"},
            "name": f"coordination engine ({automation.workflow})", "requestor": True}


def _agents(context: RequestContext, base_url: str) -> list[Doc]:
    principal = context.caller
    if context.automation is not None:
        return [_engine_agent(context.automation), _server_agent(base_url)]
    user: Doc = {
        "type": {"coding": [_coding(BALP_AGENT, "UserOauthAgent", "User OAuth Agent participant")]},
        "requestor": True,
    }
    if principal is None:
        user["who"] = {"display": "unauthenticated"}
    elif principal.fhir_user:
        user["who"] = {"reference": principal.fhir_user}
    else:
        user["who"] = {"identifier": {"value": principal.client_id or "unknown"}}
    if principal is not None and principal.token_id:
        user["policy"] = [principal.token_id]
    purpose = purposes(context)
    if purpose:
        user["purposeOfUse"] = purpose
    client: Doc = {
        "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
        "who": {"identifier": {"value": principal.client_id if principal and principal.client_id
                               else "unknown"}},
        "requestor": False,
    }
    if context.remote_addr:
        client["network"] = {"address": context.remote_addr, "type": "2"}
    return [user, client, _server_agent(base_url)]


def _server_agent(base_url: str) -> Doc:
    return {
        "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
        "who": {"display": base_url},
        "requestor": False,
        "network": {"address": base_url, "type": "5"},
    }


def _patient_entity(patient: str) -> Doc:
    return {"what": {"reference": f"Patient/{patient}"},
            "type": _coding(ENTITY_TYPE, "1", "Person"), "role": _coding(OBJECT_ROLE, "1", "Patient")}


def _data_entity(reference: str) -> Doc:
    return {"what": {"reference": reference}, "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "4", "Domain Resource")}


def _consent_entity(consent: str, decision: str) -> Doc:
    return {"what": {"reference": f"Consent/{consent}"},
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
            "detail": [{"type": "decision", "valueString": decision}]}


def _event(context: RequestContext, base_url: str, type_: Doc, subtype: Doc, action: str,
           status: int, recorded: datetime, entities: list[Doc]) -> Doc:
    event: Doc = {
        "resourceType": "AuditEvent",
        "id": new_id(),
        "type": type_,
        "subtype": [subtype],
        "action": action,
        "recorded": format_instant(recorded),
        "outcome": _outcome(status),
    }
    if status >= 400:
        event["outcomeDesc"] = f"HTTP {status}"
    purpose = purposes(context)
    if purpose:
        event["purposeOfEvent"] = purpose
    event["agent"] = _agents(context, base_url)
    event["source"] = {"site": base_url, "observer": {"display": base_url},
                       "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}
    entities.append({"what": {"identifier": {"value": context.request_id}},
                     "type": _coding(BALP_ENTITY, "XrequestId", "X-Request-Id")})
    event["entity"] = entities
    return event


def consent_entities(decided: Iterable[Decision], permitted: Iterable[str]) -> list[Doc]:
    """Consents that decided (deny / break-the-glass), then those that let data through."""
    out: dict[str, Doc] = {}
    for d in decided:
        out.setdefault(d.consent, _consent_entity(d.consent, d.decision))
    for consent in permitted:
        out.setdefault(consent, _consent_entity(consent, "permit"))
    return list(out.values())[:MAX_CONSENTS]


def interaction_event(context: RequestContext, base_url: str, status: int, recorded: datetime, *,
                      seen: list[Seen], patients: Iterable[str], consents: list[Doc]) -> Doc:
    """The event of one FHIR interaction (its outcome known)."""
    interaction = interaction_of(context)
    code, action = _INTERACTIONS.get(interaction, ("operation", "E"))
    entities: list[Doc] = []
    if interaction in SEARCHES or interaction == "operation":
        url = urlsplit(context.url)
        entities.append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                         "role": _coding(OBJECT_ROLE, "24", "Query"), "name": url.path,
                         "query": base64.b64encode(url.query.encode()).decode("ascii")})
    elif seen:
        entities += [_data_entity(f"{t}/{i}/_history/{v}") for t, i, v in dict.fromkeys(seen)]
    elif context.resource_type and context.resource_id:
        entities.append(_data_entity(f"{context.resource_type}/{context.resource_id}"))
    entities += [_patient_entity(p) for p in dict.fromkeys(patients)]
    entities += consents
    return _event(context, base_url, _coding(EVENT_TYPE, "rest", "Restful Operation"),
                  _coding(RESTFUL, code), action, status, recorded, entities)


def change_event(context: RequestContext, base_url: str, change: Change, patients: Iterable[str]) -> Doc:
    """The event of a committed change, written in the change's own transaction."""
    code, action = _INTERACTIONS[change.interaction]
    entities = [_data_entity(f"{change.resource_type}/{change.id}/_history/{change.version_id}")]
    automation = context.automation
    if automation is not None and automation.trigger:
        # A workflow's effect names the version that triggered it, as its Provenance does.
        entities.append({**_data_entity(automation.trigger),
                         "description": f"trigger of workflow {automation.workflow}"})
    entities += [_patient_entity(p) for p in dict.fromkeys(patients)]
    return _event(context, base_url, _coding(EVENT_TYPE, "rest", "Restful Operation"),
                  _coding(RESTFUL, code), action, 200, change.last_updated, entities)


def token_event(context: RequestContext, base_url: str, status: int, recorded: datetime) -> Doc:
    """Token issuance at the authorization server (a login, for a user-facing grant)."""
    caller = context.caller
    entities = [_patient_entity(caller.patient)] if caller and caller.patient else []
    return _event(context, base_url, _coding(DCM, "110114", "User Authentication"),
                  _coding(DCM, "110122", "Login"), "E", status, recorded, entities)
