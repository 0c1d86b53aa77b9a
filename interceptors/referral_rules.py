"""The closed-loop referral's rules on writes (Gravity SDOHCC), before the write commits.

A referral Task (code fulfill, focus a ServiceRequest: fhir_server.referral) may be changed
only by its two sides, each setting only its own statuses, along the Task state machine.
Each refusal is an OperationOutcome whose diagnostics start with the rule's name:

- `referral-party` (403): the caller is on neither side (nor names who it is: no fhirUser);
- `referral-side` (403): the status is the other side's to set (requester: draft, requested,
  entered-in-error; performer: received, accepted, rejected, in-progress, on-hold, failed,
  completed; either: cancelled); only the requester side creates or deletes a referral;
- `referral-transition` (422): the state machine does not allow the move (completed →
  in-progress), or a referral does not start as draft or requested;
- `referral-output` (422): completion needs `Task.output` (e.g. the consult note);
- `referral-fixed` (422): requester, focus, code and `for` are the referral's identity;
- `referral-business-status` (422): a BSeR `businessStatus` code that BSeR does not define.

When a status changes and the writer gave no `businessStatus` of its own, the implied BSeR
code is filled in (requested → 2.0 … completed → 7.0).

A caller is on a side when its `fhirUser`, one of its active PractitionerRoles, or such a
role's Organization is that side's reference, or that reference's PractitionerRole's
Organization. The server's own work (SYSTEM: loading, workflows) is not a party and is not
held to these rules; in dev mode (auth off) no one is identified, so only the state machine,
the output and the identity rules apply.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.context import RequestContext
from fhir_server.directory import active_roles
from fhir_server.errors import Forbidden, InvalidResource
from fhir_server.hooks import Pointcut, hook
from fhir_server.referral import (
    BSER_CODES,
    BUSINESS_STATUS,
    INITIAL,
    SETTERS,
    TRANSITIONS,
    Side,
    bser_code,
    business_status,
    is_referral,
    reference,
)
from fhir_server.storage import schema

Doc = dict[str, Any]
IMPLIED = frozenset(code for code, _ in BUSINESS_STATUS.values())
FIXED = ("requester", "focus", "code", "for")
_SIDE_NAMES: dict[Side, str] = {"requester": "requester side (Task.requester)",
                                "performer": "performer side (Task.owner)"}


def _forbidden(rule: str, message: str, where: str = "Task.status") -> Forbidden:
    return Forbidden(f"{rule}: {message}", code="forbidden", expression=(where,))


def _refused(rule: str, message: str, where: str = "Task.status") -> InvalidResource:
    return InvalidResource(f"{rule}: {message}", code="business-rule", expression=(where,))


class ReferralRules:
    def __init__(self, db: AsyncDatabase[Doc], base_url: str) -> None:
        self.db = db
        self.base_url = base_url

    # ------------------------------------------------------------------ who is asking

    async def _acting_as(self, user: str) -> set[str]:
        """The caller's fhirUser and what it acts as: its active roles and their Organizations."""
        acting = {user}
        for rid, role in await active_roles(self.db, user):
            acting.add(f"PractitionerRole/{rid}")
            for key in ("practitioner", "organization"):
                if (ref := reference(role.get(key), self.base_url)) is not None:
                    acting.add(ref)
        return acting

    async def _party(self, value: Any) -> set[str]:
        """A side's reference, and its Organization when it is a PractitionerRole (a colleague
        in the same organization acts for the role)."""
        ref = reference(value, self.base_url)
        if ref is None:
            return set()
        party = {ref}
        if ref.startswith("PractitionerRole/"):
            doc = await self.db["PractitionerRole"].find_one({"_id": ref.partition("/")[2]}, schema.RESOURCE_ONLY)
            role = schema.resource_of(doc)
            if role is not None and (org := reference(role.get("organization"), self.base_url)) is not None:
                party.add(org)
        return party

    async def _sides(self, context: RequestContext, task: Doc) -> set[Side] | None:
        """The sides the caller is on; None when no one is identified (dev mode)."""
        principal = context.principal
        if principal is None or principal.kind == "auth-disabled":
            return None
        if not principal.fhir_user:
            raise _forbidden("referral-party", "the token names no fhirUser, so the caller is on "
                             "neither side of the referral", "Task")
        acting = await self._acting_as(reference({"reference": principal.fhir_user}, self.base_url)
                                       or principal.fhir_user)
        sides: set[Side] = set()
        if acting & await self._party(task.get("requester")):
            sides.add("requester")
        if acting & await self._party(task.get("owner")):
            sides.add("performer")
        if not sides:
            raise _forbidden("referral-party", f"{principal.fhir_user} is on neither side of the "
                             "referral (Task.requester, Task.owner)", "Task")
        return sides

    @staticmethod
    def _may_set(sides: set[Side] | None, status: str) -> None:
        if sides is None:
            return
        allowed = SETTERS.get(status, frozenset())
        if not sides & allowed:
            who = " or ".join(_SIDE_NAMES[s] for s in sorted(allowed)) or "no one"
            raise _forbidden("referral-side", f"only the {who} may set status '{status}'; the "
                             f"caller is on the {' and '.join(_SIDE_NAMES[s] for s in sorted(sides))}")

    # ------------------------------------------------------------------ the hooks

    @staticmethod
    def _skip(context: RequestContext) -> bool:
        principal = context.principal
        return principal is not None and principal.is_server

    @hook(Pointcut.BEFORE_CREATE)
    async def before_create(self, context: RequestContext, resource: Doc) -> None:
        if self._skip(context) or not is_referral(resource, self.base_url):
            return
        status = str(resource.get("status"))
        sides = await self._sides(context, resource)
        if sides is not None and "requester" not in sides:
            raise _forbidden("referral-side", "only the requester side (Task.requester) creates a referral", "Task")
        if status not in INITIAL:
            raise _refused("referral-transition", f"a referral starts as draft or requested, not '{status}'")
        self._check_content(resource, None)

    @hook(Pointcut.BEFORE_UPDATE)
    async def before_update(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        if self._skip(context):
            return
        if previous is None or not is_referral(previous, self.base_url):
            if is_referral(resource, self.base_url):
                await self.before_create(context, resource)  # update-as-create, or becoming one
            return
        for key in FIXED:
            if not self._same(key, resource.get(key), previous.get(key)):
                raise _refused("referral-fixed", f"Task.{key} is part of the referral and does not "
                               "change; cancel it and make a new referral", f"Task.{key}")
        sides = await self._sides(context, previous)
        old, new = str(previous.get("status")), str(resource.get("status"))
        if new != old:
            self._may_set(sides, new)
            if new not in TRANSITIONS.get(old, frozenset()):
                allowed = ", ".join(sorted(TRANSITIONS.get(old, frozenset()))) or "none"
                raise _refused("referral-transition", f"the Task state machine does not allow "
                               f"{old} → {new} (from {old}: {allowed})")
        self._check_content(resource, previous)

    def _same(self, key: str, new: Any, old: Any) -> bool:
        """References compare by what they point at (a display added changes nothing)."""
        if new == old:
            return True
        if key == "code":
            return False
        here = reference(new, self.base_url), reference(old, self.base_url)
        return here[0] is not None and here[0] == here[1]

    @hook(Pointcut.BEFORE_DELETE)
    async def before_delete(self, context: RequestContext, previous: Doc | None) -> None:
        if self._skip(context) or not is_referral(previous, self.base_url):
            return
        assert previous is not None
        sides = await self._sides(context, previous)
        if sides is not None and "requester" not in sides:
            raise _forbidden("referral-side", "only the requester side (Task.requester) deletes a "
                             "referral; the performer rejects or cancels it", "Task")

    def _check_content(self, resource: Doc, previous: Doc | None) -> None:
        status = str(resource.get("status"))
        if status == "completed" and not resource.get("output"):
            raise _refused("referral-output", "a referral is completed with its result in Task.output "
                           "(e.g. the consult note as a DocumentReference)", "Task.output")
        code = bser_code(resource)
        if code is not None and code not in BSER_CODES:
            raise _refused("referral-business-status", f"'{code}' is not a code of BSeR's "
                           "TaskBusinessStatusCS", "Task.businessStatus")
        changed = previous is None or previous.get("status") != status
        # The writer's own business status is a finer BSeR code (5.1.1 event scheduled), not
        # one a status implies: a copy of an older version's 2.0 is replaced, not kept.
        own = code is not None and code not in IMPLIED and (
            resource.get("businessStatus") != (previous or {}).get("businessStatus"))
        if changed and not own and (implied := business_status(status)) is not None:
            resource["businessStatus"] = implied
