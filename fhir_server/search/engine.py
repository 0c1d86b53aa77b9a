"""The search engine's entry points (see package docstring)."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

from fhir_server.config import Settings
from fhir_server.resource_types import STORED_TYPES
from fhir_server.search import registry as registry_module
from fhir_server.search.clauses import ClauseBuilder
from fhir_server.search.extract import Extractor
from fhir_server.search.memo import MEMOIZED, MemoExtractor
from fhir_server.search.parser import SPECIAL, Parser
from fhir_server.search.query import SearchQuery
from fhir_server.search.registry import SearchParam

Doc = dict[str, Any]
Key = list[tuple[str, int]]

# Indexes for the worklists coordinators and apps run all day, besides identifier and the
# patient compartment, which every type gets. Compound keys put the reference first (the
# most selective field) and the sort key last. Not every parameter is indexed: each index
# costs every write, and the rest are searched by scanning the (smaller) candidate set.
WORKLIST_INDEXES: dict[str, list[Key]] = {
    "Task": [[("sp.owner", ASCENDING), ("sp.status", ASCENDING), ("ts", DESCENDING)],
             # The broad worklist `Task?status=x`, newest first, sought window by window.
             [("sp.status", ASCENDING), ("ts", DESCENDING)],
             [("sp.patient", ASCENDING)], [("sp.focus", ASCENDING)],
             [("sp.requester", ASCENDING)], [("sp.based-on", ASCENDING)]],
    "Appointment": [[("sp.actor", ASCENDING), ("sp.date.s", ASCENDING)],
                    [("sp.patient", ASCENDING)]],
    "CarePlan": [[("sp.patient", ASCENDING), ("sp.status", ASCENDING)],
                 [("sp.care-team", ASCENDING)]],
    "CareTeam": [[("sp.patient", ASCENDING)], [("sp.participant", ASCENDING)]],
    "Communication": [[("sp.recipient", ASCENDING), ("sp.sent.s", DESCENDING),
                       ("_id", DESCENDING)],
                      # A patient's (or her portal's) messages, newest first: sought under a
                      # `patient/` scope (search.seek).
                      [("compartments.Patient", ASCENDING), ("sp.sent.s", DESCENDING)],
                      [("sp.patient", ASCENDING)], [("sp.sender", ASCENDING)]],
    "DocumentReference": [[("sp.patient", ASCENDING)]],
    # `family` ends with `ts`: `Patient?_sort=family` is then sought (search.valueseek).
    "Patient": [[("sp.family", ASCENDING), ("ts", DESCENDING)], [("sp.name", ASCENDING)],
                [("sp.birthdate.s", ASCENDING)]],
    "Practitioner": [[("sp.name", ASCENDING)], [("sp.family", ASCENDING)]],
    "PractitionerRole": [[("sp.practitioner", ASCENDING)]],
    "Consent": [[("sp.patient", ASCENDING)]],
    "Provenance": [[("sp.target", ASCENDING)]],
    # AuditEvent: only what the audit queries of docs/consent.md need (an AuditEvent is
    # written per request): `patient` + `date` and `entity=Consent/..` (a partial index) are
    # interceptors/audit.py's; identifier is not indexed.
    # Appointment/$find reads free Slots window by window on `start` (operations.scheduling.
    # find): per Schedule when it asks for a few, across all Schedules when for many.
    "Slot": [[("sp.schedule", ASCENDING), ("sp.status", ASCENDING), ("sp.start.s", ASCENDING)],
             [("sp.status", ASCENDING), ("sp.start.s", ASCENDING)]],
}
# Types whose Patient compartment is exactly one reference parameter, judged by that
# parameter's own values (access.decision.in_patient_compartment): the same documents, as the
# compartment ids are those values' ids, and the type keeps no compartment index. AuditEvent:
# one is written per request, and its `patient` index (interceptors/audit.py
# audit_patient_date) already answers "this patient's".
BY_PARAMETER = {"AuditEvent": "patient"}
# Single-field indexes on references most resources of the type do not have (a Task's focus,
# requester, basedOn): sparse, so that a resource without the field writes no entry for it.
# A search for values still uses them (both databases); only `:missing=true` (a null
# equality) cannot, and scans as it would without an index.
SPARSE: dict[str, frozenset[str]] = {"Task": frozenset({"sp.focus", "sp.requester", "sp.based-on"})}
# Types whose identifier is searched rarely enough not to be worth an index on every write.
UNINDEXED_IDENTIFIER = frozenset({"AuditEvent"})


def _index_name(keys: Key) -> str:
    return "s_" + "_".join(f"{k.replace('.', '_')}{'' if d > 0 else '_d'}" for k, d in keys)


class SearchEngine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = registry_module.load(settings.profiles_dir)
        self.extractor = Extractor(settings.base_url)
        self.clauses = ClauseBuilder(self.registry, self.extractor)
        self.parser = Parser(settings, self.registry, self.clauses)
        self._params = {t: list(self.registry.for_type(t).values()) for t in STORED_TYPES}
        for rtype, code in BY_PARAMETER.items():
            # Judging the compartment by the parameter is right only while they are the same.
            if self.registry.compartments.get("Patient", {}).get(rtype) != [code]:
                raise RuntimeError(f"{rtype}'s Patient compartment is no longer just `{code}`")
        # The types written at every request extract through a memo (memo.py).
        self._memo = {t: MemoExtractor(self.extractor, self._params[t]) for t in MEMOIZED if t in self._params}

    # ------------------------------------------------------------------ registry

    def param(self, resource_type: str, code: str) -> SearchParam | None:
        return self.parser.param(resource_type, code)

    def reference_params(self, resource_type: str) -> list[SearchParam]:
        return [p for p in self._params.get(resource_type, []) if p.type == "reference"]

    def capability_params(self) -> dict[str, list[dict[str, Any]]]:
        """Per type, the CapabilityStatement.rest.resource.searchParam entries."""
        out: dict[str, list[dict[str, Any]]] = {}
        for rtype in STORED_TYPES:
            # The registry also holds Resource-id and Resource-lastUpdated: list each name once.
            params = [*SPECIAL.values(), *sorted((p for p in self._params[rtype] if p.code not in SPECIAL),
                                                 key=lambda p: p.code)]
            out[rtype] = [
                {"name": p.code, "definition": p.url, "type": p.type,
                 **({"documentation": p.documentation} if p.documentation else {})}
                for p in params
                if p.code not in ("_text", "_content") and p.searchable
            ]
        return out

    # ------------------------------------------------------------------ write time

    def index_models(self) -> dict[str, list[IndexModel]]:
        models: dict[str, list[IndexModel]] = {}
        for rtype in STORED_TYPES:
            # Compound with ts: the same one index answers "in this patient's compartment"
            # and seeks a patient-scoped search newest first (search.seek).
            keys: list[Key] = [] if rtype in BY_PARAMETER else [
                [("compartments.Patient", ASCENDING), ("ts", DESCENDING)]]
            if self.registry.get(rtype, "identifier") is not None and rtype not in UNINDEXED_IDENTIFIER:
                keys += [[("sp.identifier", ASCENDING)], [("sp.identifier|", ASCENDING)]]
            keys += WORKLIST_INDEXES.get(rtype, [])
            sparse = SPARSE.get(rtype, frozenset())
            models[rtype] = [IndexModel(k, name=_index_name(k) + "_sparse", sparse=True)
                             if len(k) == 1 and k[0][0] in sparse else IndexModel(k, name=_index_name(k))
                             for k in keys]
        return models

    def index_fields(self, resource_type: str, resource: dict[str, Any]) -> Doc:
        """The normalized search values of a resource, stored under `sp`."""
        memo = self._memo.get(resource_type)
        if memo is not None:
            return memo.extract(resource)
        return self.extractor.extract(self._params.get(resource_type, ()), resource)

    def compartments(self, resource_type: str, resource: dict[str, Any], sp: Doc) -> Doc:
        """{"Patient": [ids]}: the patient compartments `resource` belongs to (from `sp`)."""
        ids: list[str] = []
        if resource_type == "Patient" and isinstance(resource.get("id"), str):
            ids.append(resource["id"])
        for code in self.registry.compartments.get("Patient", {}).get(resource_type, []):
            values = sp.get(code)
            for ref in values if isinstance(values, list) else [values]:
                if isinstance(ref, str) and ref.startswith("Patient/"):
                    ids.append(ref[len("Patient/"):])
        unique = list(dict.fromkeys(ids))
        return {"Patient": unique} if unique else {}

    # ------------------------------------------------------------------ read time

    def parse(
        self, resource_type: str, params: list[tuple[str, str]], *, strict: bool = False
    ) -> SearchQuery:
        return self.parser.parse(resource_type, params, strict=strict)

    def compartment_param(self, compartment: str, resource_type: str) -> list[str]:
        """The parameters that put `resource_type` in a `compartment` (empty: not a member)."""
        return list(self.registry.compartments.get(compartment, {}).get(resource_type, []))

    def filter_for(self, resource_type: str, params: list[tuple[str, str]]) -> Doc:
        """A MongoDB filter for simple criteria (no chains): for granular SMART scopes."""
        query = self.parse(resource_type, params, strict=True)
        if query.joins:
            from fhir_server.errors import BadRequest

            raise BadRequest("chained criteria cannot be used here", code="not-supported")
        return query.filter
