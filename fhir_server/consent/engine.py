"""The Consent engine: per request, the active Consents as query filters and read checks.

Once per request (memoized in the context, never across requests, so a Consent created or
revoked takes effect on the very next request): one indexed query loads every active
Consent, the requester's actor identities are resolved (only as far as the Consents need),
and, per resource type and action, each Consent's denied region is compiled (`region`). The
read pipeline then ANDs one flat filter fragment into every query, so denied resources are
never counted, paged or included: `compartments.Patient $nin [...]` for patients whose data
of that type is denied whole, `_id $nin [...]` for the documents a partial region (labels,
codes, data references, data period) denies, found among the patient's compartment with an
indexed query, and `patient_labels $nin [...]` for label provisions (see `labels`). Only
field operators: a top-level $and/$or/$nor keeps the embedded database from using any
index. Decisions are kept in the context for the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.auth.scopes import parse_scope
from fhir_server.consent.labels import FIELD as LABELS
from fhir_server.consent.labels import label_values
from fhir_server.consent.model import Code, Consent, parse_consent, relative_reference
from fhir_server.consent.region import (
    ALL,
    NONE,
    Region,
    Requester,
    Vocabulary,
    denied_region,
    disjuncts,
    matches,
)
from fhir_server.consent.requester import acting_as, held_references
from fhir_server.consent.settings import ConsentSettings
from fhir_server.context import RequestContext
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database

Doc = dict[str, Any]
COMPARTMENT = "compartments.Patient"
BREAK_THE_GLASS = "BTG"
_POLICY = "consent.policy"
_DECISIONS = "consent.decisions"
# What a region may look at in a stored document.
_MATCHED = {"_id": 1, "id": 1, "ts": 1, "sp": 1, "compartments": 1}
# Interactions whose lookups serve a change: Consent's `correct` (and `collect` for create).
_CHANGES = {"create": "collect", "update": "correct", "patch": "correct", "delete": "correct",
            "transaction": "correct"}


def consent_indexes() -> dict[str, list[IndexModel]]:
    # The one query per request: every active Consent.
    return {"Consent": [IndexModel([("sp.status", ASCENDING)], name="consent_status")]}


@dataclass(frozen=True)
class Decision:
    consent: str  # Consent id
    patient: str
    decision: str  # permit | deny | break-the-glass


def decisions(context: RequestContext) -> dict[str, Decision]:
    """Consent decisions taken for this request, by Consent id (for the audit trail)."""
    found: dict[str, Decision] = context.attributes.get(_DECISIONS, {})
    return found


def evaluated_consents(context: RequestContext) -> dict[str, list[str]]:
    """Patient id -> ids of that patient's Consents this request was evaluated against."""
    policy = context.attributes.get(_POLICY)
    if not isinstance(policy, RequestPolicy):
        return {}
    out: dict[str, list[str]] = {}
    for consent in policy.consents:
        out.setdefault(consent.patient, []).append(consent.id)
    return out


def _record(context: RequestContext, consent: Consent, decision: str) -> None:
    found = context.attributes.setdefault(_DECISIONS, {})
    if found.get(consent.id, Decision("", "", "permit")).decision == "permit":
        found[consent.id] = Decision(consent.id, consent.patient, decision)


def _purposes(values: tuple[str, ...]) -> frozenset[Code]:
    out = set()
    for value in values:
        system, bar, code = value.strip().rpartition("|")
        out.add((system if bar else "", code))
    return frozenset(out)


@dataclass
class RequestPolicy:
    consents: list[Consent]
    requester: Requester
    break_the_glass: bool
    vocabulary: Vocabulary
    _regions: dict[tuple[str, str], list[tuple[Consent, Region]]] = field(default_factory=dict)
    _denied: dict[tuple[str, str, bool], list[str]] = field(default_factory=dict)

    def regions(self, rtype: str, action: str) -> list[tuple[Consent, Region]]:
        """(Consent, what it denies of `rtype`) for every Consent that denies something."""
        key = (rtype, action)
        if key not in self._regions:
            requester = Requester(self.requester.actors, self.requester.purposes, action,
                                  self.requester.now, self.requester.related)
            found = [(c, denied_region(c, rtype, self.vocabulary, requester)) for c in self.consents]
            self._regions[key] = [(c, r) for c, r in found if r is not NONE]
        return self._regions[key]


def _leading(part: Doc, patient: str) -> Doc:
    """The query for one flat disjunct of a patient's region. Its own first condition leads
    when it is positive (an id, a reference: usually few documents), else the patient's
    compartment does (the embedded database rides the first field's index)."""
    first = next(iter(part.values()), None)
    negative = isinstance(first, dict) and bool(set(first) & {"$nin", "$ne"})
    return {COMPARTMENT: patient, **part} if not part or negative else {**part, COMPARTMENT: patient}


class ConsentEngine:
    def __init__(self, database: Database, search: SearchEngine, settings: ConsentSettings,
                 base_url: str) -> None:
        self.database = database
        self.db = database.db
        self.settings = settings
        self.base_url = base_url
        self.vocabulary = Vocabulary(search)
        # Types that can be in a patient's compartment: the only ones a Consent governs.
        self.governed = set(search.registry.compartments.get("Patient", {})) | {"Patient"}
        self._btg_scopes = [s for s in (parse_scope(t) for t in settings.btg_scopes) if s]

    def action(self, context: RequestContext) -> str:
        return _CHANGES.get(context.interaction, "access")

    def may_break_the_glass(self, scopes: frozenset[str]) -> bool:
        held = [s for s in (parse_scope(t) for t in scopes) if s]
        return bool(scopes & set(self.settings.btg_scopes)) or any(
            h.covers(wanted) for h in held for wanted in self._btg_scopes)

    async def policy(self, context: RequestContext) -> RequestPolicy | None:
        """This request's view of every active Consent; None when no Consent can apply."""
        if _POLICY in context.attributes:
            memo: RequestPolicy | None = context.attributes[_POLICY]
            return memo
        context.attributes[_POLICY] = policy = await self._load(context)
        return policy

    async def _load(self, context: RequestContext) -> RequestPolicy | None:
        principal = context.principal
        if principal is None or principal.kind != "token":
            return None  # the server's own work (the access decision refuses a missing principal)
        now = datetime.now(UTC)
        fhir_user = relative_reference(principal.fhir_user, self.base_url) if principal.fhir_user else None
        own = fhir_user[len("Patient/"):] if fhir_user and fhir_user.startswith("Patient/") else None
        # Deleted Consents (tombstones) keep no search values: `sp.status` alone excludes them.
        # (A second condition costs the embedded database three times as much.)
        docs = await self.db["Consent"].find({"sp.status": "active"}, {"res": 1}).to_list()
        consents = []
        for doc in docs:
            consent = parse_consent(orjson.loads(doc["res"]), self.base_url, self.settings.default_base)
            # A patient's own Consent never stands between them and their record.
            if consent is not None and consent.patient != own and consent.applies_at(now):
                consents.append(consent)
        if not consents:
            return None
        named = set().union(*(c.actor_references() for c in consents))
        actors = await acting_as(self.db, fhir_user, now, self.base_url, named) if fhir_user else frozenset()
        if principal.client_id:
            # The client application itself, as a Device named by its client_id.
            actors |= {f"Device/{principal.client_id}"}
        related = {d.reference for c in consents for rule in c.provisions() for d in rule.data
                   if d.meaning == "related"}
        held = await held_references(self.db, related, {
            t: self.vocabulary.of(t)[1] for t in {r.partition("/")[0] for r in related}}) if related else {}
        # The purpose in force: granted by the token, narrowed by the request; break-the-glass
        # is in it only when the token allows it (fhir_server.access.purpose).
        purposes = _purposes(context.purpose_of_use)
        btg = any(code == BREAK_THE_GLASS for _, code in purposes)
        requester = Requester(actors, purposes, "access", now, held)
        return RequestPolicy(consents, requester, btg, self.vocabulary)

    async def filter(self, context: RequestContext, rtype: str) -> Doc | None:
        """The filter fragment for a query on `rtype`, or None; records the decisions."""
        if rtype not in self.governed:
            return None
        policy = await self.policy(context)
        if policy is None:
            return None
        # A query serves disclosure, whatever the interaction: what a write may change is
        # decided per version (`denies` with collect / correct).
        action = "access"
        regions = policy.regions(rtype, action)
        if not regions:
            return None
        verdict = "break-the-glass" if policy.break_the_glass else "deny"
        for consent, _ in regions:
            _record(context, consent, verdict)
        if policy.break_the_glass:
            return None
        fragment: Doc = {}
        whole = sorted({c.patient for c, r in regions if r == ALL})
        if whole:
            fragment[COMPARTMENT] = {"$nin": whole}
        labels = {c.id: label_values(c.patient, r) for c, r in regions if r != ALL}
        if any(labels.values()):
            fragment[LABELS] = {"$nin": sorted(v for found in labels.values() for v in found or ())}
        partial = [(c, r) for c, r in regions if r != ALL and not labels[c.id]]
        if partial:
            history = context.interaction.startswith("history")
            key = (rtype, action, history)
            if key not in policy._denied:
                policy._denied[key] = await self._denied_documents(rtype, partial, history)
            if policy._denied[key]:
                fragment["_id"] = {"$nin": policy._denied[key]}
        return fragment or None

    async def _denied_documents(self, rtype: str, partial: list[tuple[Consent, Region]],
                                history: bool) -> list[str]:
        """Keys of the documents (current or history) that partial regions deny: one indexed
        query per flat disjunct of a region, else the patient's documents matched here."""
        collection = self.database.history(rtype) if history else self.database.current(rtype)
        denied: set[str] = set()
        for consent, region in partial:
            parts = disjuncts(region, limit=4)
            if parts is not None:
                for part in parts:
                    async for doc in collection.find(_leading(part, consent.patient), {"_id": 1}):
                        denied.add(doc["_id"])
                continue
            async for doc in collection.find({COMPARTMENT: consent.patient}, _MATCHED):
                if matches(region, doc):
                    denied.add(doc["_id"])
        return sorted(denied)

    async def denies(self, context: RequestContext, rtype: str, key: Doc, *, history: bool,
                     action: str, session: AsyncClientSession | None = None) -> bool:
        """Does a Consent deny the one stored document `key` selects (in the current or the
        history collection of `rtype`)? Records the decision."""
        if rtype not in self.governed:
            return False
        policy = await self.policy(context)
        if policy is None:
            return False
        regions = policy.regions(rtype, action)
        if not regions:
            return False
        collection = self.database.history(rtype) if history else self.database.current(rtype)
        doc = await collection.find_one(key, _MATCHED, session=session) or {}
        patients = set((doc.get("compartments") or {}).get("Patient") or [])
        deciding = [c for c, r in regions if c.patient in patients and matches(r, doc)]
        for consent in deciding:
            _record(context, consent, "break-the-glass" if policy.break_the_glass else "deny")
        return bool(deciding) and not policy.break_the_glass
