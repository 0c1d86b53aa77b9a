"""Signaling for the built-in rooms, over the server's websocket `[base]/$visit-ws`.

The call page opens the socket and sends, first and within JOIN_TIMEOUT,

    {"type": "join", "room": "<room>", "token": "<join token from $join>"}

An unknown, expired or another visit's token, or a full room, is answered
`{"type": "refused", "reason": ...}` and the socket is closed (code 4403). Admitted, the page
gets `{"type": "welcome", "peer": <its id>, "peers": [...already there], "iceServers": [...]}`
and the others `peer-joined`; from then on the server relays `{"type": "signal", "to": <peer>,
"data": {...SDP or ICE candidate}}` to that peer of the same room as `{"type": "signal",
"from": ..., "data": ...}`, and tells the room `peer-left` when a socket closes. The server
never sees media: it flows between the browsers.

Rooms live in this process: every participant of one visit must reach the same server
process (docs/telemedicine.md says how to run several).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from telehealth.joins import Admission, JoinTokens

log = logging.getLogger(__name__)
Doc = dict[str, Any]
JOIN_TIMEOUT = 10.0
REFUSED = 4403  # the websocket close code for a refused join (403 in the 4000 range)
MAX_SIGNAL = 64 * 1024  # characters of one relayed message (an SDP is a few kB)


@dataclass(eq=False)
class Peer:
    id: str
    admission: Admission
    socket: WebSocket
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def describe(self) -> Doc:
        participant = self.admission.participant
        return {"peer": self.id, "participant": participant.reference, "display": participant.display,
                "role": participant.role}

    async def send(self, message: Doc) -> None:
        # Messages to one socket come from several peers' tasks: one frame at a time.
        async with self.lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                if self.socket.application_state == WebSocketState.CONNECTED:
                    await self.socket.send_json(message)


class Rooms:
    def __init__(self, tokens: JoinTokens, ice_servers: tuple[Doc, ...], max_participants: int) -> None:
        self.tokens = tokens
        self.ice_servers = list(ice_servers)
        self.max_participants = max_participants
        self.rooms: dict[str, dict[str, Peer]] = {}

    def peers(self, room: str) -> list[Peer]:
        return list(self.rooms.get(room, {}).values())

    async def _refuse(self, socket: WebSocket, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await socket.send_json({"type": "refused", "reason": reason})
            await socket.close(REFUSED, reason[:100])

    async def _admit(self, socket: WebSocket) -> Peer | None:
        try:
            first = await asyncio.wait_for(socket.receive_json(), JOIN_TIMEOUT)
        except (TimeoutError, ValueError, KeyError):
            await self._refuse(socket, "send {\"type\": \"join\", \"room\": ..., \"token\": ...} first")
            return None
        if not isinstance(first, dict) or first.get("type") != "join" or not isinstance(first.get("room"), str):
            await self._refuse(socket, "send {\"type\": \"join\", \"room\": ..., \"token\": ...} first")
            return None
        admission = await self.tokens.admit(first.get("token"), first["room"])
        if isinstance(admission, str):
            log.info("visit websocket refused: %s", admission)
            await self._refuse(socket, admission)
            return None
        room = self.rooms.setdefault(admission.room, {})
        # The same participant again (a reloaded page): the new socket replaces the old one.
        for old in [p for p in room.values() if p.admission.participant.reference == admission.participant.reference]:
            room.pop(old.id, None)
            await self._broadcast(admission.room, {"type": "peer-left", "peer": old.id})
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await old.socket.close(4409, "joined again elsewhere")
        if len(room) >= self.max_participants:
            await self._refuse(socket, "the visit is full")
            return None
        peer = Peer(uuid.uuid4().hex, admission, socket)
        others = list(room.values())
        room[peer.id] = peer
        await peer.send({"type": "welcome", **peer.describe(), "peers": [o.describe() for o in others],
                         "iceServers": self.ice_servers})
        await self._broadcast(admission.room, {"type": "peer-joined", **peer.describe()}, but=peer)
        return peer

    async def _broadcast(self, room: str, message: Doc, but: Peer | None = None) -> None:
        await asyncio.gather(*(p.send(message) for p in self.peers(room) if p is not but))

    async def serve(self, socket: WebSocket) -> None:
        await socket.accept()
        peer = await self._admit(socket)
        if peer is None:
            return
        room = peer.admission.room
        try:
            while True:
                message = await socket.receive_json()
                if not isinstance(message, dict) or message.get("type") != "signal":
                    continue
                target = self.rooms.get(room, {}).get(str(message.get("to")))
                data = message.get("data")
                if target is None or target is peer or not isinstance(data, dict) or len(str(data)) > MAX_SIGNAL:
                    continue
                await target.send({"type": "signal", "from": peer.id, "data": data})
        except (WebSocketDisconnect, RuntimeError, ValueError, KeyError):
            pass  # closed, or not JSON text: the peer leaves
        finally:
            members = self.rooms.get(room, {})
            if members.get(peer.id) is peer:
                members.pop(peer.id)
                if not members:
                    self.rooms.pop(room, None)
                await self._broadcast(room, {"type": "peer-left", "peer": peer.id})
