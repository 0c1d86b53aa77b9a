"""The scheduling rules on every write: an Appointment's status changes only along the FHIR
state machine (fhir_server.operations.scheduling.statuses). A refused transition is 422
`business-rule`, naming the rule, before anything is written, whoever writes it (a client,
a scheduling operation, a workflow): the operations and workflows pass the same gate."""

from __future__ import annotations

from typing import Any

from fhir_server.context import RequestContext
from fhir_server.errors import InvalidResource
from fhir_server.hooks import Pointcut, hook
from fhir_server.operations.scheduling.statuses import refused_transition

Doc = dict[str, Any]


class SchedulingRules:
    @hook(Pointcut.BEFORE_UPDATE)
    def before_update(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        if resource.get("resourceType") != "Appointment" or previous is None:
            return
        before, after = previous.get("status"), resource.get("status")
        reason = refused_transition(before if isinstance(before, str) else None,
                                    after if isinstance(after, str) else None)
        if reason is not None:
            raise InvalidResource(reason, code="business-rule", expression=("Appointment.status",))
