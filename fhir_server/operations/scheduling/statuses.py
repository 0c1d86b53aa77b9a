"""The Appointment state machine (R4 Appointment.status, appointment.html "Appointment
Statuses") and the Slot statuses the scheduling operations use. Pure functions.

A refused transition is answered 422 naming the rule (`appointment-status-transition` or
`appointment-status-final`), whoever writes: a REST client, an operation or a workflow.
Creating an Appointment in any status is allowed (a record of a visit booked elsewhere).
"""

from __future__ import annotations

from typing import Any

# From each status, the statuses that may follow it (besides itself). entered-in-error may
# follow any status: a record made by mistake is withdrawn whatever state it reached.
TRANSITIONS: dict[str, frozenset[str]] = {
    "proposed": frozenset({"pending", "booked", "waitlist", "cancelled"}),
    "pending": frozenset({"booked", "waitlist", "cancelled"}),
    "waitlist": frozenset({"pending", "booked", "cancelled"}),
    "booked": frozenset({"arrived", "checked-in", "fulfilled", "cancelled", "noshow"}),
    "arrived": frozenset({"checked-in", "fulfilled"}),
    "checked-in": frozenset({"arrived", "fulfilled"}),
    # Final: the visit happened, was called off, or was missed.
    "fulfilled": frozenset(),
    "cancelled": frozenset(),
    "noshow": frozenset(),
    "entered-in-error": frozenset(),
}
FINAL = frozenset(s for s, nexts in TRANSITIONS.items() if not nexts)
# Statuses in which an Appointment holds its Slots (they are not free for anyone else).
HOLDING = frozenset({"pending", "booked", "arrived", "checked-in"})

RULE_TRANSITION = "appointment-status-transition"
RULE_FINAL = "appointment-status-final"
# Slots are taken and freed only by the scheduling operations (interceptors.scheduling_rules).
RULE_SLOT_BY_OPERATION = "slot-taken-by-operation"
# The attribute the scheduling operations set on the caller's context while they plan: the
# Appointment it writes takes its Slots in the same unit.
TAKING_SLOTS = "scheduling.taking-slots"

# Slot.status codes (R4 SlotStatus).
FREE = "free"
BUSY = "busy"
TENTATIVE = "busy-tentative"


def refused_transition(before: str | None, after: str | None) -> str | None:
    """Why `before` → `after` is refused (the rule's name and the reason), or None."""
    if before is None or after is None or before == after or after == "entered-in-error":
        return None
    if before not in TRANSITIONS or after not in TRANSITIONS:
        return None  # not a status code at all: validation answers that
    if before in FINAL:
        return (f"{RULE_FINAL}: a {before} Appointment is final; only entered-in-error may "
                f"follow it, not {after}")
    if after not in TRANSITIONS[before]:
        allowed = ", ".join(sorted(TRANSITIONS[before] | {"entered-in-error"}))
        return (f"{RULE_TRANSITION}: {before} → {after} is not a transition of the Appointment "
                f"state machine (from {before}: {allowed})")
    return None


def slot_references(appointment: dict[str, Any] | None) -> list[str]:
    """The `reference` of each `Appointment.slot` entry, in order, once each; entries that are
    no reference are skipped. Lenient on purpose: it reads whatever was stored (the rules on
    every write count any reference as a Slot held; the workflow gives back what it can). The
    operations then check what they take strictly (booking.slot_ids)."""
    named = (appointment or {}).get("slot")
    out: list[str] = []
    for entry in named if isinstance(named, list) else []:
        reference = entry.get("reference") if isinstance(entry, dict) else None
        if isinstance(reference, str) and reference and reference not in out:
            out.append(reference)
    return out


def local_slot_id(reference: str) -> str | None:
    """The id of a `Slot/<id>` reference, else None."""
    rest = reference.removeprefix("Slot/")
    return rest if rest != reference and rest and "/" not in rest else None
