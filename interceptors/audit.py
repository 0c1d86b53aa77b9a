"""The audit trail at the hook points (order 900: last, after every decision).

- INCOMING_REQUEST (order 1, first): the request's context is noted, so that its outcome is
  recorded even when authentication refuses it.
- CAN_SEE: notes every resource that leaves and the patients whose data it is.
- IN_TRANSACTION: a change's AuditEvent is written in the change's own transaction.
- INTERACTION_COMPLETE (status known, response not sent yet): one AuditEvent for the request
  (reads, searches, failed writes, token issuance, Consent decisions), recorded durably and
  stored in batches (fhir_server.audit.writer).
- AuditEvents are append-only: update, patch and delete are refused for everyone; reading
  them takes a user/ or system/ scope for AuditEvent, or being the patient they are about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.access.decision import in_patient_compartment
from fhir_server.audit import completion
from fhir_server.audit.events import (
    Seen,
    change_event,
    consent_entities,
    interaction_event,
    records_change,
    token_event,
)
from fhir_server.audit.patients import PatientFinder
from fhir_server.audit.writer import AUDIT_EVENT, AuditWriter
from fhir_server.auth.scopes import parse_scopes
from fhir_server.consent import decisions, evaluated_consents
from fhir_server.consent.model import relative_reference
from fhir_server.context import RequestContext
from fhir_server.errors import MethodNotAllowed
from fhir_server.hooks import AccessQuery, Change, Pointcut, hook
from fhir_server.storage.documents import now
from fhir_server.storage.pipeline import SessionWriter
from fhir_server.storage.records import same_content

UNAUDITED = frozenset({"capabilities", "smart-configuration"})
WRITES = frozenset({"create", "update", "patch", "delete"})
_OBSERVED = "audit.observed"
_WRITTEN = "audit.written"


@dataclass
class Observed:
    seen: list[Seen] = field(default_factory=list)
    patients: dict[str, None] = field(default_factory=dict)  # an ordered set


def _reads_all_audit_events(scopes: frozenset[str]) -> bool:
    return any(s.context in ("user", "system") and s.covers_type(AUDIT_EVENT) and s.permissions & {"r", "s"}
               for s in parse_scopes(scopes))


class AuditInterceptor:
    def __init__(self, writer: AuditWriter, patients: PatientFinder, base_url: str) -> None:
        self.writer = writer
        self.patients = patients
        self.base_url = base_url

    @hook(Pointcut.INCOMING_REQUEST, slot="audit-track")
    def track(self, context: RequestContext) -> None:
        if context.interaction not in UNAUDITED:
            completion.track(context)

    @hook(Pointcut.FILTER_QUERY)
    def filter_query(self, context: RequestContext, resource_type: str, query: AccessQuery) -> None:
        principal = context.caller
        if resource_type != AUDIT_EVENT or principal is None or _reads_all_audit_events(principal.scopes):
            return
        user = relative_reference(principal.fhir_user or "", self.base_url)
        if user.startswith("Patient/"):
            query.add(in_patient_compartment(AUDIT_EVENT, user[len("Patient/"):]))
        else:
            query.add({"_id": {"$in": []}})

    @hook(Pointcut.CAN_SEE)
    def observe(self, context: RequestContext, resource: dict[str, Any]) -> bool:
        observed: Observed = context.attributes.setdefault(_OBSERVED, Observed())
        rtype = str(resource.get("resourceType"))
        version = str((resource.get("meta") or {}).get("versionId", ""))
        observed.seen.append((rtype, str(resource.get("id")), version))
        for patient in self.patients(rtype, resource):
            observed.patients[patient] = None
        return True

    @staticmethod
    def _refuse() -> None:
        raise MethodNotAllowed("AuditEvents are append-only: they cannot be updated or deleted")

    @hook(Pointcut.BEFORE_CREATE)
    def before_create(self, context: RequestContext, resource: dict[str, Any]) -> None:
        if resource.get("resourceType") == AUDIT_EVENT and context.interaction in ("update", "patch"):
            self._refuse()  # an update that would create: still an update

    @hook(Pointcut.BEFORE_UPDATE)
    def before_update(self, context: RequestContext, resource: dict[str, Any],
                      previous: dict[str, Any] | None) -> None:
        # An update that says nothing new is no change (it writes no version): a reload of
        # the same AuditEvent is not refused.
        if resource.get("resourceType") == AUDIT_EVENT and not (
                previous is not None and same_content(previous, resource)):
            self._refuse()

    @hook(Pointcut.BEFORE_DELETE)
    def before_delete(self, context: RequestContext, previous: dict[str, Any] | None) -> None:
        if previous is not None and previous.get("resourceType") == AUDIT_EVENT:
            self._refuse()

    @hook(Pointcut.IN_TRANSACTION)
    async def record_change(self, context: RequestContext, changes: list[Change], session: AsyncClientSession,
                            db: AsyncDatabase[dict[str, Any]], writer: SessionWriter) -> None:
        # Stored by the change's own commit (it commits or aborts with it); an AuditEvent has
        # no outbox event, as the batched ones from the audit writer have none.
        for change in changes:
            if records_change(context, change):
                resource = change.resource or change.previous or {}
                patients = self.patients(change.resource_type, resource)
                writer.create(AUDIT_EVENT, change_event(context, self.base_url, change, patients), hooks=False)
                context.attributes[_WRITTEN] = True

    @hook(Pointcut.INTERACTION_COMPLETE)
    async def complete(self, context: RequestContext, status: int) -> None:
        if context.interaction == "token":
            await self.writer.record(token_event(context, self.base_url, status, now()))
            return
        if context.interaction in WRITES and status < 400 and context.attributes.get(_WRITTEN):
            return  # recorded with the change itself
        observed: Observed = context.attributes.get(_OBSERVED) or Observed()
        decided = list(decisions(context).values())
        patients = dict(observed.patients)
        patients.update((d.patient, None) for d in decided)
        evaluated = evaluated_consents(context)
        permitted = [c for p in patients for c in evaluated.get(p, [])]
        event = interaction_event(context, self.base_url, status, now(), seen=observed.seen,
                                  patients=patients, consents=consent_entities(decided, permitted))
        await self.writer.record(event)


# `entity=Consent/<id>` ("every request a Consent decided", docs/consent.md) is the entity
# query the audit trail answers from an index. Indexing every entity would add an entry per
# resource and patient of every read; a partial index holds only the events that name some
# Consent, and a query for one Consent implies the filter, so both databases use it.
CONSENT_ENTITIES = {"sp.entity": {"$gte": "Consent/", "$lt": "Consent0"}}


def audit_indexes() -> dict[str, list[IndexModel]]:
    # "Who saw this patient's data last week": AuditEvent?patient=..&date=ge.. (a `ge` date
    # search compares the end of each value's range).
    keys = [("sp.patient", ASCENDING), ("sp.date.e", DESCENDING)]
    return {AUDIT_EVENT: [IndexModel(keys, name="audit_patient_date"),
                          IndexModel([("sp.entity", ASCENDING)], name="audit_entity_consent",
                                     partialFilterExpression=CONSENT_ENTITIES)]}
