"""A participant's inbox, a page at a time: their threads by last activity, newest first.

The inbox is paged like every FHIR search (`_count`, a `next` link), so the one access
decision judges a page of threads, not every thread the participant ever took part in:

- the participant's inbox rows (`messaging_inbox`, one per thread: last message number,
  furthest cursor, last activity) are read **window by window of last activity**, each
  window a pair of bounds on the (participant, at) index. The embedded database reads every
  match of a query before it sorts or limits, so a sorted, limited query over 1,000 rows
  costs what reading them all costs; a window of bounds reads only the rows inside it. The
  first window is placed by the times of the participant's newest activities
  (fhir_server.messaging.activity): from the page's `count + 1`-th newest on, it holds at
  most that many rows, whether the activity was spread over years or came in one burst.
  Past what those times cover, each next window is sized from the density the earlier ones
  (or the page before, its cursor says) saw;
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
from fhir_server.messaging import activity, store
from fhir_server.messaging.threads import TAG_SYSTEM, THREAD
from fhir_server.storage import paging

Doc = dict[str, Any]
DEFAULT_COUNT = 50
MAX_COUNT = 100  # the judged read's `$in` grows quadratically in the embedded database
JUDGED_CHUNK = 50
TOTAL_JUDGED_AT_ONCE = 4
FIRST_WINDOW = timedelta(seconds=2)
MIN_WIDTH = timedelta(milliseconds=1)  # BSON dates are whole milliseconds
MAX_GROWTH = 16  # a window at most this many times wider than the one before
MAX_WINDOWS = 8  # then one last read of every older row


async def prepare(db: AsyncDatabase[Doc]) -> None:
    """At start-up: on a database that keeps rows and activity from its first thread on, no
    participant's first page has anything to catch up (store.decide_from_the_start)."""
    await store.decide_from_the_start(db, f"{TAG_SYSTEM}|{THREAD}")


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


@dataclass(frozen=True)
class Resume:
    """Where a next page starts: after its last row's (last activity, thread), and how long
    a stretch of activity that page's rows covered (their density: the next page's first
    window is sized by it)."""
    at: datetime
    thread: str
    span: timedelta | None = None

    def key(self) -> tuple[datetime, str]:
        return (self.at, self.thread)


def encode_cursor(participant: str, after: Row, span: timedelta | None = None) -> str:
    values: list[Any] = [participant, after.at, after.thread]
    if span is not None:
        values.append(round(span / timedelta(milliseconds=1)))
    return paging.encode(values)


def decode_cursor(participant: str, token: str) -> Resume:
    values = paging.decode(token)
    # Three values: a cursor of a server before the span was kept (still valid).
    if len(values) not in (3, 4) or values[0] != participant or not isinstance(values[2], str):
        raise BadRequest("the paging cursor is not valid for this participant", code="value")
    span = values[3] if len(values) == 4 else None
    if span is not None and (isinstance(span, bool) or not isinstance(span, int) or span < 0):
        raise BadRequest("the paging cursor is not valid for this participant", code="value")
    return Resume(_aware(values[1]), values[2], timedelta(milliseconds=span) if span is not None else None)


def _hinted_low(recent: list[datetime], high: datetime | None, wanted: int) -> tuple[datetime | None, bool]:
    """The low bound of a window below `high` (inclusive) that holds at most `wanted` rows:
    the `wanted`-th newest noted activity at or below it (each row's last activity is one of
    those times), and whether that is the oldest time noted. None when none lies there."""
    below = [t for t in recent if high is None or t <= high]
    if not below:
        return None, False
    return below[min(wanted, len(below)) - 1], len(below) <= wanted


async def newest_rows(db: AsyncDatabase[Doc], participant: str, after: Resume | None,
                      wanted: int) -> AsyncIterator[list[Row]]:
    """The participant's rows after `after` (all of them when None) in (at, thread)
    descending order, yielded a window at a time (each next window sized for `wanted`).

    The first window is placed by the participant's noted activity (messaging.activity):
    from their `wanted`-th newest activity time on, which holds at most `wanted` rows however
    the activity is spread (a burst of a thousand threads within a second included). Past
    what the hint covers, a window is sized from the density of the rows seen so far, else
    from the density of the page before (the cursor's span), else blindly."""
    now = datetime.now(UTC)
    noted = await activity.recent(db, participant)
    if not noted.backfilled and store.kept_from_the_start(db):
        noted = activity.Recent(noted.times, True)  # every time was noted: nothing to backfill
    elif not noted.backfilled:
        # Once per participant: their rows from before the server noted activity.
        began = await activity.since(db)
        docs = await store.rows_between(db, participant, None, began, high_included=False)
        noted = await activity.backfill(db, participant, [(row.thread, row.at) for row in map(_row, docs)])
    high: datetime | None = after.at if after else None
    high_included = True
    hinted, oldest = _hinted_low(noted.times, high, wanted)
    # Below a window down to the oldest time of a whole hint lies only what a lost note left
    # out: read in one last window.
    hint_whole = oldest and noted.whole
    span = after.span if after is not None else None
    width = FIRST_WINDOW if span is None else max(span * 1.5, MIN_WIDTH)
    seen = 0
    newest: datetime | None = None  # the newest row seen: the density is measured from it
    for step in range(MAX_WINDOWS + 1):
        top = high or now
        if step == 0 and hinted is not None:
            low: datetime | None = min(hinted, top)
            last = False
        else:
            # The last window: every older row (also when this window would reach the epoch).
            last = step == MAX_WINDOWS or width >= top - store.EPOCH or (hint_whole and step > 0)
            low = None if last else top - width
        if last:
            # Every older row, and any row written before last activity was kept (no `at`).
            rows = [_row(d) for d in await store.rows_before(db, participant, high, high_included=high_included)]
        else:
            rows = [_row(d) for d in await store.rows_between(db, participant, low, high,
                                                              high_included=high_included)]
        if after is not None:
            rows = [r for r in rows if r.key() < after.key()]
        rows.sort(key=Row.key, reverse=True)
        if rows:
            yield rows
        if last or low is None:
            return
        seen += len(rows)
        if rows and newest is None:
            newest = rows[0].at
        read = top - low
        if newest is not None:
            # The stretch that held rows, not the quiet one above the newest row.
            read = max(min(read, newest - low), MIN_WIDTH)
        high, high_included = low, False
        # Size the next window from the density so far: 1.5 times what should hold the rows
        # still wanted, within MAX_GROWTH of this one, and at least twice this one after an
        # empty window (however sparse the rows get, the windows reach them in a few steps).
        # Before any row was seen, nothing is known: grow by 4 while the windows are recent
        # (a burst of activity is not read whole by one blind jump), by 16 further back (a
        # quiet inbox is not read in many small steps).
        if seen and newest is not None:
            spanned = max(newest - low, MIN_WIDTH)
            guess = spanned * (1.5 * max(wanted - seen, 1) / seen)
            width = min(read * MAX_GROWTH, max(guess, MIN_WIDTH, read * 2 if not rows else MIN_WIDTH))
        else:
            width = read * (4 if step < 4 else 16)


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
                return _page(participant, kept, count)
    while pending and len(kept) <= count:
        need = count + 1 - len(kept)
        chunk, pending = pending[:need], pending[need:]
        await judged(chunk)
    return _page(participant, kept, count)


def _page(participant: str, kept: list[Row], count: int) -> Page:
    """The first `count` released rows, with a cursor when one more was released (carrying
    how long a stretch of activity the page covered)."""
    if len(kept) <= count:
        return Page(kept, None)
    span = kept[0].at - kept[count - 1].at
    return Page(kept[:count], encode_cursor(participant, kept[count - 1], span))


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
