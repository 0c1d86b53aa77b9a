"""The Consent engine: per request, the Consents of the patients it touches, as decisions on
stored documents.

Once per request (memoized in the context): the process's Consent cache is brought up to
date with the Consents' change events (`cache`), and the requester is known. The Consents
themselves are looked up only for the patients whose documents the request meets, by index
and through the cache (`store`, `cache`), so a request costs the same whether the database
holds ten Consents or a hundred thousand. For each query of the read pipeline the engine adds
a document check (never a filter of patient ids: that would grow with the number of
Consents): each candidate document is decided in memory against the denied regions
(`region`) of the Consents of the patients in its compartment. The read pipeline applies the
check before paging, counting and joining, so denied resources are never returned, counted,
paged, included or used to resolve a chain. Decisions are kept in the context for the audit
trail. See docs/consent.md, "Scale".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.auth.scopes import parse_scope
from fhir_server.consent.cache import ConsentCache, cache_indexes
from fhir_server.consent.model import Code, Consent, relative_reference
from fhir_server.consent.region import (
    NONE,
    Region,
    Requester,
    Vocabulary,
    denied_region,
    matches,
)
from fhir_server.consent.requester import acting_as, held_references
from fhir_server.consent.settings import ConsentSettings
from fhir_server.consent.store import ConsentStore
from fhir_server.context import RequestContext
from fhir_server.hooks import DocumentCheck
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database

Doc = dict[str, Any]
BREAK_THE_GLASS = "BTG"
_POLICY = "consent.policy"
_DECISIONS = "consent.decisions"
# What a region may look at in a stored document.
_MATCHED = {"_id": 1, "id": 1, "ts": 1, "sp": 1, "compartments": 1}
# Interactions whose lookups serve a change: Consent's `correct` (and `collect` for create).
_CHANGES = {"create": "collect", "update": "correct", "patch": "correct", "delete": "correct",
            "transaction": "correct"}


def consent_indexes() -> dict[str, list[IndexModel]]:
    # Consents are looked up by their patient (`sp.patient`, declared by the search layer);
    # the cache syncs from the outbox by (t, _id).
    return {"Consent": [IndexModel([("sp.status", ASCENDING)], name="consent_status")], **cache_indexes()}


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
    for consents in policy.consents.values():
        for consent in consents:
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
    """One request's view of the Consents: those of the patients it has touched so far."""

    requester: Requester
    break_the_glass: bool
    vocabulary: Vocabulary
    fhir_user: str | None
    own: str | None  # the requester's own patient id: their Consents do not stand in their way
    # Patient id -> the Consents that apply now (loaded patients only; () when none).
    consents: dict[str, tuple[Consent, ...]] = field(default_factory=dict)
    _named: set[str] = field(default_factory=set)  # actor references already resolved
    _related: set[str] = field(default_factory=set)
    _regions: dict[tuple[str, str, str], Region] = field(default_factory=dict)

    def region(self, consent: Consent, rtype: str, action: str) -> Region:
        """What `consent` denies of `rtype` to this requester, for `action`."""
        key = (consent.id, rtype, action)
        if key not in self._regions:
            requester = Requester(self.requester.actors, self.requester.purposes, action,
                                  self.requester.now, self.requester.related)
            self._regions[key] = denied_region(consent, rtype, self.vocabulary, requester)
        return self._regions[key]


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
        self.store = ConsentStore(database, base_url, settings.default_base)
        self.cache = ConsentCache(database, self.store)

    def action(self, context: RequestContext) -> str:
        return _CHANGES.get(context.interaction, "access")

    def may_break_the_glass(self, scopes: frozenset[str]) -> bool:
        held = [s for s in (parse_scope(t) for t in scopes) if s]
        return bool(scopes & set(self.settings.btg_scopes)) or any(
            h.covers(wanted) for h in held for wanted in self._btg_scopes)

    async def policy(self, context: RequestContext) -> RequestPolicy | None:
        """This request's view of the Consents; None when no Consent can apply (the server's
        own work)."""
        if _POLICY in context.attributes:
            memo: RequestPolicy | None = context.attributes[_POLICY]
            return memo
        context.attributes[_POLICY] = policy = await self._load(context)
        return policy

    async def _load(self, context: RequestContext) -> RequestPolicy | None:
        principal = context.principal
        if principal is None or principal.kind != "token":
            return None  # the server's own work (the access decision refuses a missing principal)
        await self.cache.sync(self.cache.feed.request_ticket(context.attributes))
        now = datetime.now(UTC)
        fhir_user = relative_reference(principal.fhir_user, self.base_url) if principal.fhir_user else None
        own = fhir_user[len("Patient/"):] if fhir_user and fhir_user.startswith("Patient/") else None
        # The client application itself, as a Device named by its client_id.
        actors = frozenset({fhir_user} if fhir_user else set()) | frozenset(
            {f"Device/{principal.client_id}"} if principal.client_id else set())
        # The purpose in force: granted by the token, narrowed by the request; break-the-glass
        # is in it only when the token allows it (fhir_server.access.purpose).
        purposes = _purposes(context.purpose_of_use)
        btg = any(code == BREAK_THE_GLASS for _, code in purposes)
        requester = Requester(actors, purposes, "access", now, {})
        return RequestPolicy(requester, btg, self.vocabulary, fhir_user, own)

    async def _consents_of(self, policy: RequestPolicy, patients: set[str]) -> list[Consent]:
        """The Consents (applying now) of `patients`, loading the ones not seen yet, and the
        requester resolved as far as their actors need."""
        new = patients - policy.consents.keys()
        if new:
            now = policy.requester.now
            for patient, found in (await self.cache.of(new)).items():
                # A patient's own Consent never stands between them and their record.
                policy.consents[patient] = () if patient == policy.own else tuple(
                    c for c in found if c.applies_at(now))
            await self._resolve(policy, [c for p in new for c in policy.consents.get(p, ())])
        return [c for p in patients for c in policy.consents.get(p, ())]

    async def _resolve(self, policy: RequestPolicy, consents: list[Consent]) -> None:
        named = set().union(*(c.actor_references() for c in consents)) - policy._named
        related = {d.reference for c in consents for rule in c.provisions() for d in rule.data
                   if d.meaning == "related"} - policy._related
        if not named and not related:
            return
        old = policy.requester
        actors, held = old.actors, dict(old.related)
        if named and policy.fhir_user:
            actors |= await acting_as(self.db, policy.fhir_user, old.now, self.base_url, named)
        if related:
            held.update(await held_references(self.db, related, {
                t: self.vocabulary.of(t)[1] for t in {r.partition("/")[0] for r in related}}))
        policy._named |= named
        policy._related |= related
        policy.requester = Requester(actors, old.purposes, old.action, old.now, held)
        policy._regions.clear()  # computed for a requester known less well

    async def refused(self, context: RequestContext, rtype: str, docs: list[Doc], action: str) -> list[bool]:
        """Per stored document (index fields: `_id`, `id`, `ts`, `sp`, `compartments`): does
        a Consent of a patient in its compartment deny it? Records the decisions."""
        if rtype not in self.governed or not docs:
            return [False] * len(docs)
        policy = await self.policy(context)
        if policy is None:
            return [False] * len(docs)
        compartments = [set((d.get("compartments") or {}).get("Patient") or []) for d in docs]
        consents = await self._consents_of(policy, set().union(*compartments))
        if not consents:
            return [False] * len(docs)
        regions = [(c, r) for c in consents if (r := policy.region(c, rtype, action)) is not NONE]
        verdict = "break-the-glass" if policy.break_the_glass else "deny"
        out = []
        for doc, patients in zip(docs, compartments, strict=True):
            deciding = [c for c, r in regions if c.patient in patients and matches(r, doc)]
            for consent in deciding:
                _record(context, consent, verdict)
            out.append(bool(deciding) and not policy.break_the_glass)
        return out

    def check(self, context: RequestContext, rtype: str) -> DocumentCheck | None:
        """The document check for a query on `rtype` (None for types no Consent governs)."""
        if rtype not in self.governed or context.principal is None:
            return None  # (no principal: the server's own work, see `_load`)
        # A query serves disclosure, whatever the interaction: what a write may change is
        # decided per version (`denies` with collect / correct).
        action = "access"

        async def check(docs: list[Doc]) -> list[bool]:
            return [not denied for denied in await self.refused(context, rtype, docs, action)]

        return check

    async def denies(self, context: RequestContext, rtype: str, key: Doc, *, history: bool,
                     action: str, session: AsyncClientSession | None = None, doc: Doc | None = None) -> bool:
        """Does a Consent deny the one stored document `key` selects (in the current or the
        history collection of `rtype`)? Records the decision. `doc`: that document, when the
        caller has it whole already (the read pipeline's own find)."""
        if rtype not in self.governed or await self.policy(context) is None:
            return False
        if doc is None:
            collection = self.database.history(rtype) if history else self.database.current(rtype)
            doc = await collection.find_one(key, _MATCHED, session=session) or {}
        return (await self.refused(context, rtype, [doc], action))[0]
