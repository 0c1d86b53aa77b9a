"""The history documents of the versions this process committed lately, by (type, id, version).

A committed version never changes, so a copy of its history document is correct in every
process for as long as the version exists; a miss (another process wrote it, or it was
forgotten) reads the database. Who reads a version right after its commit asks here first:
the subscription matcher (the version an outbox event names and the one before it) and a
vread without an access filter (a notification rendered for its owner). That saves the
database a find per event.

Filled only once a transaction has committed: the commit stages the history documents it
wrote on its session (`stage`, again on every attempt the driver re-runs), and the
transaction helper publishes them after the commit answered (`publish`), or drops them
(`discard`). An aborted attempt's documents are therefore never served.

Versions are deleted in two ways, and neither reaches a copy served here: superseded render
states are pruned once older than their retention (90 days by default), and copies older than MAX_AGE are
never served; a database emptied behind the server's back (tests' clean-ups) calls `clear`.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

Doc = dict[str, Any]
Key = tuple[str, str, int]
MAX_ENTRIES = 4096
MAX_DOCUMENT_BYTES = 64 * 1024  # larger resources are read from the database each time
MAX_AGE = timedelta(minutes=5)
# How long a reader waits for a commit it knows happened (its change event arrived) to be
# published: the committing request only has to resume after the commit's reply.
PUBLISH_PATIENCE = 0.5
# A Subscription's stored documents gain their owner's key later in the same transaction
# (subscriptions/guard.py), so the copy the commit built is not the stored one: not held.
UNCACHED = frozenset({"Subscription"})


class RecentVersions:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._docs: OrderedDict[Key, Doc] = OrderedDict()
        self._staged: dict[int, list[tuple[str, Doc]]] = {}
        self._staged_keys: Counter[Key] = Counter()  # the keys of all of _staged's documents
        self.hits = 0  # for tests and the bench
        self.misses = 0
        # Set (and replaced) whenever staged versions are published or dropped.
        self._settled = asyncio.Event()

    # ------------------------------------------------------------------ the commit's side

    def stage(self, session: object, written: list[tuple[str, Doc]]) -> None:
        """The (type, history document) pairs one attempt of `session`'s transaction wrote:
        replaces whatever an earlier attempt staged."""
        self._unstage(session)
        staged = [(t, d) for t, d in written if t not in UNCACHED and _small(d)]
        self._staged[id(session)] = staged
        self._staged_keys.update(_key(t, d) for t, d in staged)

    def publish(self, session: object) -> None:
        """`session`'s transaction committed: its staged versions may be served."""
        for resource_type, doc in self._unstage(session):
            key = _key(resource_type, doc)
            self._docs.pop(key, None)
            self._docs[key] = doc
        while len(self._docs) > self.max_entries:
            self._docs.popitem(last=False)
        self._settle()

    def discard(self, session: object) -> None:
        if self._unstage(session):
            self._settle()

    def _unstage(self, session: object) -> list[tuple[str, Doc]]:
        staged = self._staged.pop(id(session), [])
        for t, d in staged:
            key = _key(t, d)
            left = self._staged_keys[key] - 1
            if left:
                self._staged_keys[key] = left
            else:
                del self._staged_keys[key]  # `in` then answers False
        return staged

    def _settle(self) -> None:
        self._settled.set()
        self._settled = asyncio.Event()

    # ------------------------------------------------------------------ readers

    def get(self, resource_type: str, resource_id: str, version: int) -> Doc | None:
        """A copy of the version's history document, or None (read the database)."""
        doc = self._docs.get((resource_type, resource_id, version))
        if doc is None or datetime.now(UTC) - doc["ts"] > MAX_AGE:
            self.misses += 1
            return None
        self.hits += 1
        return dict(doc)  # callers may add to theirs; the copy held stays as stored

    async def committed(self, resource_type: str, resource_id: str, version: int) -> Doc | None:
        """As `get`, for a reader that knows the version committed (the change stream showed
        it): if this process's commit of it is staged but not yet published (the change event
        can arrive before the committing request resumes), wait for the publication, a
        little, rather than read the database for what is about to be held here."""
        key = (resource_type, resource_id, version)
        try:
            async with asyncio.timeout(PUBLISH_PATIENCE):
                while key in self._staged_keys:
                    await self._settled.wait()
        except TimeoutError:
            pass  # still staged: the database answers
        return self.get(resource_type, resource_id, version)

    def clear(self) -> None:
        self._docs.clear()


def _key(resource_type: str, doc: Doc) -> Key:
    return (resource_type, str(doc["id"]), int(doc["v"]))


def _small(doc: Doc) -> bool:
    raw = doc.get("res")
    return not isinstance(raw, bytes | bytearray) or len(raw) <= MAX_DOCUMENT_BYTES
