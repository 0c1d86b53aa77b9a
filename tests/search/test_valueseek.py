"""Seek pagination over string, token and number sort keys (fhir_server.search.valueseek).

Proved here: every page of `_sort` on a token (`Task?_sort=status`, with and without an
owner) and on a string (`Patient?_sort=family`, with missing names) holds exactly what a
full sort puts there, in both directions and back through `previous` links, whatever the
splitter directory says (none, the true one, or one that is wrong everywhere); a heavy value
is read on `ts` windows and light stretches as one range each, so a page examines about a
page (counted by the database's own explain) where the plain query examined every match;
writes note the directory; and the walk's steps tile the value axis exactly once, for
strings and numbers, from any cursor."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.search import valueseek
from fhir_server.storage.sort_values import SAMPLE, SORT_VALUES, sampled, value_update
from tests.conftest import RunningServer, make_settings
from tests.helpers import wipe
from tests.search.test_seek import RECORDER, _local, examined, put_all, walk
from tests.subscriptions.conftest import wait_until

PAGE = 7
DB = "fhir_vseek"
STATUSES = ["requested"] * 9 + ["in-progress"] * 3 + ["completed"] * 2 + ["on-hold"]
FAMILIES = [f"fam{n:03d}" for n in range(40)]


@pytest.fixture(scope="module")
def server(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(make_settings(mongodb_uri, database=DB)) as running:
        yield running


@pytest.fixture(scope="module")
def loaded(server: RunningServer) -> Iterator[tuple[httpx.Client, dict[str, dict[str, Any]]]]:
    """150 Tasks (status: 90 requested, 30 in-progress, 20 completed, 10 on-hold; two
    owners) and 130 Patients (40 family names, some shared, 10 without a name), written in
    chunks so that their `ts` differ; returns each resource as stored, by id."""
    rng = random.Random(16)
    tasks = [{"resourceType": "Task", "id": f"t{n:03d}", "intent": "order",
              "status": STATUSES[n % len(STATUSES)],
              "owner": {"reference": f"Practitioner/o{n % 2}"}} for n in range(150)]
    patients = [{"resourceType": "Patient", "id": f"p{n:03d}",
                 **({"name": [{"family": rng.choice(FAMILIES).title()}]} if n % 13 else {})}
                for n in range(130)]
    rng.shuffle(tasks)
    with httpx.Client(base_url=server.settings.base_url, timeout=120) as http:
        for chunk in range(0, 150, 15):
            put_all(http, tasks[chunk: chunk + 15])
        for chunk in range(0, 130, 26):
            put_all(http, patients[chunk: chunk + 26])
        stored = {e["resource"]["id"]: e["resource"] for rtype in ("Task", "Patient")
                  for e in http.get(f"/{rtype}?_count=500").json()["entry"]}
        yield http, stored


def expected(stored: dict[str, dict[str, Any]], rtype: str, key: Any, descending: bool,
             keep: Any = lambda r: True) -> list[str]:
    """Ids in the order of the sort: by key (missing first ascending, last descending),
    then lastUpdated, then id, all in the sort's direction."""
    rows = [(key(r), r["meta"]["lastUpdated"], r["id"]) for r in stored.values()
            if r["resourceType"] == rtype and keep(r)]
    valued = sorted((r for r in rows if r[0] is not None), reverse=descending)
    missing = sorted(((r[1], r[2]) for r in rows if r[0] is None), reverse=descending)
    ids = [r[2] for r in valued]
    return ids + [r[1] for r in missing] if descending else [r[1] for r in missing] + ids


def family(r: dict[str, Any]) -> str | None:
    return r["name"][0]["family"].lower() if r.get("name") else None


CASES = [
    ("/Task?_sort={s}status", "Task", lambda r: r["status"], lambda r: True),
    ("/Task?owner=Practitioner/o1&_sort={s}status", "Task", lambda r: r["status"],
     lambda r: r["owner"]["reference"] == "Practitioner/o1"),
    ("/Patient?_sort={s}family", "Patient", family, lambda r: True),
]


def directories(mongo: MongoClient[dict[str, Any]]) -> dict[str, Any]:
    """Splitter directories to page under: what the writes noted, none, the truth with
    every count (rebuilt from the data at SAMPLE 1), and one wrong everywhere."""
    values = mongo[DB][SORT_VALUES]

    def truth() -> None:
        wipe(mongo[DB], lambda name: name != SORT_VALUES)
        tasks = list(mongo[DB]["Task"].find({"del": False}, {"sp.status": 1}))
        patients = list(mongo[DB]["Patient"].find({"del": False}, {"sp.family": 1}))
        counts: dict[tuple[str, str, Any], int] = {}
        for rtype, field, docs in (("Task", "sp.status", tasks),
                                   ("Patient", "sp.family", patients)):
            for doc in docs:
                value = valueseek.values_at(doc, field) or [None]
                counts[(rtype, field, value[0])] = counts.get((rtype, field, value[0]), 0) + 1
        values.bulk_write([value_update(t, f, v, n) for (t, f, v), n in counts.items()])

    def wrong() -> None:
        wipe(mongo[DB], lambda name: name != SORT_VALUES)
        # Heavy where light, light where heavy, values that exist nowhere, a missing group
        # said to be heavy, and most real values forgotten.
        values.bulk_write([
            value_update("Task", "sp.status", "requested", 1),
            value_update("Task", "sp.status", "aaa", 5000),
            value_update("Task", "sp.status", "on-hold", 9000),
            value_update("Task", "sp.status", "zzz", 3),
            value_update("Patient", "sp.family", "fam010", 9000),
            value_update("Patient", "sp.family", "fam0105", 2),
            value_update("Patient", "sp.family", "m", 1),
            value_update("Patient", "sp.family", None, 9000),
        ])

    return {"noted": lambda: None, "none": lambda: wipe(mongo[DB], lambda name: name != SORT_VALUES),
            "truth": truth, "wrong": wrong}


@pytest.mark.parametrize("directory", ["noted", "none", "truth", "wrong"])
def test_pages_hold_what_a_full_sort_puts_there(
        loaded: tuple[httpx.Client, dict[str, dict[str, Any]]], mongodb_uri: str,
        mongo: MongoClient[dict[str, Any]], directory: str) -> None:
    _, stored = loaded
    directories(mongo)[directory]()
    # A server of its own: it reads the directory afresh (a process trusts its read a while).
    with RunningServer(make_settings(mongodb_uri, database=DB)) as running, httpx.Client(
            base_url=running.settings.base_url, timeout=120) as http:
        for url, rtype, key, keep in CASES:
            for sign in ("", "-"):
                pages = walk(http, url.format(s=sign) + f"&_count={PAGE}")
                assert all(len(p) == PAGE for p in pages[:-1]), (url, sign)
                assert [i for p in pages for i in p] == expected(
                    stored, rtype, key, bool(sign), keep), (directory, url, sign)
                assert back(http, url.format(s=sign) + f"&_count={PAGE}") == pages[-2::-1]


def back(http: httpx.Client, url: str) -> list[list[str]]:
    """The pages before the last one, walking `previous` links from it."""
    body = http.get(url).json()
    while nxt := next((x["url"] for x in body.get("link", []) if x["relation"] == "next"),
                      None):
        body = http.get(_local(nxt)).json()
    pages = []
    while prev := next((x["url"] for x in body.get("link", [])
                        if x["relation"] == "previous"), None):
        body = http.get(_local(prev)).json()
        pages.append([e["resource"]["id"] for e in body.get("entry", [])])
    return pages


def test_a_page_examines_about_a_page(
        loaded: tuple[httpx.Client, dict[str, dict[str, Any]]], mongodb_uri: str,
        mongo: MongoClient[dict[str, Any]]) -> None:
    """With the directory right, a page of a token or string sort examines about a page;
    the same pages with seek off examine every match (150 Tasks, 130 Patients), twice for a
    later page (the cursor's value, then the rest)."""
    directories(mongo)["truth"]()
    cost: dict[str, list[int]] = {}
    for label, extra in (("seek", {}), ("seek off", {"search_seek": False})):
        with RunningServer(make_settings(mongodb_uri, database=DB, **extra)) as running, \
                httpx.Client(base_url=running.settings.base_url, timeout=120) as http:
            cost[label] = []
            for url in ("/Task?_sort=status", "/Patient?_sort=family",
                        "/Patient?_sort=-family"):
                first = http.get(f"{url}&_count={PAGE}").json()
                second = _local(next(x["url"] for x in first["link"]
                                     if x["relation"] == "next"))
                for page in (f"{url}&_count={PAGE}", second):
                    RECORDER.finds.clear()
                    RECORDER.on = True
                    try:
                        assert http.get(page).status_code == 200
                    finally:
                        RECORDER.on = False
                    cost[label].append(sum(examined(mongo, RECORDER.finds, rtype, DB)
                                           for rtype in ("Task", "Patient")))
    # A light value (at most HEAVY resources) is read whole, and a page that starts inside
    # one re-reads it once past the ties already served: still about a page.
    assert max(cost["seek"]) <= 6 * (PAGE + 1), cost
    assert min(cost["seek off"]) >= 100, cost


def test_writes_note_the_directory(mongodb_uri: str, mongo: MongoClient[dict[str, Any]]) -> None:
    """A sampled resource's write adds SAMPLE to its value (and to the missing group when
    it has none); an unsampled one notes nothing."""
    ids = [f"n{k}" for k in range(5000) if sampled(f"n{k}")][:4]
    quiet = next(f"q{k}" for k in range(5000) if not sampled(f"q{k}"))
    database = "fhir_vseek_notes"
    with RunningServer(make_settings(mongodb_uri, database=database)) as running, \
            httpx.Client(base_url=running.settings.base_url, timeout=120) as http:
        put_all(http, [
            {"resourceType": "Task", "id": ids[0], "intent": "order", "status": "on-hold"},
            {"resourceType": "Task", "id": ids[1], "intent": "order", "status": "on-hold"},
            {"resourceType": "Task", "id": ids[2], "intent": "order", "status": "requested"},
            {"resourceType": "Task", "id": quiet, "intent": "order", "status": "cancelled"},
            {"resourceType": "Patient", "id": ids[3]}])
        values = mongo[database][SORT_VALUES]

        def noted() -> dict[tuple[str, Any], int]:
            return {(d["t"], d["v"]): d["n"] for d in values.find({})}

        wait_until(lambda: noted() == {("Task", "on-hold"): 2 * SAMPLE,
                                       ("Task", "requested"): SAMPLE,
                                       ("Patient", None): SAMPLE},
                   what="the sampled values noted")


# ---------------------------------------------------------------- the walk, pure

def _matches(cond: Any, value: Any) -> bool:
    if not isinstance(cond, dict):
        return value == cond
    if "$ne" in cond:
        return value is not None
    return value is not None and ("$gte" not in cond or value >= cond["$gte"]) and (
        "$lt" not in cond or value < cond["$lt"])


@pytest.mark.parametrize("kind", ["str", "float"])
@pytest.mark.parametrize("direction", [1, -1])
def test_the_walk_tiles_the_axis_once_in_order(kind: str, direction: int) -> None:
    rng = random.Random(f"{kind}{direction}")
    for _ in range(60):
        if kind == "str":
            universe: list[Any] = sorted({"".join(rng.choice("abc") for _ in range(
                rng.randint(1, 3))) for _ in range(40)})
            universe += [u + "\x00" for u in universe[:5]]
        else:
            universe = sorted({float(rng.randint(-20, 20)) / rng.choice([1, 4])
                               for _ in range(40)})
            universe += [valueseek.successor(u) for u in universe[:5]]
        universe = sorted(set(universe))
        splitters = [(v, float(rng.choice([1, 64, 640, 64_000])))
                     for v in rng.sample(universe, rng.randint(0, min(8, len(universe))))]
        missing = float(rng.choice([0, 64, 64_000]))
        order = sorted(universe, reverse=direction < 0)
        order = [None, *order] if direction > 0 else [*order, None]
        at = rng.randrange(len(order) + 1)
        cursor = None if at == len(order) else [order[at]]
        later = order if cursor is None else order[at:]
        walk = valueseek.ValueWalk(direction, splitters, missing, cursor)
        steps = []
        while (step := walk.next(rng.choice([1, 8, 51]))) is not None:
            steps.append(step)
            assert len(steps) < 100
        position = []
        for value in later:
            hits = [i for i, s in enumerate(steps) if _step_holds(s, value)]
            assert len(hits) == 1, (value, steps, splitters, cursor)
            position.append(hits[0])
        assert position == sorted(position), (steps, splitters, cursor)


def _step_holds(step: valueseek.Step, value: Any) -> bool:
    if step.heavy:
        return step.value == value and (value is None) == (step.value is None)
    if step.cond is None:  # the light missing group
        return value is None
    return _matches(step.cond, value)


def test_an_empty_first_window_does_not_take_the_rest_for_sparse() -> None:
    """The newest hour's data ended before its last 15 minutes, so the first window of
    `Task?status=requested` finds nothing: the next one is a window, not "the rest in one
    query" (which read all 4,000 requested Tasks at 20k, for a page of 10)."""
    from datetime import UTC, datetime, timedelta

    from fhir_server.search import seek

    starts = [datetime(2025, 7, 1, h, tzinfo=UTC) for h in range(17)]
    windows = seek.Windows(-1, starts, None, datetime(2026, 12, 1, tzinfo=UTC))
    assert windows.next(None, 11) == {"$gt": datetime(2025, 7, 1, 16, 45, tzinfo=UTC)
                                      - timedelta(milliseconds=1)}
    second = windows.next(0, 11)
    assert second is not None and "$gt" in second and not windows.done
