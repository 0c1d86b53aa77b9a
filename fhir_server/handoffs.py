"""What a hand-off is, and the directory facts both its rules and its workflow need.

A hand-off request is a Task with code `handoff` (profiles/CodeSystem-coordination-task-code)
whose `focus` is the Task being handed over, `requester` its current owner (or a coordinator of
its CareTeam) and `owner` the proposed new owner. The rules that guard it
(interceptors/handoff_rules.py) and the workflow that carries it out (workflows/handoff.py)
ask the same questions of the directory: who acts as a reference (a PractitionerRole is its
Practitioner; a CareTeam its members; an Organization the practitioners of its active roles),
which CareTeams a Task belongs to, who coordinates them, whether a PractitionerRole is
inactive. These are the server's reads for its own decisions, not data leaving the server, so
they read the stored documents directly (as fhir_server.directory does).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.storage import schema

Doc = dict[str, Any]

TASK_CODES = "http://fhir.care-coord.example/CodeSystem/coordination-task-code"
HANDOFF = "handoff"
ESCALATION = "handoff-escalation"
# A CareTeam participant whose role carries this code coordinates the team: SNOMED CT
# 768820003 "Care coordinator (occupation)".
COORDINATOR_ROLE = ("http://snomed.info/sct", "768820003")
# Who may be handed a Task (Task.owner's targets the hand-off accepts).
OWNER_TYPES = ("Practitioner", "PractitionerRole", "CareTeam", "Organization")
# A hand-off that is over: nothing changes it any more.
FINISHED = ("completed", "rejected", "failed", "cancelled", "entered-in-error")
OPEN = ("requested", "received")


def has_code(task: Doc | None, code: str) -> bool:
    concept = (task or {}).get("code")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return isinstance(codings, list) and any(
        isinstance(c, dict) and c.get("system") == TASK_CODES and c.get("code") == code for c in codings)


def is_handoff(task: Doc | None) -> bool:
    return isinstance(task, dict) and task.get("resourceType") == "Task" and has_code(task, HANDOFF)


# A relative literal reference `Type/id`, optionally versioned: what the hand-off's parties
# and focus must be (an absolute URL may name another server's resource: never taken as ours).
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")


def ref(value: Any) -> str | None:
    """The relative `Type/id` of a Reference (or of a reference string), else None."""
    text = value.get("reference") if isinstance(value, dict) else value
    match = _RELATIVE.match(text) if isinstance(text, str) else None
    return match.group(1) if match else None


async def read(db: AsyncDatabase[Doc], reference: str | None,
               session: AsyncClientSession | None = None) -> Doc | None:
    """The live resource `Type/id` names, parsed; None for a missing or deleted one."""
    if not reference or "/" not in reference:
        return None
    rtype, _, rid = reference.partition("/")
    doc = await db[rtype].find_one({"_id": rid}, schema.RESOURCE_ONLY, session=session)
    return schema.resource_of(doc)


def role_is_inactive(role: Doc, at: datetime | None = None) -> bool:
    """A PractitionerRole that is switched off (`active` false) or whose period has ended."""
    if role.get("active") is False:
        return True
    end = (role.get("period") or {}).get("end")
    if isinstance(end, str):
        try:
            ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError:
            return False
        if ended.tzinfo is None:
            ended = ended.replace(tzinfo=UTC)
        return ended < (at or datetime.now(UTC))
    return False


async def inactive_owner(db: AsyncDatabase[Doc], owner: str | None) -> bool:
    """Whether `owner` is a PractitionerRole that is inactive (or gone): it is handed nothing."""
    if not owner or not owner.startswith("PractitionerRole/"):
        return False
    role = await read(db, owner)
    return role is None or role_is_inactive(role)


async def acts_as(db: AsyncDatabase[Doc], user: str, reference: str | None,
                  session: AsyncClientSession | None = None, depth: int = 0) -> bool:
    """Whether the signed-in `user` (a Practitioner or PractitionerRole reference) acts as
    `reference`: is it, is its Practitioner, is an active member of its CareTeam, or holds an
    active role at its Organization."""
    if not reference:
        return False
    if user == reference:
        return True
    kind = reference.partition("/")[0]
    found = await read(db, reference, session)
    if found is None:
        return False
    if kind == "PractitionerRole":
        return not role_is_inactive(found) and ref(found.get("practitioner")) == user
    if kind == "CareTeam" and depth == 0:
        for participant in found.get("participant") or []:
            member = ref((participant or {}).get("member"))
            if member and await acts_as(db, user, member, session, depth + 1):
                return True
        return False
    if kind == "Organization" and user.startswith("Practitioner/"):
        roles = await db["PractitionerRole"].find(
            {schema.index_field("practitioner"): user, schema.index_field("organization"): reference},
            schema.RESOURCE_ONLY, session=session).to_list()
        return any((r := schema.resource_of(d)) is not None and not role_is_inactive(r) for d in roles)
    return False


async def care_teams(db: AsyncDatabase[Doc], task: Doc,
                     session: AsyncClientSession | None = None) -> list[Doc]:
    """The CareTeams a Task belongs to: its owner when that is a CareTeam, then the active
    CareTeams of its patient (`Task.for`), in id order."""
    teams: list[Doc] = []
    owner = ref(task.get("owner"))
    if owner and owner.startswith("CareTeam/"):
        team = await read(db, owner, session)
        if team is not None:
            teams.append(team)
    patient = ref(task.get("for"))
    if patient and patient.startswith("Patient/"):
        docs = await db["CareTeam"].find({schema.index_field("subject"): patient},
                                         schema.RESOURCE_ONLY, session=session).sort("_id", 1).to_list()
        for doc in docs:
            team = schema.resource_of(doc)
            if team is not None and team.get("status", "active") == "active" and \
                    all(t.get("id") != team.get("id") for t in teams):
                teams.append(team)
    return teams


def _has_coordinator_role(participant: Doc) -> bool:
    for concept in participant.get("role") or []:
        for coding in (concept or {}).get("coding") or []:
            if (coding.get("system"), coding.get("code")) == COORDINATOR_ROLE:
                return True
    return False


def coordinators(teams: list[Doc]) -> list[str]:
    """The members who coordinate these CareTeams, as references, in team order."""
    found: list[str] = []
    for team in teams:
        for participant in team.get("participant") or []:
            member = ref((participant or {}).get("member"))
            if member and _has_coordinator_role(participant) and member not in found:
                found.append(member)
    return found


def role_in(teams: list[Doc], *members: str | None) -> list[Doc]:
    """The CareTeam role (Task.performerType) of the first of `members` found in a team."""
    for member in members:
        for team in teams:
            for participant in team.get("participant") or []:
                if member and ref((participant or {}).get("member")) == member and participant.get("role"):
                    roles: list[Doc] = participant["role"]
                    return roles
    return []


async def organization_of(db: AsyncDatabase[Doc], teams: list[Doc], *parties: str | None) -> str | None:
    """The organization whose workflow definitions apply: the first CareTeam's managing
    organization, else the organization of the first party that names one."""
    for team in teams:
        for managing in team.get("managingOrganization") or []:
            if (organization := ref(managing)) is not None:
                return organization
    for party in parties:
        if party and party.startswith("Organization/"):
            return party
        if party and party.startswith("PractitionerRole/"):
            role = await read(db, party)
            if role is not None and (organization := ref(role.get("organization"))) is not None:
                return organization
    return None
