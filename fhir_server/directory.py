"""The directory facts the server's own rules need about a signed-in user.

These are the server's reads for its own decisions (Consent actor matching, the care
location of a Provenance), not data leaving the server, so they read the stored documents
directly rather than through the access-filtered read pipeline.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.storage import schema

Doc = dict[str, Any]


async def active_roles(
    db: AsyncDatabase[Doc], user: str, session: AsyncClientSession | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(id, resource) of the live, active PractitionerRoles of `user`, a relative reference to
    a Practitioner (their roles) or a PractitionerRole (itself); none for anyone else."""
    kind, _, rid = user.partition("/")
    if kind == "Practitioner":
        key: Doc = {schema.index_field("practitioner"): user}
    elif kind == "PractitionerRole":
        key = {"_id": rid}
    else:
        return []
    roles = []
    for doc in await db["PractitionerRole"].find(key, schema.RESOURCE_ONLY, session=session).to_list():
        role = schema.resource_of(doc)
        if role is not None and role.get("active") is not False:
            roles.append((str(doc["_id"]), role))
    return roles
