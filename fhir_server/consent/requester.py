"""Who is asking, as Consent actors: the `fhirUser` and whatever it acts as.

A Practitioner acts as their PractitionerRoles and those roles' Organizations; a
PractitionerRole as its Practitioner and Organization; anyone as the active CareTeams that
list them (or one of those) as a current participant. Loaded only when some Consent names
an actor of those kinds, with one indexed query per kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.consent.model import period_of, relative_reference

Doc = dict[str, Any]
INDIRECT = ("PractitionerRole/", "Organization/", "CareTeam/")


def _ref(value: Any, base_url: str) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return relative_reference(value["reference"], base_url)
    return None


async def _roles(db: AsyncDatabase[Doc], fhir_user: str, base_url: str) -> set[str]:
    kind, _, rid = fhir_user.partition("/")
    if kind == "Practitioner":
        docs = await db["PractitionerRole"].find(
            {"sp.practitioner": fhir_user, "del": False}, {"res": 1}).to_list()
    elif kind == "PractitionerRole":
        docs = await db["PractitionerRole"].find({"_id": rid, "del": False}, {"res": 1}).to_list()
    else:
        return set()
    out: set[str] = set()
    for doc in docs:
        role = orjson.loads(doc["res"])
        if role.get("active") is False:
            continue
        out.add(f"PractitionerRole/{doc['_id']}")
        for key in ("practitioner", "organization"):
            if (ref := _ref(role.get(key), base_url)) is not None:
                out.add(ref)
    return out


async def _teams(db: AsyncDatabase[Doc], members: set[str], now: datetime, base_url: str) -> set[str]:
    docs = await db["CareTeam"].find(
        {"sp.participant": {"$in": sorted(members)}, "del": False}, {"res": 1}).to_list()
    out: set[str] = set()
    for doc in docs:
        team = orjson.loads(doc["res"])
        if team.get("status") not in (None, "active"):
            continue
        for participant in team.get("participant") or []:
            period = period_of(participant.get("period"))
            if _ref(participant.get("member"), base_url) in members and (
                    period is None or period.covers(now)):
                out.add(f"CareTeam/{doc['_id']}")
    return out


async def acting_as(db: AsyncDatabase[Doc], fhir_user: str, now: datetime, base_url: str,
                    named: set[str]) -> frozenset[str]:
    """`fhir_user` and, if the Consents' actors (`named`) need them, its roles and teams."""
    actors = {fhir_user}
    if not any(ref.startswith(INDIRECT) for ref in named):
        return frozenset(actors)
    actors |= await _roles(db, fhir_user, base_url)
    if any(ref.startswith("CareTeam/") for ref in named):
        actors |= await _teams(db, actors, now, base_url)
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
        doc = await db[rtype].find_one({"_id": rid, "del": False}, {"sp": 1})
        sp = (doc or {}).get("sp") or {}
        held: set[str] = set()
        for param in params:
            value = sp.get(param)
            held.update(v for v in (value if isinstance(value, list) else [value])
                        if isinstance(v, str) and "/" in v)
        out[ref] = frozenset(held)
    return out
