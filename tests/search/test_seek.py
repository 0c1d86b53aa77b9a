"""Seek pagination (fhir_server.search.seek): pages read window by window on the sort key.

Proved here: every page holds exactly what a full sort would put there (both directions,
ties, missing values, gaps of years, previous links, a split `$in`, the bare type search);
the bucket directory is only a hint (a wrong or missing one changes no result); and the
documents the database examines for a page stay near the page size whatever the match count
(counted with the database's own explain, for every query the server sent)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pymongo import MongoClient, monitoring

from fhir_server.search import seek
from fhir_server.storage.sort_buckets import SORT_BUCKETS
from tests.conftest import RunningServer, make_settings
from tests.subscriptions.conftest import wait_until

PAGE = 7


class FindRecorder(monitoring.CommandListener):
    """Records the `find` commands the in-process server sends while `on` is set."""

    def __init__(self) -> None:
        self.on = False
        self.finds: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.command_name == "find":
            with self.lock:
                self.finds.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


RECORDER = FindRecorder()
monitoring.register(RECORDER)  # before the module's server creates its client


@pytest.fixture(scope="module")
def seek_server(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(make_settings(mongodb_uri, database="fhir_seek")) as running:
        yield running


def sent_values() -> list[str | None]:
    """Dense days in 1991, a gap of years, a sparser stretch in 1995, ties, and no value."""
    base = datetime(1991, 3, 4, 6, 0, tzinfo=UTC)
    dense = [base + timedelta(minutes=7 * i) for i in range(150)]
    sparse = [datetime(1995, 6, 1, tzinfo=UTC) + timedelta(hours=5 * i) for i in range(60)]
    tie = [datetime(1993, 1, 1, 12, 0, tzinfo=UTC)] * 6
    stamps: list[str | None] = [d.strftime("%Y-%m-%dT%H:%M:%SZ") for d in dense + sparse + tie]
    return stamps + [None] * 5


def communication(n: int, recipient: str, sent: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Communication", "id": f"c{n:03d}",
                                "status": "completed",
                                "recipient": [{"reference": recipient}]}
    if sent:
        resource["sent"] = sent
    return resource


def put_all(http: httpx.Client, resources: list[dict[str, Any]]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources]}
    r = http.post("/", json=bundle)
    assert r.status_code == 200, r.text[:500]


@pytest.fixture(scope="module")
def loaded(seek_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=seek_server.settings.base_url, timeout=120) as http:
        mine = [communication(n, "Practitioner/r1", s) for n, s in enumerate(sent_values())]
        # Others' messages in the same days: the filter, not the directory, keeps them out.
        noise = [communication(500 + n, "Practitioner/r2", s)
                 for n, s in enumerate(sent_values()[::3])]
        put_all(http, mine + noise)
        yield http


def walk(http: httpx.Client, url: str) -> list[list[str]]:
    pages: list[list[str]] = []
    next_url: str | None = url
    while next_url:
        r = http.get(next_url)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([e["resource"]["id"] for e in body.get("entry", [])])
        link = next((x["url"] for x in body.get("link", []) if x["relation"] == "next"), None)
        next_url = _local(link) if link else None
        assert len(pages) < 200
    return pages


def _local(url: str) -> str:
    parts = urlsplit(url)
    return parts.path.split("/fhir", 1)[1] + "?" + parts.query


def expected(descending: bool) -> list[str]:
    rows = [(s, f"c{n:03d}") for n, s in enumerate(sent_values())]
    valued = sorted((r for r in rows if r[0]), reverse=descending)
    missing = sorted((r for r in rows if not r[0]), reverse=descending)
    ordered = valued + missing if descending else missing + valued
    return [rid for _, rid in ordered]


@pytest.mark.parametrize("sort", ["-sent", "sent"])
def test_pages_hold_what_a_full_sort_puts_there(loaded: httpx.Client, sort: str) -> None:
    pages = walk(loaded, f"/Communication?recipient=Practitioner/r1&_sort={sort}&_count={PAGE}")
    assert all(len(p) == PAGE for p in pages[:-1])
    assert [rid for page in pages for rid in page] == expected(sort.startswith("-"))


def test_previous_link_returns_the_page_before(loaded: httpx.Client) -> None:
    url = f"/Communication?recipient=Practitioner/r1&_sort=-sent&_count={PAGE}"
    first = loaded.get(url).json()
    second = loaded.get(_local(next(x["url"] for x in first["link"]
                                    if x["relation"] == "next"))).json()
    third = loaded.get(_local(next(x["url"] for x in second["link"]
                                   if x["relation"] == "next"))).json()
    back = loaded.get(_local(next(x["url"] for x in third["link"]
                                  if x["relation"] == "previous"))).json()
    assert [e["resource"]["id"] for e in back["entry"]] == [
        e["resource"]["id"] for e in second["entry"]]


def test_the_directory_holds_the_hours_written(loaded: httpx.Client,
                                              mongo: MongoClient[dict[str, Any]]) -> None:
    def hours() -> set[str]:
        return {f"{d['d']:%Y-%m-%d}T{h:02d}" for d in mongo["fhir_seek"][SORT_BUCKETS].find(
                {"t": "Communication", "f": "sp.sent.s"}) for h in d["h"]}

    wait_until(lambda: {"1991-03-04T06", "1993-01-01T12", "1995-06-01T00",
                        "1995-06-13T07"} <= hours(), what="buckets of the sent hours")


def examined(mongo: MongoClient[dict[str, Any]], finds: list[dict[str, Any]],
             collection: str, database: str = "fhir_seek") -> int:
    """Documents the database examined for the recorded finds on `collection`."""
    total = 0
    for find in finds:
        if find.get("find") != collection:
            continue
        command = {k: v for k, v in find.items()
                   if k in ("find", "filter", "sort", "limit", "projection")}
        stats = mongo[database].command("explain", command, verbosity="executionStats")
        total += stats["executionStats"]["totalDocsExamined"]
    return total


def test_a_page_examines_about_a_page(loaded: httpx.Client,
                                      mongo: MongoClient[dict[str, Any]]) -> None:
    url = f"/Communication?recipient=Practitioner/r1&_sort=-sent&_count={PAGE}"
    middle = _local(next(x["url"] for x in loaded.get(url).json()["link"]
                         if x["relation"] == "next"))
    for page in (url, middle):
        RECORDER.finds.clear()
        RECORDER.on = True
        try:
            assert loaded.get(page).status_code == 200
        finally:
            RECORDER.on = False
        # 221 matches; a page of 7 (+1 to know there is a next) may examine a few windows.
        assert examined(mongo, RECORDER.finds, "Communication") <= 6 * (PAGE + 1), \
            RECORDER.finds


def test_a_wrong_directory_changes_no_result(mongodb_uri: str,
                                             mongo: MongoClient[dict[str, Any]]) -> None:
    settings = make_settings(mongodb_uri, database="fhir_seek_hint")
    with RunningServer(settings) as running, httpx.Client(
            base_url=running.settings.base_url, timeout=120) as http:
        put_all(http, [communication(n, "Practitioner/r1", s)
                       for n, s in enumerate(sent_values())])
        buckets = mongo["fhir_seek_hint"][SORT_BUCKETS]
        wait_until(lambda: buckets.count_documents({"f": "sp.sent.s"}) >= 4, what="buckets")
        # Forget the newest and the 1993 days, invent one in 2031 and one in 1980.
        buckets.delete_many({"f": "sp.sent.s", "d": {"$gte": datetime(1993, 1, 1, tzinfo=UTC)}})
        for day in (datetime(2031, 1, 1, tzinfo=UTC), datetime(1980, 5, 5, tzinfo=UTC)):
            buckets.insert_one({"_id": f"bogus{day.year}", "t": "Communication",
                                "f": "sp.sent.s", "d": day})
        for sort in ("-sent", "sent"):
            pages = walk(http, f"/Communication?recipient=Practitioner/r1&_sort={sort}"
                               f"&_count={PAGE}")
            assert [rid for p in pages for rid in p] == expected(sort.startswith("-"))


def test_split_in_and_bare_type_search_page_in_order(seek_server: RunningServer) -> None:
    with httpx.Client(base_url=seek_server.settings.base_url, timeout=120) as http:
        tasks = [{"resourceType": "Task", "id": f"t{n:03d}", "intent": "order",
                  "status": ["requested", "in-progress", "completed"][n % 3],
                  "owner": {"reference": f"Practitioner/o{n % 2}"}} for n in range(60)]
        for chunk in (tasks[:20], tasks[20:40], tasks[40:]):
            put_all(http, chunk)
        assert http.delete("/Task/t001").status_code == 200
        everything = http.get("/Task?_count=500").json()["entry"]
        stamp = {e["resource"]["id"]: e["resource"]["meta"]["lastUpdated"] for e in everything}
        status = {e["resource"]["id"]: e["resource"]["status"] for e in everything}
        owner = {e["resource"]["id"]: e["resource"]["owner"]["reference"] for e in everything}

        def newest_first(ids: list[str]) -> list[str]:
            return [i for _, i in sorted(((stamp[i], i) for i in ids), reverse=True)]

        worklist = walk(http, "/Task?owner=Practitioner/o0&status=requested,in-progress"
                              "&_sort=-_lastUpdated&_count=4")
        assert [i for p in worklist for i in p] == newest_first(
            [i for i in stamp if owner[i] == "Practitioner/o0"
             and status[i] in ("requested", "in-progress")])
        broad = walk(http, "/Task?status=requested&_count=3")
        assert [i for p in broad for i in p] == newest_first(
            [i for i in stamp if status[i] == "requested"])
        bare = walk(http, "/Task?_count=9")
        assert [i for p in bare for i in p] == newest_first(list(stamp))
        assert "t001" not in stamp


def test_a_patient_scoped_search_is_sought(
        secure: Callable[..., httpx.Client], mint: Callable[..., str],
        secure_server: RunningServer, mongo: MongoClient[dict[str, Any]]) -> None:
    """Under a `patient/` scope the access filter adds the patient's compartment, a field the
    worklist indexes do not hold. The portal's "my messages, newest first" is still read
    window by window (over the index (compartments.Patient, sent)) and a page examines
    about a page, not the patient's whole list; the pages hold exactly her messages."""
    admin = secure(mint("system/*.cruds"))
    def message(n: int, patient: str, sent: str | None) -> dict[str, Any]:
        # A thread's participants alone may read it (docs/messaging.md): she is one.
        return {**communication(n, "Practitioner/r1", sent),
                "subject": {"reference": patient},
                "recipient": [{"reference": "Practitioner/r1"}, {"reference": patient}]}

    mine = [message(n, "Patient/anna", s) for n, s in enumerate(sent_values())]
    others = [message(500 + n, "Patient/ben", s) for n, s in enumerate(sent_values())]
    for chunk in range(0, len(mine + others), 150):
        put_all(admin, (mine + others)[chunk: chunk + 150])
    app = secure(mint("patient/Communication.rs", patient="anna"))
    url = f"/Communication?_sort=-sent&_count={PAGE}"
    pages = walk(app, url)
    assert [i for p in pages for i in p] == expected(True)
    middle = _local(next(x["url"] for x in app.get(url).json()["link"]
                         if x["relation"] == "next"))
    for page in (url, middle):
        RECORDER.finds.clear()
        RECORDER.on = True
        try:
            assert app.get(page).status_code == 200
        finally:
            RECORDER.on = False
        # 221 of anna's messages (and 221 of ben's): one query examines all of hers.
        assert examined(mongo, RECORDER.finds, "Communication",
                        secure_server.settings.database) <= 6 * (PAGE + 1), RECORDER.finds


def test_a_patient_scoped_worklist_pages_in_order(
        secure: Callable[..., httpx.Client], mint: Callable[..., str]) -> None:
    """`Task?status=requested` under a `patient/` scope: sought over (compartments.Patient,
    ts), every page holds exactly the patient's matches, newest first."""
    admin = secure(mint("system/*.cruds"))
    tasks = [{"resourceType": "Task", "id": f"pt{n:03d}", "intent": "order",
              "status": "requested" if n % 4 else "completed",
              "for": {"reference": f"Patient/{'anna' if n % 3 else 'ben'}"}}
             for n in range(120)]
    for chunk in range(0, len(tasks), 40):
        put_all(admin, tasks[chunk: chunk + 40])
    # A tombstone keeps its compartment and ts: the window finds it, the server drops it.
    assert admin.delete("/Task/pt001").status_code == 200
    everything = admin.get("/Task?_count=500").json()["entry"]
    stamp = {e["resource"]["id"]: e["resource"]["meta"]["lastUpdated"] for e in everything}
    status = {e["resource"]["id"]: e["resource"]["status"] for e in everything}
    anna = [t["id"] for t in tasks if t["for"]["reference"] == "Patient/anna"
            and t["id"] in stamp]

    def newest_first(ids: list[str]) -> list[str]:
        return [i for _, i in sorted(((stamp[i], i) for i in ids), reverse=True)]

    app = secure(mint("patient/Task.rs", patient="anna"))
    pages = walk(app, f"/Task?status=requested&_count={PAGE}")
    assert [i for p in pages for i in p] == newest_first(
        [i for i in anna if status[i] == "requested"])
    # No criteria (the filter's `del: false` is left to the server) and a split `$in`.
    assert [i for p in walk(app, f"/Task?_count={PAGE}") for i in p] == newest_first(anna)
    both = walk(app, f"/Task?status=requested,completed&_count={PAGE}")
    assert [i for p in both for i in p] == newest_first(anna)


# ---------------------------------------------------------------- the plan and the windows

INDEXES = [[("sp.owner", 1), ("sp.status", 1), ("ts", -1)], [("sp.status", 1), ("ts", -1)],
           [("ts", -1), ("_id", -1)], [("compartments.Patient", 1), ("ts", -1)]]


def test_plan_splits_an_in_and_refuses_what_windows_cannot_bound() -> None:
    keys = [("ts", -1), ("_id", -1)]
    planned = seek.plan("Task", {"sp.owner": "o", "sp.status": {"$in": ["a", "b"]}}, keys,
                        INDEXES)
    assert planned is not None
    assert planned.filters == [{"sp.owner": "o", "sp.status": "a"},
                               {"sp.owner": "o", "sp.status": "b"}]
    assert seek.plan("Task", {"del": False}, keys, INDEXES) is not None
    assert seek.plan("Task", {"sp.owner": "o"}, keys, INDEXES) is None  # no (owner, ts)
    assert seek.plan("Task", {"sp.status": "a", "$and": [{}]}, keys, INDEXES) is None
    assert seek.plan("Task", {"sp.status": {"$gt": "a"}}, keys, INDEXES) is None
    assert seek.plan("Task", {"sp.status": "a"}, [("sp.code", 1), ("_id", 1)], INDEXES) is None
    # A patient's compartment bounds what a window examines, whatever else the filter holds;
    # the fields the index does not hold go after the range, tested on what it found.
    scoped = seek.plan("Task", {"sp.status": "a", "compartments.Patient": "p"}, keys, INDEXES)
    assert scoped is not None and scoped.served == ("compartments.Patient",)
    assert scoped.window(scoped.filters[0], {"$lt": 1}) == {
        "compartments.Patient": "p", "ts": {"$lt": 1}}
    assert scoped.residual(scoped.filters[0]) == {"sp.status": "a"}
    assert seek.keeps({"sp": {"status": ["b", "a"]}}, {"sp.status": "a"})
    assert not seek.keeps({"sp": {"status": "b"}}, {"sp.status": "a"})
    assert not seek.keeps({"del": True}, {"del": False})
    assert not seek.keeps({"del": 0}, {"del": False})
    assert not seek.keeps({"sp": {"code": 1}}, {"sp.code": True})
    assert seek.keeps({"sp": [{"code": "x"}, {"code": "a"}]}, {"sp.code": "a"})
    # Not the other way round: an index without the compartment would examine every
    # patient's matches to find one patient's.
    assert seek.plan("Task", {"sp.owner": "o", "sp.status": "a", "compartments.Patient": "p"},
                     keys, INDEXES[:2]) is None


@pytest.mark.parametrize("direction", [-1, 1])
@pytest.mark.parametrize("cursor", [None, datetime(1994, 2, 2, tzinfo=UTC)])
def test_windows_tile_the_axis(direction: int, cursor: datetime | None) -> None:
    starts = [datetime(1991, 3, 4, tzinfo=UTC), datetime(1991, 3, 5, tzinfo=UTC),
              datetime(1995, 6, 1, tzinfo=UTC), datetime(1995, 6, 9, tzinfo=UTC)]
    windows = seek.Windows(direction, starts, cursor, datetime(2026, 1, 1, tzinfo=UTC))
    conditions = []
    for found in [0, 3, 0, 1, 0, 0, 5, 0] * 20:
        condition = windows.next(found, 8)
        if condition is None:
            break
        conditions.append(condition)
    assert conditions and windows.next(0, 8) is None
    probes = [datetime(1900, 1, 1, tzinfo=UTC) + timedelta(hours=977 * i) for i in range(1500)]
    for probe in probes + starts + ([cursor] if cursor else []):
        held = [c for c in conditions if _holds(c, probe)]
        behind = cursor is not None and (probe > cursor if direction < 0 else probe < cursor)
        assert len(held) == (0 if behind else 1), (probe, held)


def _holds(condition: dict[str, Any], value: datetime) -> bool:
    tests = {"$lt": value.__lt__, "$lte": value.__le__, "$gt": value.__gt__,
             "$gte": value.__ge__}
    return all(tests[op](bound) for op, bound in condition.items() if op != "$ne")
