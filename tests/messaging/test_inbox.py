"""The inbox, `Communication/$render-state?participant=`, paged like every FHIR search: a page
of threads by last activity with a `next` link, and on request the threads and messages
beyond the participant's furthest cursor over every thread the access decision releases.
Only threads the decision releases are answered or counted, however the inbox rows say."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.messaging import activity, store
from fhir_server.messaging import inbox as inbox_rows
from fhir_server.operations import render
from fhir_server.storage import paging
from tests.conftest import RunningServer
from tests.consent.conftest import actor, classes, consent
from tests.messaging.conftest import TAG, World, fast_settings, message, part, ref
from tests.messaging.test_render_cursors import set_cursor, thread_with_messages


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def inbox(client: httpx.Client, who: str, **params: str) -> dict[str, Any]:
    reply = client.get("/Communication/$render-state", params={"participant": who, **params})
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def threads(answer: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for t in part(answer, "thread"):
        values = {p["name"]: p for p in t["part"]}
        out.append((values["thread"]["valueReference"]["reference"].split("/")[1],
                    values["messages"]["valueInteger"], values["beyond"]["valueInteger"]))
    return out


def top(answer: dict[str, Any], name: str) -> Any:
    found = [p for p in answer["parameter"] if p["name"] == name]
    if not found:
        return None
    return next(v for k, v in found[0].items() if k.startswith("value"))


def next_params(answer: dict[str, Any]) -> dict[str, str] | None:
    link = top(answer, "next")
    if link is None:
        return None
    return {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


def walk(client: httpx.Client, who: str, **params: str) -> list[list[tuple[str, int, int]]]:
    pages = []
    answer = inbox(client, who, **params)
    while True:
        pages.append(threads(answer))
        following = next_params(answer)
        if following is None:
            return pages
        assert following["participant"] == who
        answer = inbox(client, **{"who": who, **{k: v for k, v in following.items() if k != "participant"}})


def test_the_inbox_is_paged_by_last_activity_with_a_next_link(world: World) -> None:
    made = [thread_with_messages(world, n) for n in (1, 2, 1, 3, 1)]
    gp, anna = world.person("gray", "ehr"), world.person("anna", "portal")
    # The oldest thread gets a new message: it is now the most recently active.
    oldest = made[0][0]
    assert gp.post("/Communication", json=message(oldest, "news")).status_code == 201
    assert set_cursor(anna, made[3][0], world.ref("anna"), made[3][1][1]).status_code == 200
    expected = [(oldest, 2, 2), (made[4][0], 1, 1), (made[3][0], 3, 1), (made[2][0], 1, 1), (made[1][0], 2, 2)]
    assert walk(anna, world.ref("anna"), _count="2") == [expected[0:2], expected[2:4], expected[4:5]]
    # One page of everything (the default count is 50): no next link, no total unless asked.
    whole = inbox(anna, world.ref("anna"))
    assert threads(whole) == expected and top(whole, "next") is None and top(whole, "beyond") is None
    first = part(whole, "thread")[0]
    assert any(p["name"] == "lastActivity" and p["valueInstant"] for p in first["part"])
    # The total: threads with messages beyond Anna's furthest cursor, and those messages.
    counted = inbox(anna, world.ref("anna"), _count="1", _total="accurate")
    assert (top(counted, "threadsBeyond"), top(counted, "beyond")) == (5, 7)
    assert next_params(counted) is not None and next_params(counted)["_total"] == "accurate"  # type: ignore[index]
    # Bad paging input is a 400 with an OperationOutcome, never a 500.
    for bad in ({"_count": "0"}, {"_count": "101"}, {"_count": "x"}, {"_cursor": "garbage"},
                {"_total": "maybe"}, {"_sort": "beyond"}):
        reply = anna.get("/Communication/$render-state", params={"participant": world.ref("anna"), **bad})
        assert reply.status_code == 400, (bad, reply.text)
        assert reply.json()["resourceType"] == "OperationOutcome"
    # A cursor of Anna's inbox does not page the GP's.
    cursor = next_params(inbox(anna, world.ref("anna"), _count="1"))["_cursor"]  # type: ignore[index]
    reply = gp.get("/Communication/$render-state", params={"participant": world.ref("gray"), "_cursor": cursor})
    assert reply.status_code == 400, reply.text


def test_pages_and_totals_count_only_the_threads_the_access_decision_releases(
        world: World, mongo: MongoClient[dict[str, Any]], messaging_server: RunningServer) -> None:
    """Clara's inbox rows stay when she is taken off a thread and when Anna's Consent denies
    her: the rows are only numbers, the access decision on the headers decides."""
    kept, _ = thread_with_messages(world, 2)
    removed, _ = thread_with_messages(world, 1)
    clara, gp = world.person("clara", "portal"), world.person("gray", "ehr")
    assert [t[0] for t in threads(inbox(clara, world.ref("clara"), _total="accurate"))] == [removed, kept]
    # The GP takes Clara off the newest thread: she is no participant of it any more.
    header = gp.get(f"/Communication/{removed}").json()
    header["recipient"] = [ref(world.ref("anna")), ref(f"CareTeam/team{world.u}")]
    reply = gp.put(f"/Communication/{removed}", json=header)
    assert reply.status_code == 200, reply.text
    assert gp.post("/Communication", json=message(removed, "without Clara")).status_code == 201
    db = mongo[messaging_server.settings.database]
    # Her row went with her, in the header's transaction; one left behind (as by a process
    # that died between two writes of an older version) is only a number: put it back.
    row = {"participant": world.ref("clara"), "thread": removed}
    assert db[store.INBOX].find_one(row) is None
    db[store.INBOX].insert_one({"_id": f"{removed}|{world.ref('clara')}", **row, "seq": 2, "furthest": 0,
                                "at": datetime.now(UTC)})
    answer = inbox(clara, world.ref("clara"), _count="1", _total="accurate")
    assert threads(answer) == [(kept, 2, 2)] and top(answer, "next") is None
    assert (top(answer, "threadsBeyond"), top(answer, "beyond")) == (1, 2)
    # Anna's Consent denies Clara her Communications: nothing is answered or counted, at once.
    anna = world.person("anna", "portal")
    reply = anna.post("/Consent", json=consent({"type": "deny", "actor": [actor(world.ref("clara"))],
                                                "class": classes("Communication")}, patient=f"anna{world.u}"))
    assert reply.status_code == 201, reply.text
    denied = inbox(clara, world.ref("clara"), _total="accurate")
    assert threads(denied) == [] and top(denied, "next") is None
    assert (top(denied, "threadsBeyond"), top(denied, "beyond")) == (0, 0)
    # A system client asking for her inbox is judged by its own decision (no Consent names it).
    portal = world.system("portal")
    assert [t[0] for t in threads(inbox(portal, world.ref("clara")))] == [kept]
    # Dr. Paul takes part in nothing: his inbox is empty, and Anna's is not his to ask for.
    paul = world.person("paul", "ehr")
    assert threads(inbox(paul, world.ref("paul"), _total="accurate")) == []
    assert paul.get("/Communication/$render-state", params={"participant": world.ref("anna")}).status_code == 403


def test_threads_written_before_inbox_rows_were_kept_are_listed(
        world: World, mongo: MongoClient[dict[str, Any]], messaging_server: RunningServer) -> None:
    thread_id, _ = thread_with_messages(world, 2)
    db = mongo[messaging_server.settings.database]
    # As before the rows existed: none for Anna, no mark that hers were made, and a database
    # that held threads before it kept rows.
    db[store.INBOX].delete_many({"participant": world.ref("anna")})
    db[store.READY].delete_many({"_id": world.ref("anna")})
    decided = db[store.READY].find_one_and_update({"_id": store.FROM_THE_START}, {"$set": {"kept": False}},
                                                  upsert=True)
    render._READY.clear()
    kept = set(store._KEPT)
    store._KEPT.clear()  # what this server decided at its start, as the document now says
    try:
        anna = world.person("anna", "portal")
        assert threads(inbox(anna, world.ref("anna"))) == [(thread_id, 2, 2)]
        assert db[store.READY].find_one({"_id": world.ref("anna")}) is not None
    finally:
        db[store.READY].replace_one({"_id": store.FROM_THE_START}, decided or {"kept": False}, upsert=True)
        store._KEPT |= kept


def test_a_database_that_keeps_rows_from_its_first_thread_has_nothing_to_catch_up(
        mongodb_uri: str, mongo: MongoClient[dict[str, Any]]) -> None:
    """Decided once, when a server first prepares the database: with no thread stored yet,
    every row and activity time is kept from the start, and a participant's first page reads
    no catch-up (no per-participant mark, no backfill of older rows). A database that
    already held a thread keeps the catch-ups."""
    fresh, old = unique_name("fhir_inbox_fresh"), unique_name("fhir_inbox_old")
    mongo[old]["Communication"].insert_one(
        {"_id": "legacy", "sp": {"_tag|": [f"{TAG}|thread"]}, "del": False})
    try:
        for name in (fresh, old):
            with RunningServer(fast_settings(mongodb_uri, name, auth_enabled=True)):
                pass
        assert mongo[fresh][store.READY].find_one({"_id": store.FROM_THE_START})["kept"] is True
        assert mongo[old][store.READY].find_one({"_id": store.FROM_THE_START})["kept"] is False
        # Decided once: a thread stored since does not turn the fresh database into an old one.
        mongo[fresh]["Communication"].insert_one({"_id": "t", "sp": {"_tag|": [f"{TAG}|thread"]}, "del": False})
        with RunningServer(fast_settings(mongodb_uri, fresh, auth_enabled=True)):
            pass
        assert mongo[fresh][store.READY].find_one({"_id": store.FROM_THE_START})["kept"] is True
    finally:
        mongo.drop_database(fresh)
        mongo.drop_database(old)


def test_a_first_page_on_a_database_kept_from_the_start_catches_nothing_up(
        world: World, mongo: MongoClient[dict[str, Any]], messaging_server: RunningServer) -> None:
    thread_id, _ = thread_with_messages(world, 2)
    db = mongo[messaging_server.settings.database]
    assert db[store.READY].find_one({"_id": store.FROM_THE_START}) is not None  # this server decided
    db[store.READY].delete_many({"_id": world.ref("anna")})
    render._READY.clear()
    anna = world.person("anna", "portal")
    assert threads(inbox(anna, world.ref("anna"))) == [(thread_id, 2, 2)]
    # No catch-up ran: it leaves the participant's mark.
    assert db[store.READY].find_one({"_id": world.ref("anna")}) is None


def test_pages_keep_the_order_of_last_activity_across_windows_far_apart(
        world: World, mongo: MongoClient[dict[str, Any]], messaging_server: RunningServer) -> None:
    """Threads last active a second, a minute, an hour, days, years ago and never (a row
    written before activity was kept): every page and the order of the whole walk are those
    of last activity, whichever windows the rows fall in."""
    made = [thread_with_messages(world, 1)[0] for _ in range(7)]
    db = mongo[messaging_server.settings.database]
    now = datetime.now(UTC)
    ages = [timedelta(seconds=1), timedelta(seconds=1), timedelta(seconds=70), timedelta(hours=1),
            timedelta(days=3), timedelta(days=800)]
    for thread_id, age in zip(made, ages, strict=False):
        db[store.INBOX].update_one({"participant": world.ref("anna"), "thread": thread_id},
                                   {"$set": {"at": now - age}})
    db[store.INBOX].update_one({"participant": world.ref("anna"), "thread": made[6]}, {"$unset": {"at": ""}})
    anna = world.person("anna", "portal")
    # The two of the same second in thread id order (descending), as the cursor pages.
    first_two = sorted(made[:2], reverse=True)
    expected = [*first_two, *made[2:]]
    for count in ("1", "2", "3", "50"):
        pages = walk(anna, world.ref("anna"), _count=count)
        assert [t[0] for p in pages for t in p] == expected, count
        assert all(len(p) == int(count) for p in pages[:-1])
    # The times noted of Anna's activity (which the rows above no longer match) are a hint:
    # lost, emptied, wrong by days either way or a full list of times to come, every page is
    # the same.
    hints = db[activity.ACTIVITY]
    soon = [now + timedelta(days=1, seconds=i) for i in range(activity.RECENT)]
    for state in ({}, {"at": [], "backfilled": True},
                  {"at": [now + timedelta(days=1), now - timedelta(days=400)], "backfilled": True},
                  {"at": soon, "backfilled": True}):
        hints.delete_one({"_id": world.ref("anna")})
        if state:
            hints.insert_one({"_id": world.ref("anna"), **state})
        for count in ("1", "3", "50"):
            pages = walk(anna, world.ref("anna"), _count=count)
            assert [t[0] for p in pages for t in p] == expected, (state, count)


# ------------------------------------------------------------------ a burst of activity


def rows_read(server: RunningServer, who: str, count: int, cursor: str | None = None) -> int:
    """How many inbox rows a page of `count` reads (its windows, until one more than a page
    came back: every thread here is released)."""
    settings = server.settings

    async def work() -> int:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
        try:
            after = inbox_rows.decode_cursor(who, cursor) if cursor else None
            read = 0
            async for window in inbox_rows.newest_rows(client[settings.database], who, after, count + 1):
                read += len(window)
                if read > count:
                    break
            return read
        finally:
            await client.close()

    return asyncio.run(work())


def burst(world: World, n: int) -> list[str]:
    """`n` threads the GP opens in one transaction Bundle: all active within moments."""
    gp = world.person("gray", "ehr")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": world.thread_header(), "request": {"method": "POST", "url": "Communication"}}
        for _ in range(n)]}
    reply = gp.post("/", json=bundle)
    assert reply.status_code == 200, reply.text
    return [e["response"]["location"].split("/")[1] for e in reply.json()["entry"]]


def test_a_burst_of_activity_is_read_a_page_at_a_time(
        world: World, mongo: MongoClient[dict[str, Any]], messaging_server: RunningServer) -> None:
    """36 threads active within moments, five minutes ago: a page of 10 reads the 11 rows it
    needs, not the burst (which a window of last activity placed blindly reads whole)."""
    made = burst(world, 36)
    db = mongo[messaging_server.settings.database]
    anna = world.ref("anna")
    # As if the burst had happened five minutes ago: every row's last activity and every time
    # noted of it moved back alike (the server's own bookkeeping; nothing else changes).
    back = timedelta(minutes=5)
    for row in db[store.INBOX].find({"participant": anna}):
        db[store.INBOX].update_one({"_id": row["_id"]}, {"$set": {"at": row["at"] - back}})
    noted = db[activity.ACTIVITY].find_one({"_id": anna}) or {}
    # (Noted already: rows older than the first time the server noted are not taken for
    # rows of before the hint, whose times the first page notes once.)
    db[activity.ACTIVITY].update_one({"_id": anna}, {"$set": {"at": [{**e, "t": e["t"] - back}
                                                                     for e in noted.get("at", [])],
                                                              "backfilled": True}})
    assert len(noted.get("at", [])) == 36  # one time per thread opened
    # The rows at or after the 11th newest activity: 11, and any that share its millisecond
    # (headers of one Bundle may).
    times = sorted((r["at"] for r in db[store.INBOX].find({"participant": anna})), reverse=True)
    assert rows_read(messaging_server, anna, 10) == len([t for t in times if t >= times[10]]) < 16
    # Every page in order of last activity; the next pages read about a page each too.
    expected = [r["thread"] for r in sorted(db[store.INBOX].find({"participant": anna}),
                                            key=lambda r: (r["at"], r["thread"]), reverse=True)]
    assert sorted(expected) == sorted(made)
    client = world.person("anna", "portal")
    answer, pages = inbox(client, anna, _count="10"), []
    while True:
        pages.append([t[0] for t in threads(answer)])
        following = next_params(answer)
        if following is None:
            break
        assert rows_read(messaging_server, anna, 10, following["_cursor"]) <= 2 * 11
        answer = inbox(client, anna, _count="10", _cursor=following["_cursor"])
    assert [t for p in pages for t in p] == expected and [len(p) for p in pages] == [10, 10, 10, 6]


def test_sixteen_messages_at_once_to_one_thread_are_all_numbered_and_noted(
        world: World, mongo: MongoClient[dict[str, Any]], messaging_server: RunningServer) -> None:
    thread_id, _ = thread_with_messages(world, 0)
    gp = world.person("gray", "ehr")
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: gp.post("/Communication", json=message(thread_id, f"at once {i}")),
                                range(16)))
    assert [r.status_code for r in replies] == [201] * 16, [r.text for r in replies if r.status_code != 201]
    db = mongo[messaging_server.settings.database]
    numbers = sorted(m["seq"] for m in db[store.MESSAGES].find({"thread": thread_id}))
    assert numbers == list(range(1, 17))
    # Every participant's row has the last number, and each of their activities was noted.
    rows = {r["participant"]: r["seq"] for r in db[store.INBOX].find({"thread": thread_id})}
    assert rows == {p: 16 for p in (world.ref("anna"), world.ref("clara"), world.ref("gray"),
                                    f"CareTeam/team{world.u}", world.ref("chen"))}
    for participant in rows:
        noted = (db[activity.ACTIVITY].find_one({"_id": participant}) or {}).get("at", [])
        # Each note pulls the thread's older entry, then pushes; notes racing may leave two.
        assert 1 <= [e["r"] for e in noted].count(thread_id) <= 17, participant
    assert threads(inbox(world.person("anna", "portal"), world.ref("anna"))) == [(thread_id, 16, 16)]
    # The next message leaves each participant one entry for the thread: its last activity.
    assert gp.post("/Communication", json=message(thread_id, "after")).status_code == 201
    last = db[store.INBOX].find_one({"thread": thread_id, "participant": world.ref("anna")})
    for participant in rows:
        noted = (db[activity.ACTIVITY].find_one({"_id": participant}) or {}).get("at", [])
        assert [e["t"] for e in noted if e["r"] == thread_id] == [last["at"]], participant


def test_a_long_conversation_in_one_thread_does_not_crowd_the_hint(
        world: World, mongo: MongoClient[dict[str, Any]], messaging_server: RunningServer) -> None:
    """36 threads opened at once, then 70 messages in one of them (more than the hint keeps):
    the hint keeps a thread once, at its last activity, so a page of 10 still reads about 11
    rows. Noted per message, the 70 filled the hint with that one thread, and the page read
    every row of the burst."""
    made = burst(world, 36)
    anna, db = world.ref("anna"), mongo[messaging_server.settings.database]
    talk = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": message(made[0], f"talk {i}"), "request": {"method": "POST", "url": "Communication"}}
        for i in range(activity.RECENT + 6)]}
    assert world.person("gray", "ehr").post("/", json=talk).status_code == 200
    noted = [e["r"] for e in (db[activity.ACTIVITY].find_one({"_id": anna}) or {}).get("at", [])]
    assert noted.count(made[0]) == 1 and set(made) <= set(noted)
    times = sorted((r["at"] for r in db[store.INBOX].find({"participant": anna})), reverse=True)
    assert rows_read(messaging_server, anna, 10) == len([t for t in times if t >= times[10]]) < 16
    page = threads(inbox(world.person("anna", "portal"), anna, _count="10"))
    assert page[0] == (made[0], activity.RECENT + 6, activity.RECENT + 6)
    assert {t[0] for t in page} <= set(made)


def test_a_cursor_without_the_span_still_pages_and_a_bad_span_is_refused(world: World) -> None:
    """A cursor issued before the cursor carried its page's span (three values) pages as
    before; a signed cursor whose span is not a count of milliseconds is a 400."""
    made = [thread_with_messages(world, 1)[0] for _ in range(3)]
    anna, who = world.person("anna", "portal"), world.ref("anna")
    pages = walk(anna, who, _count="1")
    assert [t[0] for p in pages for t in p] == made[::-1]
    first = inbox(anna, who, _count="1")
    cursor = inbox_rows.decode_cursor(who, next_params(first)["_cursor"])  # type: ignore[index]
    assert cursor.span is not None
    old = paging.encode([who, cursor.at, cursor.thread])
    assert [t[0] for t in threads(inbox(anna, who, _count="2", _cursor=old))] == made[1::-1]
    for span in (-1, True, 1.5, "x"):
        bad = paging.encode([who, cursor.at, cursor.thread, span])
        reply = anna.get("/Communication/$render-state", params={"participant": who, "_cursor": bad})
        assert reply.status_code == 400, (span, reply.text)
        assert reply.json()["resourceType"] == "OperationOutcome"
