"""Which of the Subscriptions an event matched may count it: those whose owner may see it.

An event about a resource its owner may not read is not an event for that Subscription: it
gets no number, so neither a notification (of any payload content, `empty` included) nor
`$status`'s `events-since-subscription-start` nor `$events` tells the owner that something
changed. The matcher asks this before numbering, with the one access decision: the event's
version (the removed one for a delete) is read through the read pipeline as a read by the
owner under its recorded grant (`subscriptions.grant`), so SMART scopes, the patient
compartment of a `patient/` token and Consent decide, exactly as for a read by the owner.
No owner, or a lapsed grant: the Subscription counts nothing (fail closed). R4 criteria with
chains or `_has` are asked of the database again as a search by the owner: a chained
resource the owner may not read matches nothing, as in the owner's own searches (else the
owner would learn, say, the name of a patient whose Tasks it may read).

Delivery reads each numbered event again as the owner (`subscriptions.notify`): what the
owner may no longer read when it is sent goes without focus or content.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.hooks import HookRegistry, Pointcut
from fhir_server.storage.repository import Repository
from subscriptions.active import ActiveSubscriptions
from subscriptions.grant import Grants
from subscriptions.owner import owner_context
from subscriptions.store import STATE

Doc = dict[str, Any]
Matched = list[tuple[Doc, list[str]]]


def unrestricted(owner: Doc | None, hooks: HookRegistry) -> bool:
    """An owner that may see every event, so that no read is needed: the server itself, or
    anyone while nothing decides per resource (auth off)."""
    kind = (owner or {}).get("kind")
    return kind == "system" or (kind == "auth-disabled" and not hooks.has(Pointcut.CAN_SEE))


class Audience:
    def __init__(self, repository: Repository, grants: Grants, active: ActiveSubscriptions,
                 base_url: str) -> None:
        self.repository = repository
        self.grants = grants
        self.active = active
        self.base_url = base_url
        # The owners of the Subscriptions matched lately. An owner changes only in its
        # Subscription's own write, whose event the matcher sees (in commit order) before
        # any later one: it forgets that entry then (`forget`), and all on (re)start.
        self._owners: dict[str, Doc | None] = {}
        self.decided = 0  # reads as an owner (for diagnosis and benchmarks)

    def forget(self, sub: str | None = None) -> None:
        """The owner of `sub` (None: of every Subscription) is to be read again."""
        if sub is None:
            self._owners.clear()
        else:
            self._owners.pop(sub, None)

    async def admit(self, matched: Matched) -> Matched:
        """`matched` with each event's Subscriptions narrowed to those whose owner may see it."""
        subs = sorted({sub for _, found in matched for sub in found})
        if not subs:
            return matched
        missing = [sub for sub in subs if sub not in self._owners]
        if missing:
            self._owners.update(dict.fromkeys(missing))
            async for doc in self.repository.database.db[STATE].find({"_id": {"$in": missing}}, {"owner": 1}):
                self._owners[doc["_id"]] = doc.get("owner")
        owners = {sub: self._owners[sub] for sub in subs}
        lapsed = await self.grants.lapsed(owners)
        seen: dict[tuple[Any, ...], bool] = {}  # one read per (grant, version) in the batch
        out: Matched = []
        for event, found in matched:
            kept = []
            for sub in found:
                owner = owners[sub]
                if sub in lapsed or owner is None:
                    continue
                key = (owner.get("key"), owner.get("patient"), tuple(owner.get("scopes") or ()),
                       tuple(owner.get("purpose") or ()), owner.get("kind"), event["_id"])
                if key not in seen:
                    seen[key] = await self.may_see(event, owner)
                if seen[key] and await self._joins_hold(sub, event, owner):
                    kept.append(sub)
            out.append((event, kept))
        return out

    async def _joins_hold(self, sub: str, event: Doc, owner: Doc) -> bool:
        """An R4 criteria's chains / `_has` hold for the owner's search too (matched as the
        server first); true for everything else."""
        entry = self.active.entries.get(sub)
        spec = entry.spec if entry is not None else None
        if spec is None or spec.query is None or not spec.query.joins or unrestricted(owner, self.repository.hooks):
            return True
        reader = owner_context(self.base_url, owner, spec.resource_type, str(event["r"]))
        if reader is None:
            return False
        search = dataclasses.replace(reader, interaction="search-type", resource_id=None)
        try:
            return bool(await self.repository.find_matches(
                search, spec.resource_type, [*spec.params, ("_id", str(event["r"]))], limit=1))
        except FhirError:
            return False

    async def may_see(self, event: Doc, owner: Doc) -> bool:
        if unrestricted(owner, self.repository.hooks):
            return True
        rtype, rid = str(event["t"]), str(event["r"])
        version = int(event["v"]) - 1 if event["i"] == "delete" else int(event["v"])
        reader = owner_context(self.base_url, owner, rtype, rid)
        if reader is None or version < 1:
            return False
        self.decided += 1
        try:
            await self.repository.vread(reader, rtype, rid, version)
        except FhirError:
            return False
        return True
