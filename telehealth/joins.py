"""The built-in provider's join tokens: random, stored only as their SHA-256, expiring.

A token is minted by $join for one participant of one visit and checked when that
participant's call page opens the signaling websocket. The database holds the hash, so
neither a backup nor a read of the collection lets anyone join. Collection `visit_joins`:
`_id` (the hash), `room`, `appointment`, `participant`, `display`, `role`, `expires`, `issued`.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from telehealth.provider import Participant

Doc = dict[str, Any]
COLLECTION = "visit_joins"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Admission:
    """A token that was accepted: who it lets in, where."""

    room: str
    appointment: str
    participant: Participant
    expires: datetime


class JoinTokens:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db[COLLECTION]

    async def mint(self, room: str, appointment: str, participant: Participant, expires: datetime) -> str:
        token = secrets.token_urlsafe(32)
        # The id hashes 32 random bytes minted just now: a duplicate key is this very insert,
        # landed by an attempt the driver retried (a retryable write seen twice), never
        # another token. The token is stored either way; hand it out.
        with contextlib.suppress(DuplicateKeyError):
            await self.collection.insert_one({
                "_id": _hash(token), "room": room, "appointment": appointment,
                "participant": participant.reference, "display": participant.display,
                "role": participant.role, "expires": expires, "issued": datetime.now(UTC),
            })
        return token

    async def admit(self, token: object, room: str) -> Admission | str:
        """The admission `token` gives to `room`, or why it gives none (unknown, another
        room's, expired): the same refusal to the caller either way."""
        if not isinstance(token, str) or not 20 <= len(token) <= 200:
            return "not a join token"
        doc = await self.collection.find_one({"_id": _hash(token)})
        if doc is None:
            return "unknown join token"
        if doc["room"] != room:
            return "a join token for another visit"
        expires: datetime = doc["expires"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            return "an expired join token"
        participant = Participant(doc["participant"], doc.get("display"),
                                  "host" if doc.get("role") == "host" else "guest")
        return Admission(room, doc["appointment"], participant, expires)
