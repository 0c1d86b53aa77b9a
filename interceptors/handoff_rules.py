"""The hand-off rules (order "handoff-rules", after the access decision): who may request,
answer or cancel a hand-off, and which transitions its state machine allows.

A hand-off is a Task with code `handoff` (fhir_server.handoffs). Each refusal is an
OperationOutcome naming its rule (`handoff-…`):

- handoff-requester (403): only the focus Task's current owner, or a coordinator of its
  CareTeam, may request a hand-off of it; `requester` names one of them (422).
- handoff-answer (403): only the proposed owner answers (received, accepted, rejected).
- handoff-cancel (403): only the requester's side cancels (or deletes an open hand-off).
- handoff-party (403): only the parties edit an open hand-off's notes.
- handoff-engine (403): completed and failed are the engine's to set (the transfer, the
  escalation), never a client's.
- handoff-transition (409): a transition the state machine does not allow, e.g. from a
  finished hand-off (completed, rejected, failed, cancelled).
- handoff-reject-reason (422): a rejection says why (`statusReason`).
- handoff-shape (422): focus a live Task, owner a Practitioner, PractitionerRole, CareTeam or
  Organization; focus, requester, owner and patient never change once requested.

Who the caller is comes from the token's `fhirUser` (a Practitioner or PractitionerRole). The
server's own work (the engine, SYSTEM) is held to the state machine but not to the parties;
in dev mode (auth off) no one is signed in, so only the state machine and shape apply. A
token without a `fhirUser` is no party: refused.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server import handoffs
from fhir_server.consent.model import relative_reference
from fhir_server.context import RequestContext
from fhir_server.errors import Conflict, FhirError, Forbidden, InvalidResource
from fhir_server.hooks import Pointcut, hook

Doc = dict[str, Any]

# status -> the statuses a hand-off may move to, and who moves it there.
REQUESTER, OWNER, ENGINE = "requester", "owner", "engine"
TRANSITIONS: dict[str, dict[str, str]] = {
    "draft": {"requested": REQUESTER, "cancelled": REQUESTER},
    "requested": {"received": OWNER, "accepted": OWNER, "rejected": OWNER, "cancelled": REQUESTER,
                  "failed": ENGINE},
    "received": {"accepted": OWNER, "rejected": OWNER, "cancelled": REQUESTER, "failed": ENGINE},
    "accepted": {"completed": ENGINE, "failed": ENGINE},
}
_RULE_OF_SIDE = {REQUESTER: "handoff-cancel", OWNER: "handoff-answer", ENGINE: "handoff-engine"}
_FIXED = ("focus", "requester", "owner", "for")


def _refuse(error: type[FhirError], rule: str, text: str, *where: str) -> FhirError:
    return error(f"{rule}: {text}", code="business-rule" if error is not Forbidden else "forbidden",
                 expression=tuple(f"Task.{w}" for w in where))


class HandoffRules:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db

    def _user(self, context: RequestContext) -> str | None:
        """The signed-in party, `Type/id`; "" for no party to check (the server, dev mode)."""
        principal = context.principal
        if principal is None or principal.kind != "token":
            return ""
        return relative_reference(principal.fhir_user, context.base_url) if principal.fhir_user else None

    async def _may_act(self, user: str | None, *parties: str | None) -> bool:
        if user == "":
            return True
        return user is not None and any([await handoffs.acts_as(self.db, user, p) for p in parties if p])

    async def _requesters(self, focus: Doc) -> list[str]:
        """Who may request a hand-off of `focus`: its owner and its CareTeams' coordinators."""
        owner = handoffs.ref(focus.get("owner"))
        teams = await handoffs.care_teams(self.db, focus)
        return [*([owner] if owner else []), *handoffs.coordinators(teams)]

    async def _requester_side(self, task: Doc) -> list[str | None]:
        """The requester and the coordinators of the focus Task's CareTeams."""
        focus = await handoffs.read(self.db, handoffs.ref(task.get("focus")))
        teams = await handoffs.care_teams(self.db, focus) if focus else []
        return [handoffs.ref(task.get("requester")), *handoffs.coordinators(teams)]

    @hook(Pointcut.BEFORE_DELETE)
    async def before_delete(self, context: RequestContext, previous: Doc | None) -> None:
        """An open hand-off is withdrawn by the requester's side (it would rather cancel it)."""
        if not handoffs.is_handoff(previous) or (previous or {}).get("status") in handoffs.FINISHED:
            return
        assert previous is not None
        if not await self._may_act(self._user(context), *await self._requester_side(previous)):
            raise _refuse(Forbidden, "handoff-cancel", "only the requester or a coordinator of the CareTeam "
                          "may withdraw an open hand-off")

    @hook(Pointcut.BEFORE_CREATE)
    async def before_create(self, context: RequestContext, resource: Doc) -> None:
        if handoffs.is_handoff(resource):
            await self._requested(context, resource)

    @hook(Pointcut.BEFORE_UPDATE)
    async def before_update(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        was, now = handoffs.is_handoff(previous), handoffs.is_handoff(resource)
        if previous is None or not was:
            if now:  # update-as-create, or a Task turned into a hand-off: a new request
                await self._requested(context, resource)
            return
        if not now:
            raise _refuse(InvalidResource, "handoff-shape", "a hand-off stays a hand-off (code handoff)", "code")
        await self._changed(context, resource, previous)

    async def _requested(self, context: RequestContext, task: Doc) -> None:
        status = task.get("status")
        if status not in ("draft", "requested"):
            raise _refuse(Conflict, "handoff-transition",
                          f"a hand-off starts as requested (or draft), not {status}", "status")
        focus_ref = handoffs.ref(task.get("focus"))
        focus = await handoffs.read(self.db, focus_ref) if focus_ref and focus_ref.startswith("Task/") else None
        if focus is None:
            raise _refuse(InvalidResource, "handoff-shape", "focus must be the Task handed over, a live Task", "focus")
        if handoffs.is_handoff(focus):
            raise _refuse(InvalidResource, "handoff-shape", "a hand-off cannot be handed over", "focus")
        owner = handoffs.ref(task.get("owner"))
        if owner is None or owner.partition("/")[0] not in handoffs.OWNER_TYPES:
            raise _refuse(InvalidResource, "handoff-shape", "owner (the proposed new owner) must be a "
                          "Practitioner, PractitionerRole, CareTeam or Organization", "owner")
        if owner == handoffs.ref(focus.get("owner")):
            raise _refuse(InvalidResource, "handoff-shape", "owner already owns the focus Task", "owner")
        allowed = await self._requesters(focus)
        if not await self._may_act(self._user(context), *allowed):
            raise _refuse(Forbidden, "handoff-requester", "only the focus Task's current owner or a "
                          "coordinator of its CareTeam may request its hand-off")
        if handoffs.ref(task.get("requester")) not in allowed:
            raise _refuse(InvalidResource, "handoff-requester", "requester must be the focus Task's current "
                          "owner or a coordinator of its CareTeam", "requester")
        if task.get("for") is not None and handoffs.ref(task.get("for")) != handoffs.ref(focus.get("for")):
            raise _refuse(InvalidResource, "handoff-shape", "for must be the focus Task's patient", "for")

    async def _changed(self, context: RequestContext, task: Doc, previous: Doc) -> None:
        for name in _FIXED:
            if handoffs.ref(task.get(name)) != handoffs.ref(previous.get(name)):
                raise _refuse(InvalidResource, "handoff-shape", f"{name} does not change once requested", name)
        old, new = previous.get("status"), task.get("status")
        if old == new:
            if context.principal is not None and context.principal.is_server:
                return
            if old in handoffs.FINISHED:
                raise _refuse(Conflict, "handoff-transition", f"the hand-off is {old}: it no longer changes")
            # Notes of an open hand-off: edited by its parties only.
            parties = [handoffs.ref(task.get("owner")), *await self._requester_side(task)]
            if not await self._may_act(self._user(context), *parties):
                raise _refuse(Forbidden, "handoff-party", "only the requester, a coordinator or the proposed "
                              "owner may change an open hand-off")
            return
        side = TRANSITIONS.get(str(old), {}).get(str(new))
        if side is None:
            raise _refuse(Conflict, "handoff-transition", f"a hand-off does not go from {old} to {new}", "status")
        if new == "rejected" and not task.get("statusReason"):
            raise _refuse(InvalidResource, "handoff-reject-reason", "a rejection says why (statusReason)",
                          "statusReason")
        user = self._user(context)
        if side == ENGINE:
            if context.principal is None or not context.principal.is_server:
                raise _refuse(Forbidden, "handoff-engine", f"{new} is set by the coordination engine, "
                              "not by a client", "status")
            return
        parties = [handoffs.ref(task.get("owner"))] if side == OWNER else await self._requester_side(task)
        if not await self._may_act(user, *parties):
            who = "the proposed owner" if side == OWNER else "the requester or a coordinator of the CareTeam"
            raise _refuse(Forbidden, _RULE_OF_SIDE[side], f"only {who} may set {new}", "status")
