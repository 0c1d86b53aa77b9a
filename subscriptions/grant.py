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

A backend service (SMART Backend Services: a registered `client_credentials` client acting
for itself, `system/` scopes only) re-authenticates by itself every few minutes, so its
grant is its registration, not one 5-minute token (`grant: client`): held while the client
is registered, not disabled, may still use `client_credentials`, and its registered scopes
still allow every recorded scope. Disabling or deleting the client ends it within
`FHIR_AUTH_REVOCATION_REFRESH_SECONDS` (each process re-reads a registration that old), as
a revocation does. A `system/` token of a client that is not registered (`fhir-server token`)
keeps the token's grant. User and patient grants end with their token.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.clients import Client, ClientRegistry
from fhir_server.auth.revocation import RevocationList
from fhir_server.auth.scopes import narrow_scopes
from fhir_server.context import Principal

Doc = dict[str, Any]
LAPSED = ("the owner's authorization expired or was revoked: update the Subscription with a "
          "current token to renew it")


def grant_fields(principal: Principal) -> Doc:
    """The token facts that end a grant: its jti (revocation) and its expiry."""
    expires = datetime.fromtimestamp(principal.expires_at, UTC) if principal.expires_at is not None else None
    return {"token": principal.token_id, "expires": expires}


def acts_for_itself(principal: Principal | None) -> bool:
    """A backend service's token: a client, no user, no patient, `system/` scopes only."""
    return (principal is not None and principal.kind == "token" and bool(principal.client_id)
            and not principal.fhir_user and not principal.patient and bool(principal.scopes)
            and all(s.startswith("system/") for s in principal.scopes))


def _backend(client: Client | None, scopes: list[str]) -> bool:
    """Whether this registration still grants a backend service these scopes (as the token
    endpoint would: narrowed by the registered scopes when it has any)."""
    if client is None or "client_credentials" not in client.grant_types:
        return False
    return not client.scope or set(narrow_scopes(scopes, client.allowed_scopes)) == set(scopes)


class Registrations:
    """The clients' registrations as the grants see them: each re-read once older than
    `refresh_seconds` (0: on every look), so a disabled client's grant ends within that."""

    def __init__(self, db: AsyncDatabase[Doc], refresh_seconds: float) -> None:
        self.registry = ClientRegistry(db)
        self.refresh_seconds = refresh_seconds
        self._seen: dict[str, tuple[float, Client | None]] = {}

    async def get(self, client_id: str) -> Client | None:
        seen = self._seen.get(client_id)
        if seen is not None and time.monotonic() - seen[0] < self.refresh_seconds:
            return seen[1]
        client = await self.registry.get(client_id)  # None: not registered, or disabled
        self._seen[client_id] = (time.monotonic(), client)
        return client


async def registered_backend(db: AsyncDatabase[Doc], principal: Principal | None) -> bool:
    """Whether `principal` is a backend service whose registration grants its scopes now:
    then the Subscriptions it creates hold a grant from the registration (`grant: client`)."""
    if principal is None or not acts_for_itself(principal) or principal.client_id is None:
        return False
    return _backend(await ClientRegistry(db).get(principal.client_id), sorted(principal.scopes))


def _expiry(owner: Doc) -> datetime | None:
    expires = owner.get("expires")
    if not isinstance(expires, datetime):
        return None
    return expires if expires.tzinfo else expires.replace(tzinfo=UTC)  # stored as UTC


class Grants:
    def __init__(self, revocations: RevocationList, registrations: Registrations) -> None:
        self.revocations = revocations
        self.registrations = registrations

    async def lapsed(self, owners: dict[str, Doc | None]) -> set[str]:
        """The keys of `owners` (Subscription ids) whose owner holds no grant now."""
        out: set[str] = set()
        for sub, owner in owners.items():
            if owner is not None and owner.get("grant") == "client":
                if not await self._registered(owner):
                    out.add(sub)
            elif expired(owner) or await self._revoked(owner):
                out.add(sub)
        return out

    async def _registered(self, owner: Doc) -> bool:
        client = owner.get("client")
        scopes = owner.get("scopes")
        if not isinstance(client, str) or not isinstance(scopes, list) or not scopes:
            return False
        return _backend(await self.registrations.get(client), [str(s) for s in scopes])

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
    if owner.get("kind", "token") in ("system", "auth-disabled") or owner.get("grant") == "client":
        return False  # held always, or for as long as the registration (`Grants` reads it)
    expires = _expiry(owner)
    return expires is None or expires <= datetime.now(UTC)
