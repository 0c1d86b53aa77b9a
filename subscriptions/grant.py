"""The owner's grant: the authorization a Subscription's events are decided and released under.

A notification leaves while no request is under way, so the server decides with an
authorization it really verified: the token its owner created the Subscription with, or last
updated it with (the owner's own token: a `system/` administrator's update, or the server's
status writes, keep the owner's grant). It is recorded beside the Subscription
(`subscription_state.owner`: client, fhirUser, patient, scopes, purpose of use, the token's
jti and expiry), as messaging records its participants' grants.

The grant is held while its token would still be accepted: not past its `exp`, and its jti
not revoked: the same revocation list the API's token check asks (`auth.revocation`, in
memory), so a revocation counts at once in the process that received it and within
`FHIR_AUTH_REVOCATION_REFRESH_SECONDS` in every other, as for the token itself. A token
without an `exp` gives no grant (nothing would ever end it), nor does an owner recorded
before grants were (no expiry noted): fail closed. The server's own Subscriptions (SYSTEM)
and dev mode's (AUTH_DISABLED, refused once auth is on) hold theirs always.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.auth.revocation import RevocationList
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
    def __init__(self, revocations: RevocationList) -> None:
        self.revocations = revocations

    async def lapsed(self, owners: dict[str, Doc | None]) -> set[str]:
        """The keys of `owners` (Subscription ids) whose owner holds no grant now."""
        out: set[str] = set()
        for sub, owner in owners.items():
            if expired(owner) or await self._revoked(owner):
                out.add(sub)
        return out

    async def _revoked(self, owner: Doc | None) -> bool:
        token = (owner or {}).get("token")
        return bool(token) and (owner or {}).get("kind", "token") == "token" \
            and await self.revocations.is_revoked(str(token))

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
