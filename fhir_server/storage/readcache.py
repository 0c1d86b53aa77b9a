"""Current documents by (type, id), kept per process and invalidated by the outbox's change
events (storage/changes.py), so that a read by id answers without a database round trip.

The cache holds stored documents, never decisions: a hit goes through the same access
decision as a document just found (the read pipeline's checks, CAN_SEE and WILL_SEE), and a
read whose access filter is not empty (a `patient/` token's compartment, say) is not served
from it at all (the filter is a database query; the cache cannot answer it), so it can never
serve what the access decision would refuse.

Correct across processes and writes: a read first `ready()`s, which waits for the change
feed to hand over every event committed before the read started (one shared pull, see
changes.py); each event drops the entry of its resource. A lookup racing with a write does
not store a document older than an event already seen for it (`_latest`), and nothing read
before a reset (a stream opened again, a failure) is stored after it (the epoch). Types
whose writes leave no outbox event (AuditEvent: the audit writer stores events straight,
append-only) are not cached.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from fhir_server.storage.changes import ChangeFeed

Doc = dict[str, Any]
UNCACHED = frozenset({"AuditEvent"})
MAX_DOCUMENT_BYTES = 256 * 1024  # larger resources (a Binary, a big Bundle) are read each time
MAX_BYTES = 64 * 1024 * 1024  # the JSON text held in all, at most


class ReadCache:
    def __init__(self, feed: ChangeFeed, max_entries: int) -> None:
        self.feed = feed
        self.max_entries = max_entries
        self._docs: OrderedDict[tuple[str, str], Doc] = OrderedDict()
        # Highest version named by an event since the last reset, for the entries a lookup in
        # flight may still store; bounded: forgetting one bumps the epoch instead.
        self._latest: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._epoch = 0
        self._bytes = 0  # JSON text held
        self.hits = 0  # for tests and the bench
        self.misses = 0
        feed.subscribe(self._apply, self._reset)

    @staticmethod
    def caches(resource_type: str) -> bool:
        return resource_type not in UNCACHED

    async def ready(self, ticket: int | None = None) -> bool:
        """True when the cache reflects every change committed before this call (or before
        the feed's `ticket` was taken)."""
        return await self.feed.sync(ticket)

    def get(self, resource_type: str, resource_id: str) -> Doc | None:
        key = (resource_type, resource_id)
        doc = self._docs.get(key)
        if doc is None:
            self.misses += 1
            return None
        self.hits += 1
        self._docs.move_to_end(key)
        return dict(doc)  # callers may add to theirs; the cached one stays as stored

    def ticket(self) -> int:
        """Taken before a lookup; `put` stores its answer only if nothing was forgotten since."""
        return self._epoch

    def put(self, resource_type: str, resource_id: str, doc: Doc, ticket: int) -> None:
        key = (resource_type, resource_id)
        if ticket != self._epoch or int(doc["v"]) < self._latest.get(key, 0):
            return  # a change the lookup may not have seen was applied meanwhile
        size = _size(doc)
        if size > MAX_DOCUMENT_BYTES:
            return
        self._drop(key)
        self._docs[key] = dict(doc)
        self._bytes += size
        while len(self._docs) > self.max_entries or self._bytes > MAX_BYTES:
            self._drop(next(iter(self._docs)))

    def _drop(self, key: tuple[str, str]) -> None:
        doc = self._docs.pop(key, None)
        if doc is not None:
            self._bytes -= _size(doc)

    def _apply(self, events: list[Doc]) -> None:
        for event in events:
            key = (str(event.get("t")), str(event.get("r")))
            self._drop(key)
            self._latest[key] = max(int(event.get("v") or 0), self._latest.get(key, 0))
            self._latest.move_to_end(key)
        while len(self._latest) > self.max_entries:
            self._latest.popitem(last=False)
            self._epoch += 1  # a lookup in flight can no longer be checked against it

    def clear(self) -> None:
        """Forgets everything (a database changed behind the server's back: tests' clean-ups)."""
        self._reset()

    def _reset(self) -> None:
        self._docs.clear()
        self._bytes = 0
        self._latest.clear()
        self._epoch += 1


def _size(doc: Doc) -> int:
    raw = doc.get("res")
    return len(raw) if isinstance(raw, bytes | bytearray) else 0
