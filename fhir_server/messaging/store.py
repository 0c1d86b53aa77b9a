"""The messaging bookkeeping collections the server maintains beside the resources.

- `messaging_threads`: per thread, `seq`, the number of its last message. Messages are
  numbered 1, 2, 3 ... in commit order by an `$inc` inside the message's own transaction, so
  "how many lie beyond a cursor" is a subtraction.
- `messaging_messages`: per message its thread, number, sender and participants.
- `messaging_render`: per (thread, participant) the furthest cursor over all sources, kept
  in the render state's own transaction (the render state resource is the truth; this is
  its index for the inbox and the alert decision).
- `messaging_inbox`: per (participant, thread) the thread's last message number (`seq`), the
  participant's furthest cursor (`furthest`) and the thread's last activity (`at`: its last
  message's commit, else the header's), kept in the transactions of the header, of each
  message and of each render state change. The inbox pages a participant's rows by last
  activity through the (participant, at) index, window by window (fhir_server.messaging.inbox),
  placed by the times of each participant's newest activities (`messaging_activity`, a hint
  written after the commit: fhir_server.messaging.activity).
- `messaging_grants`: per (participant, client) the authorization the server last verified
  when the participant acted in a thread through that client (posting, setting their
  cursor, opening their inbox). The alert decision asks the access decision as the
  participant with these grants, and with none it alerts no one (fail closed).
- `messaging_alert_claims`: one document per (message, participant) alerted, taken before the
  alert is written: a unique `_id` makes two processes one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]
THREADS = "messaging_threads"
MESSAGES = "messaging_messages"
RENDER = "messaging_render"
INBOX = "messaging_inbox"
GRANTS = "messaging_grants"
CLAIMS = "messaging_alert_claims"
# The last activity of a row whose thread's activity is not known (written before it was kept).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROW_FIELDS = {"thread": 1, "seq": 1, "furthest": 1, "at": 1}


def messaging_indexes() -> dict[str, list[IndexModel]]:
    return {
        MESSAGES: [IndexModel([("thread", ASCENDING), ("seq", ASCENDING)], name="thread_seq")],
        RENDER: [IndexModel([("participant", ASCENDING)], name="participant"),
                 IndexModel([("thread", ASCENDING)], name="thread")],
        # (participant, at): the inbox's windows of last activity are bounds on this index.
        INBOX: [IndexModel([("participant", ASCENDING), ("at", DESCENDING)], name="participant_at"),
                IndexModel([("thread", ASCENDING)], name="thread")],
        GRANTS: [IndexModel([("participant", ASCENDING)], name="participant")],
        # `Communication?participant=` (the inbox's access-checked query, and a client's own
        # search for their threads) reads this index instead of scanning every Communication.
        "Communication": [IndexModel([("sp.participant", ASCENDING)], name="s_sp_participant")],
    }


def render_key(thread_id: str, participant: str) -> str:
    return f"{thread_id}|{participant}"


async def number_message(db: AsyncDatabase[Doc], session: AsyncClientSession, thread_id: str,
                         message_id: str, sender: str | None, participants: list[str],
                         client_id: str | None) -> tuple[int, datetime]:
    """Gives a new message the next number of its thread (in the message's transaction);
    returns it and the thread's new last activity."""
    now = datetime.now(UTC)
    doc = await db[THREADS].find_one_and_update(
        {"_id": thread_id}, {"$inc": {"seq": 1}, "$max": {"at": now}}, upsert=True,
        return_document=True, session=session)
    seq = int((doc or {}).get("seq", 1))
    await db[MESSAGES].insert_one(
        {"_id": message_id, "thread": thread_id, "seq": seq, "sender": sender,
         "participants": participants, "client": client_id, "at": now}, session=session)
    # Every participant's inbox row of the thread learns the new last number and activity:
    # one update.
    await db[INBOX].update_many({"thread": thread_id}, {"$max": {"seq": seq, "at": now}}, session=session)
    return seq, now


async def open_rows(db: AsyncDatabase[Doc], session: AsyncClientSession | None, thread_id: str,
                    participants: list[str], *, quiet_since: datetime | None = None) -> datetime:
    """An inbox row per participant of a header just written (kept rows are left as they are;
    a participant added later starts from the thread's current last number). The thread's
    last activity is its last message's, else now (the header's write), else `quiet_since`
    for a row made up afterwards (fhir_server.messaging.inbox's rows for older threads).
    Returns that last activity."""
    held = await db[THREADS].find_one({"_id": thread_id}, session=session)
    seq = int((held or {}).get("seq", 0))
    at = _activity(held) or quiet_since or datetime.now(UTC)
    for participant in participants:
        await db[INBOX].update_one(
            {"_id": render_key(thread_id, participant)},
            {"$setOnInsert": {"thread": thread_id, "participant": participant, "furthest": 0},
             "$max": {"seq": seq, "at": at}},
            upsert=True, session=session)
    return at


async def close_rows(db: AsyncDatabase[Doc], session: AsyncClientSession | None, thread_id: str,
                     participants: list[str]) -> None:
    """The rows of participants taken off a thread."""
    if participants:
        await db[INBOX].delete_many({"_id": {"$in": [render_key(thread_id, p) for p in participants]}},
                                    session=session)


def _activity(thread: Doc | None) -> datetime | None:
    at = (thread or {}).get("at")
    return at if isinstance(at, datetime) else None


async def rows_between(db: AsyncDatabase[Doc], participant: str, low: datetime | None,
                       high: datetime | None, *, high_included: bool) -> list[Doc]:
    """The participant's inbox rows whose last activity lies in [low, high] (or [low, high)):
    bounds on the (participant, at) index. Not access checked."""
    bound: Doc = {}
    if low is not None:
        bound["$gte"] = low
    if high is not None:
        bound["$lte" if high_included else "$lt"] = high
    query: Doc = {"participant": participant, "at": bound} if bound else {"participant": participant}
    return await db[INBOX].find(query, _ROW_FIELDS).to_list()


async def rows_before(db: AsyncDatabase[Doc], participant: str, high: datetime | None, *,
                      high_included: bool) -> list[Doc]:
    """The participant's inbox rows last active before `high` (at or before it when
    `high_included`; every row when None), and the rows whose last activity is not known
    (written before it was kept): two bounds on the (participant, at) index, not a read of
    every row. Not access checked."""
    if high is None:
        return await db[INBOX].find({"participant": participant}, _ROW_FIELDS).to_list()
    older = await rows_between(db, participant, None, high, high_included=high_included)
    unknown = await db[INBOX].find({"participant": participant, "at": None}, _ROW_FIELDS).to_list()
    return older + unknown


async def message(db: AsyncDatabase[Doc], message_id: str) -> Doc | None:
    return await db[MESSAGES].find_one({"_id": message_id})


async def messages_of(db: AsyncDatabase[Doc], thread_id: str) -> list[Doc]:
    return await db[MESSAGES].find({"thread": thread_id}).sort("seq", ASCENDING).to_list()


async def latest(db: AsyncDatabase[Doc], thread_ids: list[str]) -> dict[str, int]:
    return {d["_id"]: int(d.get("seq", 0)) async for d in db[THREADS].find({"_id": {"$in": thread_ids}})}


async def put_render(db: AsyncDatabase[Doc], session: AsyncClientSession | None, thread_id: str,
                     participant: str, furthest: int, resource_id: str) -> None:
    await db[RENDER].update_one(
        {"_id": render_key(thread_id, participant)},
        {"$set": {"thread": thread_id, "participant": participant, "furthest": furthest,
                  "resource": resource_id}},
        upsert=True, session=session)
    held = await db[THREADS].find_one({"_id": thread_id}, session=session)
    await db[INBOX].update_one(
        {"_id": render_key(thread_id, participant)},
        {"$set": {"thread": thread_id, "participant": participant, "furthest": furthest},
         "$max": {"seq": int((held or {}).get("seq", 0)), "at": _activity(held) or EPOCH}},
        upsert=True, session=session)


async def drop_render(db: AsyncDatabase[Doc], session: AsyncClientSession | None, resource_id: str) -> None:
    async for doc in db[RENDER].find({"resource": resource_id}, session=session):
        await db[INBOX].update_one({"_id": doc["_id"]}, {"$set": {"furthest": 0}}, session=session)
    await db[RENDER].delete_many({"resource": resource_id}, session=session)


async def furthest(db: AsyncDatabase[Doc], participant: str, thread_ids: list[str]) -> dict[str, int]:
    query: Doc = {"participant": participant, "thread": {"$in": thread_ids}}
    return {d["thread"]: int(d.get("furthest", 0)) async for d in db[RENDER].find(query)}


async def claim(db: AsyncDatabase[Doc], message_id: str, participant: str, owner: str) -> bool:
    """Takes the alert claim of (message, participant); False when someone holds it already
    (another process, or an earlier firing whose alert is written)."""
    try:
        await db[CLAIMS].insert_one({"_id": f"{message_id}|{participant}", "message": message_id,
                                     "participant": participant, "owner": owner,
                                     "at": datetime.now(UTC), "sent": False})
        return True
    except DuplicateKeyError:
        found = await db[CLAIMS].find_one({"_id": f"{message_id}|{participant}"})
        # The same owner again (a timer fired again after a crash before `sent`): carry on;
        # the alert itself is a conditional create, so it is not written twice.
        return found is not None and found.get("owner") == owner and not found.get("sent")


async def claimed(db: AsyncDatabase[Doc], message_id: str, participant: str) -> None:
    await db[CLAIMS].update_one({"_id": f"{message_id}|{participant}"}, {"$set": {"sent": True}})


READY = "messaging_inbox_ready"
# The one READY document that is no participant's: whether this database kept inbox rows and
# activity notes from its first thread on (decided once, by the first server to prepare it).
FROM_THE_START = "*from-the-start"


async def decide_from_the_start(db: AsyncDatabase[Doc], thread_tag: str) -> bool:
    """Decided once per database, when a server prepares it: a database with no thread yet
    keeps every thread's rows and activity from the start, so no participant's first inbox
    page has rows or times to catch up (make_rows_ready, activity.backfill: ~200 ms for a
    participant of 1,000 threads). A database that already holds threads keeps the catch-ups."""
    doc = await db[READY].find_one({"_id": FROM_THE_START})
    if doc is None:
        held = await db["Communication"].find_one({"sp._tag|": thread_tag}, {"_id": 1})
        await db[READY].update_one({"_id": FROM_THE_START}, {"$setOnInsert": {"kept": held is None,
                                                                             "at": datetime.now(UTC)}},
                                   upsert=True)
        doc = await db[READY].find_one({"_id": FROM_THE_START})
    kept = bool((doc or {}).get("kept"))
    if kept:
        _KEPT.add((id(db.client), db.name))
    return kept


def kept_from_the_start(db: AsyncDatabase[Doc]) -> bool:
    """What this process's start-up decided (decide_from_the_start), without a round trip. A
    wrong True (the database dropped and refilled behind the server's back) only skips the
    catch-ups: a row missing from the inbox, never a thread answered past the decision."""
    return (id(db.client), db.name) in _KEPT


_KEPT: set[tuple[int, str]] = set()


async def rows_ready(db: AsyncDatabase[Doc], participant: str) -> bool:
    return await db[READY].find_one({"_id": participant}, {"_id": 1}) is not None


async def make_rows_ready(db: AsyncDatabase[Doc], participant: str, thread_tag: str) -> None:
    """Rows for the participant's threads written before inbox rows were kept (their last
    activity unknown: the epoch), then the mark that this was done. Rows are numbers only:
    reading the headers here releases nothing (the inbox judges every thread it answers)."""
    held = {str(d["thread"]) async for d in db[INBOX].find({"participant": participant}, {"thread": 1})}
    headers = db["Communication"].find(
        {"sp.participant": participant, "sp._tag|": thread_tag, "del": False}, {"_id": 1})
    async for doc in headers:
        if str(doc["_id"]) not in held:
            await open_rows(db, None, str(doc["_id"]), [participant], quiet_since=EPOCH)
    await db[READY].update_one({"_id": participant}, {"$set": {"at": datetime.now(UTC)}}, upsert=True)
