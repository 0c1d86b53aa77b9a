"""Who is asking, as Consent actors: the `fhirUser` and whatever it acts as.

A Practitioner acts as their PractitionerRoles and those roles' Organizations; a
PractitionerRole as its Practitioner and Organization; anyone as the active CareTeams that
list them (or one of those) as a current participant. Loaded only as far as the Consents'
actors need: the named CareTeams by id, the requester's roles when an Organization or a
PractitionerRole is in play.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.consent.model import period_of, relative_reference
from fhir_server.directory import active_roles

Doc = dict[str, Any]
INDIRECT = ("PractitionerRole/", "Organization/")


def _ref(value: Any, base_url: str) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return relative_reference(value["reference"], base_url)
    return None


async def _roles(db: AsyncDatabase[Doc], fhir_user: str, base_url: str) -> set[str]:
    out: set[str] = set()
    for rid, role in await active_roles(db, relative_reference(fhir_user, base_url)):
        out.add(f"PractitionerRole/{rid}")
        for key in ("practitioner", "organization"):
            if (ref := _ref(role.get(key), base_url)) is not None:
                out.add(ref)
    return out


def _members(team: Doc, now: datetime, base_url: str) -> set[str]:
    """Current participants of an active CareTeam."""
    if team.get("status") not in (None, "active"):
        return set()
    out = set()
    for participant in team.get("participant") or []:
        period = period_of(participant.get("period"))
        member = _ref(participant.get("member"), base_url)
        if member and (period is None or period.covers(now)):
            out.add(member)
    return out


async def acting_as(db: AsyncDatabase[Doc], fhir_user: str, now: datetime, base_url: str,
                    named: set[str]) -> frozenset[str]:
    """`fhir_user` and what it acts as, as far as the Consents' actors (`named`) need it: the
    CareTeams they name are read by id, the requester's roles only when a named actor or a
    named team's member is a PractitionerRole or an Organization."""
    actors = {fhir_user}
    team_ids = sorted(ref[len("CareTeam/"):] for ref in named if ref.startswith("CareTeam/"))
    teams: dict[str, set[str]] = {}
    if team_ids:
        async for doc in db["CareTeam"].find({"_id": {"$in": team_ids}}, {"res": 1}):
            if doc.get("res"):  # not deleted
                teams[doc["_id"]] = _members(orjson.loads(doc["res"]), now, base_url)
    wanted = named | {m for members in teams.values() for m in members}
    if any(ref.startswith(INDIRECT) for ref in wanted):
        actors |= await _roles(db, fhir_user, base_url)
    actors |= {f"CareTeam/{tid}" for tid, members in teams.items() if members & actors}
    return frozenset(actors)


async def held_references(db: AsyncDatabase[Doc], refs: set[str],
                          reference_params: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    """For data meaning `related`: the references each named resource holds."""
    out: dict[str, frozenset[str]] = {}
    for ref in refs:
        rtype, _, rid = ref.partition("/")
        params = reference_params.get(rtype)
        if not params:
            continue
        doc = await db[rtype].find_one({"_id": rid}, {"sp": 1})  # a deleted one has no `sp`
        sp = (doc or {}).get("sp") or {}
        held: set[str] = set()
        for param in params:
            value = sp.get(param)
            held.update(v for v in (value if isinstance(value, list) else [value])
                        if isinstance(v, str) and "/" in v)
        out[ref] = frozenset(held)
    return out
