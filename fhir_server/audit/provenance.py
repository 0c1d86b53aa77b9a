"""The Provenance of a change: what version, who (user and client), when, where, why.

`target` is the new version (`Type/id/_history/v`), `recorded` its commit time, `activity`
v3-DataOperation, agents the user (`author`) and the client application (`enterer`, on the
user's behalf), or this server for its own work; `location` the writer's care location when
known (see `care_location`); `reason` the purpose of use of the request.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.audit.events import new_id, purposes
from fhir_server.consent.model import relative_reference
from fhir_server.context import RequestContext
from fhir_server.directory import active_roles
from fhir_server.hooks import Change
from fhir_server.storage.documents import format_instant

Doc = dict[str, Any]
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_ACTIVITY = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE", "delete": "DELETE"}


def _agent(kind: str, who: Doc, on_behalf_of: Doc | None = None) -> Doc:
    agent: Doc = {"type": {"coding": [{"system": PARTICIPANT, "code": kind}]}, "who": who}
    if on_behalf_of:
        agent["onBehalfOf"] = on_behalf_of
    return agent


def provenance_for(context: RequestContext, base_url: str, change: Change, location: str | None) -> Doc:
    principal = context.caller
    agents: list[Doc] = []
    automation = context.automation
    if automation is not None:  # a workflow's effect: the engine's Device acts
        agents.append(_agent("performer", {"reference": automation.device} if automation.device
                             else {"display": f"coordination engine ({automation.workflow})"}))
    elif principal is None:
        agents.append(_agent("performer", {"display": base_url}))
    else:
        user = {"reference": principal.fhir_user} if principal.fhir_user else None
        if user:
            agents.append(_agent("author", user))
        if principal.client_id:
            agents.append(_agent("enterer", {"identifier": {"value": principal.client_id}}, user))
        if not agents:
            agents.append(_agent("author", {"display": "unidentified client"}))
    provenance: Doc = {
        "resourceType": "Provenance",
        "id": new_id(),
        "target": [{"reference": f"{change.resource_type}/{change.id}/_history/{change.version_id}"}],
        "recorded": format_instant(change.last_updated),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": _ACTIVITY[change.interaction]}]},
        "agent": agents,
    }
    if automation is not None and automation.trigger:
        provenance["entity"] = [{"role": "source", "what": {"reference": automation.trigger}}]
    if location:
        provenance["location"] = {"reference": location}
    reasons = purposes(context)
    if reasons:
        provenance["reason"] = reasons
    return provenance


async def care_location(db: AsyncDatabase[Doc], fhir_user: str, base_url: str,
                        session: AsyncClientSession | None = None) -> str | None:
    """The writer's care location: the one Location of their active PractitionerRole(s)."""
    found = set()
    for _, role in await active_roles(db, relative_reference(fhir_user, base_url), session):
        for location in role.get("location") or []:
            if isinstance(location, dict) and isinstance(location.get("reference"), str):
                found.add(relative_reference(location["reference"], base_url))
    # Several roles at several places: which one this change was made at is not known.
    return found.pop() if len(found) == 1 else None
