"""The workflows the server ships, registered by default beside a deployment's own
(`FHIR_WORKFLOW_MODULES`); `FHIR_WORKFLOW_BUILTIN=0` leaves them out.

Each entry is "package.module:factory", like a deployment's (workflows.engine.load_workflows).
One line per workflow, in no particular order: each has its own Subscription and timers.
"""

from __future__ import annotations

BUILTIN: tuple[str, ...] = (
    "workflows.referral:referral",
    "workflows.handoff:handoff",
    "workflows.caregaps:care_gaps",
    "workflows.scheduling:scheduling",
    "workflows.visit:visit",
    "workflows.virtual_visit:workflow",
    "workflows.messaging:workflows",
)
