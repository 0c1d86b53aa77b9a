"""The built-in provider: a peer-to-peer WebRTC room per visit, served by this server.

Zero configuration on one machine: the room's address is the call page
`[base]/$visit/<appointment id>`; a join link is that page with the participant's token in the
URL's fragment (`#token=...`), which browsers never send to a server, so it stays out of
access logs and Referer headers. The page opens the server's signaling websocket and
presents the token there (telehealth.signaling); media flows between the browsers directly
(STUN/TURN servers configurable for networks that need them).
"""

from __future__ import annotations

from datetime import datetime

from telehealth.joins import JoinTokens
from telehealth.provider import CHANNEL_SYSTEM, JoinLink, Participant, Session

CHANNEL = {"system": CHANNEL_SYSTEM, "code": "builtin-webrtc", "display": "Built-in video (WebRTC)"}


def page_path(room: str) -> str:
    return f"/$visit/{room}"


class BuiltinProvider:
    name = "builtin"

    def __init__(self, base_url: str, tokens: JoinTokens, max_participants: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.max_participants = max_participants

    def create_session(self, appointment_id: str, max_participants: int | None = None) -> Session:
        return Session(appointment_id, appointment_id, self.base_url + page_path(appointment_id), CHANNEL,
                       max_participants or self.max_participants)

    async def join(self, session: Session, participant: Participant, expires: datetime) -> JoinLink:
        token = await self.tokens.mint(session.room, session.appointment_id, participant, expires)
        return JoinLink(f"{session.address}#token={token}", token, expires)
