"""Where a participant's newest inbox activity lies: the times of their last `RECENT`
activities, a hint the inbox places its windows by (fhir_server.messaging.inbox).

Each time a participant's inbox row gets a new last activity (a header naming them, a
message in one of their threads), that time is pushed onto one small document per
participant, which keeps the last `RECENT` times pushed (in commit order, so the newest:
a time pushed late by a slow process only makes a window hold one row more). A row's last activity is
one of those times, so however the activity is distributed, the rows whose last activity
is at or after the n-th newest time are at most n: a window of bounds from that time holds
a page, never a burst (the embedded database reads every row a query's bounds hold before
it limits; fhir_server.messaging.store).

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


def updates(times: Mapping[str, Iterable[datetime]]) -> list[UpdateOne]:
    """One upsert per participant pushing their new activity times (one per row changed:
    two rows last active in the same millisecond are two times)."""
    out = []
    for participant, values in sorted(times.items()):
        noted = sorted(values)[-RECENT:]
        if noted:
            # No `$sort`: sorting the kept times on every write is most of what it would cost.
            out.append(UpdateOne({"_id": participant}, {"$push": {"at": {"$each": noted, "$slice": -RECENT}}},
                                 upsert=True))
    return out


async def note(db: AsyncDatabase[Doc], times: Mapping[str, Iterable[datetime]]) -> None:
    """Records new activity times (one round trip for every participant)."""
    batch = updates(times)
    if not batch:
        return
    kept = (id(db.client), db.name)
    if kept not in _SINCE_KEPT:
        # Before this process's first note: from when on the server notes activity (kept
        # by the first process ever; rows older than it are backfilled when first paged).
        batch.insert(0, UpdateOne({"_id": SINCE}, {"$setOnInsert": {"at": datetime.now(UTC)}}, upsert=True))
    await db[ACTIVITY].bulk_write(batch, ordered=False)
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
    return sorted((v if v.tzinfo else v.replace(tzinfo=UTC) for v in values if isinstance(v, datetime)),
                  reverse=True)


async def recent(db: AsyncDatabase[Doc], participant: str) -> Recent:
    """The participant's newest noted activity times (empty when none)."""
    doc = await db[ACTIVITY].find_one({"_id": participant}, {"at": 1, "backfilled": 1})
    return Recent(_times((doc or {}).get("at")), bool((doc or {}).get("backfilled")))


async def backfill(db: AsyncDatabase[Doc], participant: str, times: Iterable[datetime]) -> Recent:
    """Notes the last activity of the participant's rows written before notes were kept
    (`since`; once per participant, by the first inbox page that finds it not done)."""
    noted = sorted(times)[-RECENT:]
    doc = await db[ACTIVITY].find_one_and_update(
        {"_id": participant},
        # Sorted once here: older times pushed after newer ones must not push those out.
        {"$push": {"at": {"$each": noted, "$sort": 1, "$slice": -RECENT}}, "$set": {"backfilled": True}},
        upsert=True, return_document=ReturnDocument.AFTER, projection={"at": 1})
    return Recent(_times((doc or {}).get("at")), True)
