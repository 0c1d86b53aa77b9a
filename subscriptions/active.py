"""The Subscriptions the matcher matches events against, indexed, and the matching itself.

Kept in memory by the matcher and updated from the outbox itself (a Subscription is a resource
whose changes are events too), so a Subscription sees exactly the events committed after it.
Each is indexed on one field its filter requires an exact value of (`sp.owner` =
`Practitioner/x`), so an event is evaluated only against the Subscriptions it could match.

R4 criteria: the search engine's filter, evaluated in memory over the new version's stored
index values (`subscriptions.filters`); criteria with chains or `_has` (or an operator the
evaluator does not know) ask the database instead, through the repository's search path.
A delete matches if the version it removed matched. Topics: a trigger must fire (see
`subscriptions.topics`) and every filter hold on the new version (the removed one on delete).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server import fhirjson
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.storage.repository import Repository
from subscriptions.filters import Unsupported, equality_keys, matches, values_at
from subscriptions.model import Spec, SpecParser

log = logging.getLogger(__name__)

Doc = dict[str, Any]
# Statuses whose Subscriptions collect events (an `error` one keeps them for when it is fixed).
COLLECTING = frozenset({"requested", "active", "error"})


@dataclass
class Entry:
    spec: Spec
    since: datetime | None  # loaded at start-up: only events committed from its version on


def as_current(history_doc: Doc) -> Doc:
    """A history document shaped like a current one (what search filters are written for)."""
    doc = dict(history_doc)
    doc["_id"] = history_doc.get("id", history_doc["_id"])
    return doc


@dataclass
class _TypeIndex:
    keyed: dict[str, dict[str, set[str]]]
    rest: set[str]


class ActiveSubscriptions:
    def __init__(self, parser: SpecParser, repository: Repository, base_url: str) -> None:
        self.parser = parser
        self.repository = repository
        self.base_url = base_url
        self.entries: dict[str, Entry] = {}
        self._index: dict[str, _TypeIndex] | None = None

    async def load(self) -> None:
        self.entries.clear()
        self._index = None
        cursor = self.repository.database.current("Subscription").find(
            {"del": False}, {"res": 1, "ts": 1, "del": 1})
        async for doc in cursor:
            self.put(doc["_id"], doc, loaded=True)

    def put(self, sub_id: str, doc: Doc | None, *, loaded: bool = False) -> None:
        """The Subscription's version `doc` (current or history document; None: gone)."""
        self._index = None
        self.entries.pop(sub_id, None)
        if doc is None or doc.get("del") or not doc.get("res"):
            return
        resource = fhirjson.loads(doc["res"])
        if resource.get("status") not in COLLECTING:
            return
        try:
            spec = self.parser.parse(resource, internal=True)
        except FhirError as exc:
            log.warning("Subscription/%s cannot be matched: %s", sub_id, exc.diagnostics)
            return
        self.entries[sub_id] = Entry(spec, doc.get("ts") if loaded else None)

    # ------------------------------------------------------------------ index

    def _key_filter(self, spec: Spec) -> Doc | None:
        if spec.kind == "criteria":
            return spec.query.filter if spec.query is not None and not spec.query.joins else None
        return next((f for f in spec.filters if equality_keys(f)), None)

    def _build(self) -> dict[str, _TypeIndex]:
        index: dict[str, _TypeIndex] = {}
        for sub_id, entry in self.entries.items():
            slot = index.setdefault(entry.spec.resource_type, _TypeIndex({}, set()))
            flt = self._key_filter(entry.spec)
            key = equality_keys(flt) if flt is not None else None
            if key is None:
                slot.rest.add(sub_id)
                continue
            field, values = key
            by_value = slot.keyed.setdefault(field, {})
            for value in values:
                by_value.setdefault(value, set()).add(sub_id)
        return index

    def watches(self, resource_type: str) -> bool:
        """Whether any active subscription is about this type: events of other types need
        neither their versions read nor matching (the common case: most writes)."""
        if self._index is None:
            self._index = self._build()
        return resource_type in self._index

    def candidates(self, resource_type: str, doc: Doc) -> list[Entry]:
        if self._index is None:
            self._index = self._build()
        slot = self._index.get(resource_type)
        if slot is None:
            return []
        ids = set(slot.rest)
        for field, by_value in slot.keyed.items():
            for value in values_at(doc, field):
                if isinstance(value, str):
                    ids |= by_value.get(value, set())
        return [self.entries[i] for i in sorted(ids) if i in self.entries]

    # ------------------------------------------------------------------ matching

    async def match(self, event: Doc, current: Doc | None, previous: Doc | None) -> list[str]:
        """Ids of the Subscriptions `event` matches (its versions: history documents)."""
        interaction = str(event["i"])
        deleting = interaction == "delete"
        cur = as_current(current) if current is not None and not deleting else None
        prev = as_current(previous) if previous is not None else None
        target = prev if deleting else cur
        if target is None:
            return []
        parsed: list[tuple[Doc | None, Doc | None]] = []

        def resources() -> tuple[Doc | None, Doc | None]:
            if not parsed:
                parsed.append((_resource(prev), _resource(cur)))
            return parsed[0]

        out: list[str] = []
        for entry in self.candidates(str(event["t"]), target):
            spec = entry.spec
            if entry.since is not None and event["ts"] < entry.since:
                continue
            if spec.end is not None and event["ts"] >= spec.end:
                continue
            if spec.kind == "criteria":
                hit = await self._criteria(spec, target, event)
            else:
                assert spec.topic is not None
                hit = any(t.fires(interaction, prev, cur, resources) for t in spec.topic.triggers
                          if t.resource_type == event["t"]) and self._filters(spec, target)
            if hit:
                out.append(spec.id)
        return out

    @staticmethod
    def _filters(spec: Spec, target: Doc) -> bool:
        return all(matches(f, target) for f in spec.filters)

    async def _criteria(self, spec: Spec, target: Doc, event: Doc) -> bool:
        assert spec.query is not None
        if not spec.query.joins:
            try:
                return matches(spec.query.filter, target)
            except Unsupported:
                pass
        if event["i"] == "delete":
            return False  # the removed version is no longer in the current collection
        context = RequestContext.system(self.base_url, "subscription-match")
        found = await self.repository.find_matches(
            context, spec.resource_type, [*spec.params, ("_id", str(event["r"]))], limit=1)
        return bool(found)


def _resource(doc: Doc | None) -> Doc | None:
    if doc is None or not doc.get("res"):
        return None
    value: Doc = fhirjson.loads(doc["res"])
    return value

