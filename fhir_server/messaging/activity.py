"""Where a participant's newest inbox activity lies: the last activity of their `RECENT`
threads last active, a hint the inbox places its windows by (fhir_server.messaging.inbox).

Each time a participant's inbox row gets a new last activity (a header naming them, a
message in one of their threads), the entry `{r: thread, t: time}` is pushed onto one small
document per participant, after pulling that thread's older entry, and the document keeps
the last `RECENT` entries pushed (in commit order, so the newest: a time pushed late by a
slow process only makes a window hold one row more). A row's last activity is its thread's
entry, so however the activity is distributed, the rows whose last activity is at or after
the n-th newest time are at most n, and, each entry being another thread, about n: a window
of bounds from that time holds a page, never a burst (the embedded database reads every
row a query's bounds hold before it limits; fhir_server.messaging.store). Without the pull,
a conversation of a hundred messages in one thread filled the document with that thread
alone, and the first page of a thousand threads read all of them (docs/performance.md).
Entries of an earlier release are plain times (no thread): read the same, never pulled.

It is a hint, never a source of truth, like the search's bucket directory: the inbox's
windows still tile the whole axis of last activity whatever it says, so a lost, stale or
wrong hint changes what a page costs, never what it answers. That is why it is written
after the commit, outside the write's transaction: a message's transaction takes no extra
document in common with the transactions of other threads (a participant of many threads
would make every message to them conflict), and a process that dies between the commit and
this write only makes the next page read a little more. The documents are only ever written
outside transactions (SecantusDB 0.7 deadlocks a plain write that meets an open one).

Rows written before notes were kept (`since`) are noted once, by the first inbox page of
their participant (`backfill`), so that "fewer than RECENT times noted" means "every row
noted".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]
ACTIVITY = "messaging_activity"
# At least the inbox's default page plus one (DEFAULT_COUNT + 1): a default first page is
# placed by the hint alone (a larger one reads on by the density of the rows seen). Each time
# kept costs every message a little: the document is rewritten whole (measured: 64 times cost
# about 0.3 ms more of database CPU per participant than one, 128 with `$sort` about 1.5 ms).
RECENT = 64
# The one document that is no participant's: when the server began noting activity.
SINCE = "*since"
_SINCE_KEPT: set[tuple[int, str]] = set()  # the databases this process wrote SINCE in


def updates(times: Mapping[str, Mapping[str, datetime]]) -> list[UpdateOne]:
    """Per participant (their threads' new last activity): one update pulling those threads'
    older entries, where there are any, then one upsert pushing the new ones. In order: a
    bulk write of them must be ordered."""
    out = []
    for participant, by_thread in sorted(times.items()):
        noted = sorted(({"r": r, "t": t} for r, t in by_thread.items()), key=lambda e: (e["t"], e["r"]))[-RECENT:]
        if noted:
            threads = [e["r"] for e in noted]
            # A `$pull` and a `$push` of one field cannot share an update; the filter makes
            # the pull a no-op where no such entry is kept. (One pipeline update doing both,
            # `$filter` then `$concatArrays`, cost the embedded database 2.5 ms of CPU where
            # these two cost 1.75 and the push alone 1.15, measured on 64 entries.)
            out.append(UpdateOne({"_id": participant, "at.r": {"$in": threads}},
                                 {"$pull": {"at": {"r": {"$in": threads}}}}))
            # No `$sort`: sorting the kept entries on every write is most of what it would cost.
            out.append(UpdateOne({"_id": participant}, {"$push": {"at": {"$each": noted, "$slice": -RECENT}}},
                                 upsert=True))
    return out


async def note(db: AsyncDatabase[Doc], times: Mapping[str, Mapping[str, datetime]]) -> None:
    """Records new activity, participant -> thread -> time (one round trip for all)."""
    batch = updates(times)
    if not batch:
        return
    kept = (id(db.client), db.name)
    if kept not in _SINCE_KEPT:
        # Before this process's first note: from when on the server notes activity (kept
        # by the first process ever; rows older than it are backfilled when first paged).
        batch.insert(0, UpdateOne({"_id": SINCE}, {"$setOnInsert": {"at": datetime.now(UTC)}}, upsert=True))
    await db[ACTIVITY].bulk_write(batch, ordered=True)
    _SINCE_KEPT.add(kept)


async def since(db: AsyncDatabase[Doc]) -> datetime | None:
    """From when on every new activity is noted (None: nothing was ever noted)."""
    doc = await db[ACTIVITY].find_one({"_id": SINCE})
    at = (doc or {}).get("at")
    if not isinstance(at, datetime):
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Recent:
    times: list[datetime]  # newest first
    backfilled: bool  # the participant's rows written before notes were kept are noted too

    @property
    def whole(self) -> bool:
        """Every row's last activity was noted and none was cut off: below the oldest time
        lies only what a lost note left out."""
        return self.backfilled and len(self.times) < RECENT


def _times(values: Any) -> list[datetime]:
    if not isinstance(values, list):
        return []
    # Entries `{r, t}`, and plain times of an earlier release.
    found = (v.get("t") if isinstance(v, dict) else v for v in values)
    return sorted((v if v.tzinfo else v.replace(tzinfo=UTC) for v in found if isinstance(v, datetime)),
                  reverse=True)


async def recent(db: AsyncDatabase[Doc], participant: str) -> Recent:
    """The participant's newest noted activity times (empty when none)."""
    doc = await db[ACTIVITY].find_one({"_id": participant}, {"at": 1, "backfilled": 1})
    return Recent(_times((doc or {}).get("at")), bool((doc or {}).get("backfilled")))


async def backfill(db: AsyncDatabase[Doc], participant: str, rows: Iterable[tuple[str, datetime]]) -> Recent:
    """Notes the last activity of the participant's rows (thread, time) written before notes
    were kept (`since`; once per participant, by the first inbox page that finds it not done)."""
    noted = [{"r": r, "t": t} for r, t in sorted(rows, key=lambda row: (row[1], row[0]))[-RECENT:]]
    doc = await db[ACTIVITY].find_one_and_update(
        {"_id": participant},
        # Sorted once here: older times pushed after newer ones must not push those out.
        {"$push": {"at": {"$each": noted, "$sort": {"t": 1}, "$slice": -RECENT}}, "$set": {"backfilled": True}},
        upsert=True, return_document=ReturnDocument.AFTER, projection={"at": 1})
    return Recent(_times((doc or {}).get("at")), True)
