"""The authorizations the server holds for a thread's participants (`messaging_grants`).

When an alert's timer fires, no request is under way: the server must decide whether the
participant may see the message without a token in hand. It decides from an authorization it
really verified: the last token the participant acted in a thread with, per client (posting a
message or a header, setting their own render cursor, opening their inbox). Their client,
scopes, patient in context and expiry are recorded as that request's verified token carried
them, and the alert decision asks the one access decision as each recorded grant in turn. A
grant lapses when its token expires or is revoked, whichever comes first: no grant, or only
lapsed ones, no alert (fail closed). A `system/` client acting for someone is not the
person's grant and is never recorded as one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.revocation import COLLECTION as REVOKED
from fhir_server.context import Principal
from fhir_server.messaging.access import is_system_client
from fhir_server.messaging.store import GRANTS

Doc = dict[str, Any]
# The grants this process wrote lately (database, participant, client, token id): an inbox
# opened again with the same token writes nothing. Oldest forgotten first.
_RECORDED: dict[tuple[int, str | None, str | None, str | None], None] = {}
_REMEMBERED = 10_000


def personal(principal: Principal | None) -> bool:
    """A person's own token (not the server, dev mode or a `system/` client)."""
    return principal is not None and principal.kind == "token" and not is_system_client(principal)


async def record(db: AsyncDatabase[Doc], principal: Principal | None, participants: list[str],
                 session: AsyncClientSession | None = None) -> None:
    """Notes the caller's verified grant for each of their identities among `participants`."""
    if principal is None or not personal(principal):
        return
    # The person the token is for (its fhirUser; else the patient in context): a family
    # member's patient-context token is never recorded as the patient's own grant.
    person = principal.fhir_user or (f"Patient/{principal.patient}" if principal.patient else None)
    for who in {person} & set(participants):
        key = (id(db), who, principal.client_id, principal.token_id)
        if principal.token_id and key in _RECORDED:
            continue  # this process recorded this very token for them already
        await db[GRANTS].update_one(
            {"_id": f"{who}|{principal.client_id or ''}"},
            {"$set": {"participant": who, "client": principal.client_id, "user": principal.fhir_user,
                      "patient": principal.patient, "scopes": sorted(principal.scopes),
                      "issuer": principal.issuer, "token": principal.token_id,
                      "expires": _expiry(principal), "at": datetime.now(UTC)}},
            upsert=True, session=session)
        if principal.token_id and session is None:  # a transaction's write may yet roll back
            _RECORDED[key] = None
            while len(_RECORDED) > _REMEMBERED:
                _RECORDED.pop(next(iter(_RECORDED)))


def _expiry(principal: Principal) -> datetime | None:
    if principal.expires_at is None:
        return None
    return datetime.fromtimestamp(principal.expires_at, UTC)


async def held(db: AsyncDatabase[Doc], participant: str) -> list[Principal]:
    """The participant's recorded grants whose token has neither expired nor been revoked,
    newest first. A grant recorded without an expiry (before expiries were kept, or from a
    token without `exp`) counts as lapsed: the server cannot tell it still holds."""
    out: list[Principal] = []
    now = datetime.now(UTC)
    async for doc in db[GRANTS].find({"participant": participant}).sort("at", -1):
        expires = doc.get("expires")
        if not isinstance(expires, datetime):
            continue
        if (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= now:
            continue  # the token expired: the authorization it carried is over
        token = doc.get("token")
        if token and await db[REVOKED].find_one({"_id": token}, {"_id": 1}) is not None:
            continue
        out.append(Principal(client_id=doc.get("client"), fhir_user=doc.get("user"),
                             patient=doc.get("patient"), scopes=frozenset(doc.get("scopes") or ()),
                             issuer=doc.get("issuer"), token_id=token,
                             expires_at=int(expires.replace(tzinfo=UTC).timestamp())))
    return out
