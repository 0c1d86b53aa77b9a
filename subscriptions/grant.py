"""The owner's grant: the authorization a Subscription's events are decided and released under.

A notification leaves while no request is under way, so the server decides with an
authorization it really verified: the token its owner created the Subscription with, or last
updated it with (the owner's own token: a `system/` administrator's update, or the server's
status writes, keep the owner's grant). It is recorded beside the Subscription
(`subscription_state.owner`: client, fhirUser, patient, scopes, purpose of use, the token's
jti and expiry), as messaging records its participants' grants.

The grant is held while its token would still be accepted: not past its `exp`, and its jti
not revoked (`auth_revoked`, read from the database, so a revocation in any process counts at
once). A token without an `exp` gives no grant (nothing would ever end it), nor does an owner
recorded before grants were (no expiry noted): fail closed. The server's own Subscriptions
(SYSTEM) and dev mode's (AUTH_DISABLED, refused once auth is on) hold theirs always.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.revocation import COLLECTION as REVOKED
from fhir_server.context import Principal

Doc = dict[str, Any]
LAPSED = ("the owner's authorization expired or was revoked: update the Subscription with a "
          "current token to renew it")


def grant_fields(principal: Principal) -> Doc:
    """The token facts that end a grant: its jti (revocation) and its expiry."""
    expires = datetime.fromtimestamp(principal.expires_at, UTC) if principal.expires_at is not None else None
    return {"token": principal.token_id, "expires": expires}


def _expiry(owner: Doc) -> datetime | None:
    expires = owner.get("expires")
    if not isinstance(expires, datetime):
        return None
    return expires if expires.tzinfo else expires.replace(tzinfo=UTC)  # stored as UTC


class Grants:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db

    async def lapsed(self, owners: dict[str, Doc | None]) -> set[str]:
        """The keys of `owners` (Subscription ids) whose owner holds no grant now."""
        out: set[str] = set()
        tokens: dict[str, list[str]] = {}
        for sub, owner in owners.items():
            if expired(owner):
                out.add(sub)
            elif owner and owner.get("kind", "token") == "token" and owner.get("token"):
                tokens.setdefault(str(owner["token"]), []).append(sub)
        if tokens:
            revoked = await self.db[REVOKED].find({"_id": {"$in": sorted(tokens)}}, {"_id": 1}).to_list()
            for doc in revoked:
                out.update(tokens[doc["_id"]])
        return out

    async def holds(self, owner: Doc | None) -> bool:
        return not await self.lapsed({"": owner})


def expired(owner: Doc | None) -> bool:
    """The grant's expiry passed (no database read: revocation is not looked at)."""
    if owner is None:
        return True
    if owner.get("kind", "token") in ("system", "auth-disabled"):
        return False
    expires = _expiry(owner)
    return expires is None or expires <= datetime.now(UTC)
