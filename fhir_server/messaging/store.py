"""The messaging bookkeeping collections the server maintains beside the resources.

- `messaging_threads`: per thread, `seq`, the number of its last message. Messages are
  numbered 1, 2, 3 ... in commit order by an `$inc` inside the message's own transaction, so
  "how many lie beyond a cursor" is a subtraction.
- `messaging_messages`: per message its thread, number, sender and participants.
- `messaging_render`: per (thread, participant) the furthest cursor over all sources, kept
  in the render state's own transaction (the render state resource is the truth; this is
  its index for the inbox and the alert decision).
- `messaging_inbox`: per (participant, thread) the thread's last message number (`seq`) and
  the participant's furthest cursor (`furthest`), kept in the transactions of the header, of
  each message and of each render state change. The inbox reads a participant's rows with
  one equality on an index: no `$in` over the threads (the embedded database answers an
  `$in` of 1,000 ids in seconds, quadratically) and no per-thread round trip.
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

from pymongo import ASCENDING, IndexModel
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


def messaging_indexes() -> dict[str, list[IndexModel]]:
    return {
        MESSAGES: [IndexModel([("thread", ASCENDING), ("seq", ASCENDING)], name="thread_seq")],
        RENDER: [IndexModel([("participant", ASCENDING)], name="participant"),
                 IndexModel([("thread", ASCENDING)], name="thread")],
        INBOX: [IndexModel([("participant", ASCENDING)], name="participant"),
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
                         client_id: str | None) -> int:
    """Gives a new message the next number of its thread (in the message's transaction)."""
    doc = await db[THREADS].find_one_and_update(
        {"_id": thread_id}, {"$inc": {"seq": 1}}, upsert=True, return_document=True, session=session)
    seq = int((doc or {}).get("seq", 1))
    await db[MESSAGES].insert_one(
        {"_id": message_id, "thread": thread_id, "seq": seq, "sender": sender,
         "participants": participants, "client": client_id, "at": datetime.now(UTC)}, session=session)
    # Every participant's inbox row of the thread learns the new last number: one update.
    await db[INBOX].update_many({"thread": thread_id}, {"$max": {"seq": seq}}, session=session)
    return seq


async def open_rows(db: AsyncDatabase[Doc], session: AsyncClientSession | None, thread_id: str,
                    participants: list[str]) -> None:
    """An inbox row per participant of a header just written (kept rows are left as they are;
    a participant added later starts from the thread's current last number)."""
    held = await db[THREADS].find_one({"_id": thread_id}, session=session)
    seq = int((held or {}).get("seq", 0))
    for participant in participants:
        await db[INBOX].update_one(
            {"_id": render_key(thread_id, participant)},
            {"$setOnInsert": {"thread": thread_id, "participant": participant, "furthest": 0},
             "$max": {"seq": seq}},
            upsert=True, session=session)


async def inbox_rows(db: AsyncDatabase[Doc], participant: str) -> dict[str, tuple[int, int]]:
    """Per thread of `participant`: (last message number, furthest cursor). Not access
    checked: the caller answers only the threads the access decision released."""
    found = db[INBOX].find({"participant": participant}, {"thread": 1, "seq": 1, "furthest": 1})
    return {str(d["thread"]): (int(d.get("seq", 0)), int(d.get("furthest", 0))) async for d in found}


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
         "$max": {"seq": int((held or {}).get("seq", 0))}},
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
