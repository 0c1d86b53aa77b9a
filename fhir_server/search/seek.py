"""Seek pagination over date sort keys: a page whose index lookups match about a page.

SecantusDB answers a query by materializing every document its index lookup matches, then
sorting and cutting to `limit`; a search sorted newest first over 200,000 matches therefore
costs 200,000 documents, whatever `_count` says. MongoDB walks an index in sort order and
stops at `limit`, but only when the index holds the filter's equalities followed by the sort
key. So a page is read as a series of *windows* on the first sort key K: each window is the
filter's equalities plus one range on K, which both databases serve from one compound index
(equalities, K) touching only the window's matches. Windows are read in sort order (newest
first for a descending sort) until the page is full; their widths adapt to how many matches
the previous window held.

Where to put the windows comes from a small directory of *buckets*: the UTC hours in which a
type holds some value of K (storage.sort_buckets, noted at write time). The walk jumps over
days without data in one window instead of galloping through them. The directory is only a
hint: windows always tile the whole axis (the first and last are open-ended), so a bucket
missing from it makes a page cost more, never lose a match.

A filter this cannot bound falls back to one query per page (storage.searches): a `$in`
with more than MAX_SPLIT values, several range operators, an access filter on fields outside
the index, or a sort key that is not a date.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server.search.engine import SearchEngine

Doc = dict[str, Any]
Key = list[tuple[str, int]]

# Date sort keys the buckets cover, per type ("*": every type). `ts` is meta.lastUpdated,
# the default sort; the others are the sort keys of the worklists' compound indexes.
BUCKETED: Mapping[str, tuple[str, ...]] = {
    "*": ("ts",),
    "Communication": ("sp.sent.s",),
}
# Fine enough that the empty end of the newest bucket costs little, coarse enough that a
# year is 8,760 directory entries per type and field.
BUCKET = timedelta(hours=1)
def first_width(rate: float | None, wanted: int) -> timedelta:
    """The first window for a page of `wanted`, from the rate (matches per hour) that the
    same kind of search saw before: half what should fill the page (growth does the rest,
    and a search with a denser value than the last one overshoots less)."""
    if not rate:
        return FIRST_WIDTH
    hours = min(max(0.5 * wanted / rate, 1 / 60), 24 * 365 * 10)
    return timedelta(hours=hours)


# The patient compartment field every `patient/` access filter tests (access.decision).
COMPARTMENT = "compartments.Patient"
# A `$in` over this many values or fewer is read as one walk per value, merged.
MAX_SPLIT = 8
FIRST_WIDTH = timedelta(minutes=15)
# Each later window is at most this many times wider than the one before; after an empty
# one, this many.
MAX_GROWTH = 16.0
EMPTY_GROWTH = 4.0
# When the rest of the axis is expected to hold at most this many matches (or four pages),
# it is read as one last window.
FEW = 64


def bucketed_fields(resource_type: str) -> tuple[str, ...]:
    return (*BUCKETED["*"], *BUCKETED.get(resource_type, ()))


def bucket_values(engine: SearchEngine, resource_type: str, resource: Doc | None,
                  last_updated: datetime) -> dict[str, list[datetime]]:
    """The values of a version that its buckets are noted from, by sort field."""
    out: dict[str, list[datetime]] = {"ts": [last_updated]}
    for field in BUCKETED.get(resource_type, ()):
        code = field.removeprefix("sp.").removesuffix(".s")
        param = engine.param(resource_type, code)
        if resource is None or param is None:
            continue
        value = engine.extractor.extract([param], resource).get(code)
        ranges = value if isinstance(value, list) else [value]
        out[field] = [r["s"] for r in ranges if isinstance(r, dict)
                      and isinstance(r.get("s"), datetime)]
    return out


def bucket_of(value: datetime) -> datetime:
    """The start of the UTC hour holding `value` (naive values are UTC, as the driver's)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, value.hour, tzinfo=UTC)


@dataclass(frozen=True)
class SeekPlan:
    field: str
    direction: int
    # One equality filter per value of a split `$in` (one, without `$in`).
    filters: list[Doc]
    # True: the range on K goes first in the filter, for an index that leads with K (a
    # search with no criteria, whose filter is only `del: false`): SecantusDB looks up the
    # first clause an index serves and tests the rest on what it found.
    lead: bool = False
    # The equality fields of the index that serves the windows, in its order (empty with
    # `lead`). A window's query holds them and the range on K only; the filter's other
    # equalities (`residual`) are tested here on what the index found, because SecantusDB
    # scans the whole collection for a filter naming a field its chosen index lacks.
    served: tuple[str, ...] = ()

    def window(self, flt: Doc, cond: Doc) -> Doc:
        """The query of one window: the served part of `flt` AND the range `cond` on the
        sort key, in the order the planner needs."""
        if self.lead:
            return {self.field: cond, **flt}
        return {**{name: flt[name] for name in self.served if name in flt}, self.field: cond}

    def residual(self, flt: Doc) -> Doc:
        """The equalities of `flt` a window's query leaves out (see `keeps`)."""
        if self.lead:
            return {}
        return {k: v for k, v in flt.items() if k not in self.served}


def keeps(doc: Doc, residual: Doc) -> bool:
    """Whether a stored document meets the equalities `residual` as the database would
    (a list at any step of the path matches when one of its values does)."""
    for dotted, wanted in residual.items():
        nodes: list[Any] = [doc]
        for part in dotted.split("."):
            nodes = [n.get(part) for n in nodes if isinstance(n, dict)]
            nodes = [x for n in nodes for x in (n if isinstance(n, list) else [n])]
        # Python's True == 1 and False == 0; BSON's booleans and numbers never match.
        if not any(n == wanted and isinstance(n, bool) == isinstance(wanted, bool)
                   for n in nodes):
            return False
    return True


def plan(resource_type: str, base: Doc, keys: Key,
         index_keys: Sequence[Sequence[tuple[str, int]]]) -> SeekPlan | None:
    """How to seek this search's pages, or None where windows would not be bounded.

    `base` must be equalities only (bare values) but for at most one `$in` of scalars, so
    that base + a range on K is the shape a compound index (equalities..., K) serves."""
    field, direction = keys[0]
    if field not in bucketed_fields(resource_type) or field in base:
        return None
    found = equalities(base)
    if found is None:
        return None
    eq, split = found
    fields = set(eq) | ({split[0]} if split else set())
    if fields == {"del"} and split is None:
        if any(k and k[0][0] == field for k in index_keys):
            return SeekPlan(field, direction, [eq], lead=True)
        return None
    served = _served(fields, field, index_keys) if fields else None
    if served is None:
        return None
    if split is None:
        return SeekPlan(field, direction, [eq], served=served)
    name, values = split
    return SeekPlan(field, direction, [{**eq, name: v} for v in dict.fromkeys(values)],
                    served=served)


def equalities(base: Doc) -> tuple[Doc, tuple[str, list[Any]] | None] | None:
    """`base` as its bare equalities and at most one `$in` of at most MAX_SPLIT scalars
    (field, values); None for anything else (an operator, a range, a list, a null)."""
    eq: Doc = {}
    split: tuple[str, list[Any]] | None = None
    for name, value in base.items():
        if name.startswith("$"):
            return None
        if isinstance(value, dict):
            values = value.get("$in")
            if (split is not None or set(value) != {"$in"} or not isinstance(values, list)
                    or not 0 < len(values) <= MAX_SPLIT
                    or any(isinstance(v, dict | list) or v is None for v in values)):
                return None
            split = (name, values)
        elif isinstance(value, list) or value is None:
            return None
        else:
            eq[name] = value
    return eq, split


def _served(fields: set[str], sort_field: str, index_keys: Sequence[Sequence[tuple[str, int]]]
            ) -> tuple[str, ...] | None:
    """The equality fields of the index (equalities..., K) that bounds a window of this
    filter, or None. An index holding every equality serves it. So does one holding only
    some, when what it leaves out cannot make a window examine more than a bounded set:
    `del` (false on all but tombstones), or anything once the index leads with the patient
    compartment (a window then examines at most one patient's resources of the type, in
    its span of K; that is the shape of every search under a `patient/` scope)."""
    best: tuple[str, ...] | None = None
    for key in index_keys:
        names = [k for k, _ in key]
        if sort_field not in names:
            continue
        prefix = tuple(names[: names.index(sort_field)])
        if not prefix or not set(prefix) <= fields:
            continue
        bounded = fields - set(prefix) <= {"del"} or prefix[0] == COMPARTMENT
        if bounded and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


class Windows:
    """Successive ranges on the sort key, in sort order, tiling the axis from the cursor on.

    The axis runs in sort order: for a descending sort "forward" is back in time. `starts`
    are the bucket starts. `after` is the cursor's sort value (inclusive: ties are dropped by
    the caller), None for a first page."""

    def __init__(self, direction: int, starts: Sequence[datetime], after: datetime | None,
                 now: datetime, first_width: timedelta = FIRST_WIDTH) -> None:
        self.direction = direction
        self.starts = starts  # ascending (SortBuckets.starts)
        self.width = first_width
        self.done = False
        self.first = True
        self.open_start = after is None
        self.found = 0  # matches the windows so far held
        if after is not None:
            self.edge: datetime | None = (
                after.replace(tzinfo=UTC) if after.tzinfo is None else after)
        elif self.starts:
            # A first page starts at the newest data (descending) or the oldest (ascending);
            # that first window is open towards where no bucket is, to catch unnoted values.
            self.edge = self.starts[-1] + BUCKET if direction < 0 else self.starts[0]
        else:
            self.edge = now if direction < 0 else None
        self.origin = self.edge  # where the walk began

    def _toward(self, point: datetime, width: timedelta) -> datetime:
        return point - width if self.direction < 0 else point + width

    def _near_ahead(self, position: datetime) -> datetime | None:
        """Where the next bucket with data begins, walking on from `position` (inside one:
        `position` itself); None past the last bucket."""
        if self.direction < 0:
            i = bisect_left(self.starts, position) - 1  # the latest start before position
            return None if i < 0 else min(self.starts[i] + BUCKET, position)
        i = bisect_right(self.starts, position - BUCKET)  # the first bucket ending after it
        return None if i >= len(self.starts) else max(self.starts[i], position)

    def next(self, found: int | None, wanted: int) -> Doc | None:
        """The next range (a condition on K), given the matches the previous one held and
        how many the page still wants; None when the axis is covered."""
        if self.done:
            return None
        if self.edge is None:  # ascending with no data noted: the whole axis at once
            self.done = True
            return {"$ne": None}
        if not self.first and found is not None:
            grow = EMPTY_GROWTH if found == 0 else min(MAX_GROWTH, max(1.0, 1.5 * wanted / found))
            self.width = self.width * grow
            self.found += found
        start = self.edge
        near = self._near_ahead(start)
        if near is None or (not self.first and self._few_left(start, wanted)):
            self.done = True
            return self._range(start, None, include_start=self.first)
        # Over a gap of the directory in one step: the window reaches `width` into the next
        # bucket with data.
        end = self._toward(near, self.width)
        if self.first and self.open_start:
            condition = self._range(None, end, include_start=True)
        else:
            condition = self._range(start, end, include_start=self.first)
        self.first = False
        self.edge = end
        return condition

    def rate(self, found: int, last: datetime | None = None) -> float | None:
        """Matches per hour of axis that holds data (the hours of the buckets the walk
        spanned; a gap of the directory counts nothing), given the `found` the walk's
        windows held; None when the walk says nothing about it.

        Counting the gaps too made a dense filter look sparse: at 1M Tasks, whose
        directory holds July 2025 and one hour of December 2026, the owner + status
        worklist's walk spanned 16 months for a page, so the rate said "few" and every
        later page ran as one query over the owner's 2,000 matches (142 ms of CPU)."""
        end = self._end(found, last)
        if end is None or self.origin is None:
            return None
        hours = data_hours(self.starts, min(self.origin, end), max(self.origin, end))
        return found / hours if hours > 0 else None

    def clock_rate(self, found: int, last: datetime | None = None) -> float | None:
        """Matches per hour of the axis the walk spanned, gaps included."""
        end = self._end(found, last)
        if end is None or self.origin is None:
            return None
        hours = abs((self.origin - end).total_seconds()) / 3600
        return found / hours if hours > 0 else None


    def _end(self, found: int, last: datetime | None) -> datetime | None:
        """Where the walk's `found` matches end: at `last`, the sort value of the last one
        served when the page filled (the window holding it was cut at the page, so its far
        end says nothing: counting up to it made every walk look sparser than the one
        before, until a dense owner's worklist at 1M Tasks ran as one 2,000-match query);
        else at the last window's end, or the directory's when the walk reached it."""
        if self.origin is None or self.edge is None or not found:
            return None
        if last is not None:
            return last.replace(tzinfo=UTC) if last.tzinfo is None else last
        if self.done and self.starts:  # the last window reached the end of the directory
            return self.starts[0] if self.direction < 0 else self.starts[-1] + BUCKET
        return self.edge

    def _few_left(self, position: datetime, wanted: int) -> bool:
        """True when the rest of the axis, at the rate seen so far, holds few enough matches
        for one last open window: a sparse filter then pays one query, not many windows.
        Both spans are counted in buckets, the directory's measure of how much data lies
        where (a gap of a year counts nothing)."""
        if self.origin is None:
            return False
        here, origin = bisect_left(self.starts, position), bisect_left(self.starts, self.origin)
        covered, rest = (origin - here, here) if self.direction < 0 else (
            here - origin, len(self.starts) - here)
        if covered < 1:
            # No bucket read whole yet (the first window fell in the empty end of the newest
            # bucket): nothing says the rest is sparse. Taking it for sparse read all of
            # `Task?status=requested` at 20k Tasks (4,000 documents for a page of 10).
            return False
        expected = (self.found + 1) * rest / max(1, covered)
        return expected <= max(FEW, 4 * wanted)

    def _range(self, start: datetime | None, end: datetime | None, *, include_start: bool) -> Doc:
        """The condition for [start, end) along the axis; None bounds are open.

        Bounds are whole milliseconds (BSON's precision) and always exclusive: `>= x` is
        written `> x - 1 ms`. The same documents on any database, and SecantusDB 0.7 drops
        the documents equal to an inclusive bound on a compound index whose range field has
        more fields after it (`{r: 1, s: -1, _id: -1}` with `s: {$gte: x}` misses s == x)."""
        cond: Doc = {}
        low: datetime | None
        high: datetime | None
        if self.direction < 0:  # [end, start] or [end, start) in time
            low, high = end, start
            high_inclusive, low_inclusive = include_start, True
        else:  # [start, end) in time
            low, high = start, end
            high_inclusive, low_inclusive = False, True
        if low is not None:
            cond["$gt"] = _ms(low) - MS if low_inclusive else _ms(low)
        if high is not None:
            cond["$lt"] = _ms(high) + MS if high_inclusive else _ms(high)
        return cond or {"$ne": None}


MS = timedelta(milliseconds=1)


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def expected(rate: float | None, starts: Sequence[datetime], after: datetime | None,
             direction: int, clock_rate: float | None = None) -> float | None:
    """How many matches the rest of the axis holds, or None: the larger of two guesses,
    `rate` (matches per hour of data, `Windows.rate`) over the hours of data left, and
    `clock_rate` (per hour, gaps included) over the hours left. Each is low where the
    other is not: per hour of data is low when the part not walked is denser per bucket,
    per hour when the walk spanned a gap the rest does not hold. A page runs as one query
    only when both say few."""
    if rate is None or not starts:
        return None
    top, bottom = starts[-1] + BUCKET, starts[0]
    if after is not None:
        after = after.replace(tzinfo=UTC) if after.tzinfo is None else after
        top, bottom = (min(top, after), bottom) if direction < 0 else (top, max(bottom, after))
    guess = rate * data_hours(starts, bottom, top)
    if clock_rate is not None:
        guess = max(guess, clock_rate * max(0.0, (top - bottom).total_seconds() / 3600))
    return guess


def data_hours(starts: Sequence[datetime], low: datetime, high: datetime) -> float:
    """Hours of [low, high) that fall in a bucket of the directory (`starts` ascending)."""
    if high <= low:
        return 0.0
    first = bisect_right(starts, low - BUCKET)  # the first bucket ending after `low`
    last = bisect_left(starts, high)  # past the last bucket starting before `high`
    if first >= last:
        return 0.0
    seconds = (last - first) * BUCKET.total_seconds()
    seconds -= max(0.0, (low - starts[first]).total_seconds())
    seconds -= max(0.0, (starts[last - 1] + BUCKET - high).total_seconds())
    return seconds / 3600
