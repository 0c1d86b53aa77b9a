"""The closed-loop referral's vocabulary (Gravity SDOHCC / HL7 COW pattern, BSeR statuses).

A referral is a ServiceRequest plus a Task with `code` fulfill whose `focus` is that
ServiceRequest; the Task's `requester` asks, its `owner` performs. This module holds what the
rules (interceptors.referral_rules) and the workflow (workflows.referral) both need: which Task
is a referral, which side may set which status, which transitions the Task state machine
allows, and the BSeR `businessStatus` each status implies. Pure data and functions: no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

Doc = dict[str, Any]
Side = Literal["requester", "performer"]

TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
FULFILL = "fulfill"
BSER_SYSTEM = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
GRAVITY_TASK_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"
GRAVITY_SERVICEREQUEST_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Servicerequest"

# Gravity's rule of who may set which Task.status: the requester side asks, withdraws, or
# says it was a mistake; the performer side answers and does the work; either may cancel.
SETTERS: dict[str, frozenset[Side]] = {
    "draft": frozenset({"requester"}),
    "requested": frozenset({"requester"}),
    "entered-in-error": frozenset({"requester"}),
    "received": frozenset({"performer"}),
    "accepted": frozenset({"performer"}),
    "rejected": frozenset({"performer"}),
    "ready": frozenset({"performer"}),
    "in-progress": frozenset({"performer"}),
    "on-hold": frozenset({"performer"}),
    "failed": frozenset({"performer"}),
    "completed": frozenset({"performer"}),
    "cancelled": frozenset({"requester", "performer"}),
}

# The Task state machine (R4 task.html#statemachine): from each status, the statuses it may
# move to. A terminal status only to entered-in-error (the record was wrong).
_ANY_OPEN = ("cancelled", "entered-in-error")
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"requested", *_ANY_OPEN}),
    "requested": frozenset({"received", "accepted", "rejected", *_ANY_OPEN}),
    "received": frozenset({"accepted", "rejected", *_ANY_OPEN}),
    "accepted": frozenset({"ready", "in-progress", "on-hold", "completed", "failed", *_ANY_OPEN}),
    "ready": frozenset({"in-progress", "on-hold", "completed", "failed", *_ANY_OPEN}),
    "in-progress": frozenset({"on-hold", "completed", "failed", *_ANY_OPEN}),
    "on-hold": frozenset({"in-progress", "failed", *_ANY_OPEN}),
    "completed": frozenset({"entered-in-error"}),
    "rejected": frozenset({"entered-in-error"}),
    "failed": frozenset({"entered-in-error"}),
    "cancelled": frozenset({"entered-in-error"}),
    "entered-in-error": frozenset(),
}
INITIAL = frozenset({"draft", "requested"})
# Waiting on the performer: the SLA timers run while the Task is in one of these.
UNANSWERED = frozenset({"requested", "received"})

# BSeR's business status (TaskBusinessStatusCS) that a status implies, when the performer
# does not give a finer one of its own (e.g. 5.1.1 event scheduled while in progress).
BUSINESS_STATUS: dict[str, tuple[str, str]] = {
    "requested": ("2.0", "Service Request Created"),
    "accepted": ("3.0", "Service Request Accepted"),
    "rejected": ("4.0", "Service Request Declined"),
    "cancelled": ("6.0", "Service Request Fulfillment Cancelled"),
    "completed": ("7.0", "Service Request Fulfillment Completed"),
}
BSER_CODES: dict[str, str] = {
    "2.0": "Service Request Created",
    "3.0": "Service Request Accepted",
    "4.0": "Service Request Declined",
    "5.1.1": "Service Request Event Scheduled",
    "5.1.2": "Scheduled Service Request Event Unattended",
    "5.1.3": "Scheduled Service Request Event Cancelled",
    "5.1.4": "Service Request Event Completed",
    "5.2": "Service Request Cancellation Requested",
    "6.0": "Service Request Fulfillment Cancelled",
    "7.0": "Service Request Fulfillment Completed",
}
# What the ServiceRequest becomes when its referral Task ends (the loop closes).
SERVICE_REQUEST_FOLLOWS: dict[str, str] = {
    "completed": "completed",
    "cancelled": "revoked",
    "rejected": "revoked",
    "failed": "revoked",
    "entered-in-error": "entered-in-error",
}


def reference(value: Any, base_url: str = "") -> str | None:
    """`Type/id` of a Reference (absolute references on this server made relative)."""
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        return None
    ref: str = value["reference"]
    if base_url and ref.startswith(base_url.rstrip("/") + "/"):
        ref = ref[len(base_url.rstrip("/")) + 1:]
    parts = ref.split("/")
    if "://" in ref or len(parts) not in (2, 4):
        return None  # another server's, a contained or a logical one: not a party here
    return "/".join(parts[:2])


def is_referral(task: Doc | None, base_url: str = "") -> bool:
    """A Task that fulfils a ServiceRequest (code fulfill, focus a ServiceRequest)."""
    if not task or task.get("resourceType") != "Task":
        return False
    codings = (task.get("code") or {}).get("coding") or []
    fulfil = any(isinstance(c, dict) and c.get("system") == TASK_CODE_SYSTEM and c.get("code") == FULFILL
                 for c in codings)
    focus = (task.get("focus") or {}).get("reference") if isinstance(task.get("focus"), dict) else None
    # A urn:uuid focus inside a transaction Bundle is rewritten before the hooks run.
    return fulfil and isinstance(focus, str) and (reference(task.get("focus"), base_url) or "").startswith(
        "ServiceRequest/")


def business_status(status: str) -> Doc | None:
    found = BUSINESS_STATUS.get(status)
    if found is None:
        return None
    code, display = found
    return {"coding": [{"system": BSER_SYSTEM, "code": code, "display": display}], "text": display}


def bser_code(task: Doc) -> str | None:
    """The BSeR code of the Task's businessStatus, if it has one."""
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == BSER_SYSTEM:
            code = coding.get("code")
            return code if isinstance(code, str) else ""
    return None
