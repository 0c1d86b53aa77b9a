"""A participant's inbox, a page at a time: their threads by last activity, newest first.

The inbox is paged like every FHIR search (`_count`, a `next` link), so the one access
decision judges a page of threads, not every thread the participant ever took part in:

- the participant's inbox rows (`messaging_inbox`, one per thread: last message number,
  furthest cursor, last activity) are read **window by window of last activity**, each
  window a pair of bounds on the (participant, at) index. The embedded database reads every
  match of a query before it sorts or limits, so a sorted, limited query over 1,000 rows
  costs what reading them all costs; a window of bounds reads only the rows inside it. The
  first window is short, and each next one is sized from the density the earlier ones saw;
- the threads those rows name are then judged by the access decision, a page's worth at a
  time (`Repository.judged_ids`: the ids as the first stage, the query and access filter as
  the second, the decision's checks on what that finds). A row is only a number: a thread
  the decision does not release is left out, and the page reads on until it is full.

A row only ever says "this participant had a row for this thread": it is never the reason a
thread is answered. A participant who was removed from a thread still has its row; the
decision (participation is part of it) refuses the thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.errors import BadRequest
from fhir_server.messaging import store
from fhir_server.storage import paging

Doc = dict[str, Any]
DEFAULT_COUNT = 50
MAX_COUNT = 100  # the judged read's `$in` grows quadratically in the embedded database
JUDGED_CHUNK = 50
TOTAL_JUDGED_AT_ONCE = 4
FIRST_WINDOW = timedelta(seconds=2)
MAX_GROWTH = 16  # a window at most this many times wider than the one before
MAX_WINDOWS = 8  # then one last read of every older row

# Judges thread ids (the access decision): the ones it releases.
Judge = Callable[[list[str]], Awaitable[set[str]]]


@dataclass(frozen=True)
class Row:
    thread: str
    seq: int
    furthest: int
    at: datetime

    @property
    def beyond(self) -> int:
        return max(0, self.seq - self.furthest)

    def key(self) -> tuple[datetime, str]:
        return (self.at, self.thread)


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    next_cursor: str | None


def _aware(value: Any) -> datetime:
    if not isinstance(value, datetime):
        return store.EPOCH
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _row(doc: Doc) -> Row:
    return Row(str(doc["thread"]), int(doc.get("seq", 0)), int(doc.get("furthest", 0)), _aware(doc.get("at")))


def encode_cursor(participant: str, after: Row) -> str:
    return paging.encode([participant, after.at, after.thread])


def decode_cursor(participant: str, token: str) -> tuple[datetime, str]:
    values = paging.decode(token)
    if len(values) != 3 or values[0] != participant or not isinstance(values[2], str):
        raise BadRequest("the paging cursor is not valid for this participant", code="value")
    return _aware(values[1]), values[2]


async def newest_rows(db: AsyncDatabase[Doc], participant: str, after: tuple[datetime, str] | None,
                      wanted: int) -> AsyncIterator[list[Row]]:
    """The participant's rows after `after` (all of them when None) in (at, thread)
    descending order, yielded a window at a time (each next window sized for `wanted`)."""
    now = datetime.now(UTC)
    high: datetime | None = after[0] if after else None
    high_included = True
    width, seen, spanned = FIRST_WINDOW, 0, timedelta(0)
    for step in range(MAX_WINDOWS + 1):
        top = high or now
        # The last window: every older row (also when this window would reach the epoch).
        last = step == MAX_WINDOWS or width >= top - store.EPOCH
        low = None if last else top - width
        if last:
            # Every older row, and any row written before last activity was kept (no `at`).
            docs = await store.rows_between(db, participant, None, None, high_included=True)
            rows = [r for r in map(_row, docs) if high is None or r.at < high or (
                high_included and r.at == high)]
        else:
            rows = [_row(d) for d in await store.rows_between(db, participant, low, high,
                                                              high_included=high_included)]
        if after is not None:
            rows = [r for r in rows if r.key() < after]
        rows.sort(key=Row.key, reverse=True)
        if rows:
            yield rows
        if last:
            return
        seen += len(rows)
        spanned += width
        high, high_included = low, False
        # Size the next window from the density so far (1.5 times what should hold `wanted`
        # rows, within MAX_GROWTH of this one). Before any row was seen, nothing is known:
        # grow by 4 while the windows are recent (a burst of activity, as a bench's, is not
        # read whole by one blind jump), by 16 further back (a quiet inbox is not read in
        # many small steps).
        if seen:
            guess = spanned * (1.5 * max(wanted - seen, 1) / seen)
            width = min(width * MAX_GROWTH, max(width * 2, guess))
        else:
            width = width * (4 if step < 4 else 16)


async def page(db: AsyncDatabase[Doc], participant: str, count: int, cursor: str | None,
               judge: Judge) -> Page:
    """Up to `count` threads of the participant the judge releases, newest activity first,
    after `cursor`; with a cursor for the next page when one more was released."""
    after = decode_cursor(participant, cursor) if cursor else None
    kept: list[Row] = []
    pending: list[Row] = []

    async def judged(rows: list[Row]) -> None:
        released = await judge([r.thread for r in rows])
        kept.extend(r for r in rows if r.thread in released)

    # count + 1 released rows tell whether a next page exists; judged as soon as there are
    # enough rows to fill the page, so a page is one judged read when nothing is refused.
    async for window in newest_rows(db, participant, after, count + 1):
        pending.extend(window)
        while pending and len(pending) >= count + 1 - len(kept):
            need = count + 1 - len(kept)
            chunk, pending = pending[:need], pending[need:]
            await judged(chunk)
            if len(kept) > count:
                return Page(kept[:count], encode_cursor(participant, kept[count - 1]))
    while pending and len(kept) <= count:
        need = count + 1 - len(kept)
        chunk, pending = pending[:need], pending[need:]
        await judged(chunk)
    if len(kept) > count:
        return Page(kept[:count], encode_cursor(participant, kept[count - 1]))
    return Page(kept, None)


async def beyond_total(db: AsyncDatabase[Doc], participant: str, judge: Judge) -> tuple[int, int]:
    """(threads with messages beyond the participant's furthest cursor, those messages), over
    the threads the judge releases only: every row that would count is judged first, a page's
    worth at a time, a few at once."""
    docs = await store.rows_between(db, participant, None, None, high_included=True)
    counting = [r for r in map(_row, docs) if r.beyond > 0]
    chunks = [counting[i:i + JUDGED_CHUNK] for i in range(0, len(counting), JUDGED_CHUNK)]
    gate = asyncio.Semaphore(TOTAL_JUDGED_AT_ONCE)

    async def judged(chunk: list[Row]) -> list[Row]:
        async with gate:
            released = await judge([r.thread for r in chunk])
        return [r for r in chunk if r.thread in released]

    counted = [r for rows in await asyncio.gather(*map(judged, chunks)) for r in rows]
    return len(counted), sum(r.beyond for r in counted)
