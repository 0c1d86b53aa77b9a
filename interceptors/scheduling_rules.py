"""The scheduling rules on every write, whoever writes it (a client, a scheduling operation,
a workflow), before anything is written:

- an Appointment's status changes only along the FHIR state machine
  (fhir_server.operations.scheduling.statuses): a refused transition is 422 `business-rule`,
  naming the rule;
- Slots are taken and given back only by the scheduling operations (`$hold`, `$book`,
  `$reschedule`, `$cancel`, a hold's expiry), which change the Appointment and its Slots in
  one transaction. A plain REST write cannot know that nobody else holds a Slot, so it may
  not make an Appointment hold a Slot it did not hold (`Appointment.slot` gaining a Slot
  while the Appointment is pending, booked, arrived or checked-in), nor free a Slot that is
  `busy` or `busy-tentative`: either would let two Appointments hold one Slot. Both are 422
  `business-rule` naming the operation to use. The operations write the Slots as SYSTEM and
  the Appointment under a context marked by `taking_slots` (the server's own loads, as
  SYSTEM, are trusted as well)."""

from __future__ import annotations

from typing import Any

from fhir_server.context import SYSTEM, RequestContext
from fhir_server.errors import InvalidResource
from fhir_server.hooks import Pointcut, hook
from fhir_server.operations.scheduling.statuses import (
    BUSY,
    HOLDING,
    RULE_SLOT_BY_OPERATION,
    TAKING_SLOTS,
    TENTATIVE,
    refused_transition,
    slot_references,
)

Doc = dict[str, Any]

def _trusted(context: RequestContext) -> bool:
    return context.principal is SYSTEM or bool(context.attributes.get(TAKING_SLOTS))


def _slots(resource: Doc | None) -> set[str]:
    """The Slots an Appointment holds: every reference it names while in a holding status."""
    if resource is None or resource.get("status") not in HOLDING:
        return set()
    return set(slot_references(resource))


class SchedulingRules:
    @hook(Pointcut.BEFORE_CREATE)
    def before_create(self, context: RequestContext, resource: Doc) -> None:
        if resource.get("resourceType") == "Appointment":
            self._slots_held(context, resource, None)

    @hook(Pointcut.BEFORE_UPDATE)
    def before_update(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        kind = resource.get("resourceType")
        if kind == "Slot":
            self._slot_freed(context, resource, previous)
        if kind != "Appointment":
            return
        self._slots_held(context, resource, previous)
        if previous is None:
            return
        before, after = previous.get("status"), resource.get("status")
        reason = refused_transition(before if isinstance(before, str) else None,
                                    after if isinstance(after, str) else None)
        if reason is not None:
            raise InvalidResource(reason, code="business-rule", expression=("Appointment.status",))

    @staticmethod
    def _slots_held(context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        gained = sorted(_slots(resource) - _slots(previous))
        if gained and not _trusted(context):
            raise InvalidResource(
                f"{RULE_SLOT_BY_OPERATION}: a {resource.get('status')} Appointment takes its Slots "
                f"through $hold, $book or $reschedule, which check and take them in one transaction; "
                f"a plain write may not make it hold {', '.join(gained)}",
                code="business-rule", expression=("Appointment.slot",))

    @staticmethod
    def _slot_freed(context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        before = (previous or {}).get("status")
        if before in (BUSY, TENTATIVE) and resource.get("status") not in (BUSY, TENTATIVE) \
                and not _trusted(context):
            raise InvalidResource(
                f"{RULE_SLOT_BY_OPERATION}: a {before} Slot is given back by $cancel, $reschedule "
                f"or its hold's expiry, which free it only when no Appointment holds it",
                code="business-rule", expression=("Slot.status",))
