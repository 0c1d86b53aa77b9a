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

A room may span server processes (`serve --workers N`, or several servers on one database):
each process holds its own sockets, and telehealth.relay keeps the room's members and carries
messages between processes through the database. Between two sockets of one process a message
goes directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import PyMongoError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from telehealth.joins import Admission, JoinTokens
from telehealth.relay import Relay

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
    # Until its welcome is sent, what arrives for the peer waits (another process may relay
    # to it as soon as it is recorded, before this process has answered it).
    backlog: list[Doc] | None = field(default_factory=list)
    # The peers this socket was told are in the room (its welcome, then peer-joined). A join
    # relayed from another process can arrive after the newcomer's welcome already listed
    # that peer: it is not announced twice.
    known: set[str] = field(default_factory=set)

    def describe(self) -> Doc:
        participant = self.admission.participant
        return {"peer": self.id, "participant": participant.reference, "display": participant.display,
                "role": participant.role}

    async def send(self, message: Doc) -> None:
        # Messages to one socket come from several peers' tasks: one frame at a time.
        async with self.lock:
            if self.backlog is not None:
                self.backlog.append(message)
            else:
                await self._write(message)

    async def welcome(self, message: Doc) -> None:
        """The first message; then what waited for it, in order."""
        async with self.lock:
            self.known = {str(p.get("peer")) for p in message.get("peers", [])}
            await self._write(message)
            for queued in self.backlog or []:
                await self._write(queued)
            self.backlog = None

    async def _write(self, message: Doc) -> None:
        kind, other = message.get("type"), str(message.get("peer"))
        if kind == "peer-joined":
            if other in self.known:
                return
            self.known.add(other)
        elif kind == "peer-left":
            self.known.discard(other)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            if self.socket.application_state == WebSocketState.CONNECTED:
                await self.socket.send_json(message)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self.socket.close(code, reason)


def _described(doc: Doc) -> Doc:
    return {"peer": doc["_id"], "participant": doc.get("participant"), "display": doc.get("display"),
            "role": doc.get("role")}


class Rooms:
    def __init__(self, tokens: JoinTokens, ice_servers: tuple[Doc, ...], max_participants: int,
                 relay: Relay) -> None:
        self.tokens = tokens
        self.ice_servers = list(ice_servers)
        self.max_participants = max_participants
        self.relay = relay
        self.local: dict[str, Peer] = {}  # the sockets this process holds, by peer id
        relay.attach(self._relayed, lambda: list(self.local), self._gone)

    def peers(self, room: str) -> list[Peer]:
        """This process's sockets in `room`."""
        return [p for p in self.local.values() if p.admission.room == room]

    async def stop(self) -> None:
        await self.relay.stop()

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
        await self.relay.start()
        room = admission.room
        # The same participant again (a reloaded page, maybe on another process): the new
        # socket replaces the old one.
        for old in await self.relay.members(room):
            if old.get("participant") == admission.participant.reference and await self.relay.leave(old["_id"]):
                await self._drop(room, str(old["_id"]), 4409, "joined again elsewhere")
        peer = Peer(uuid.uuid4().hex, admission, socket)
        self.local[peer.id] = peer  # before it is recorded: relayed messages find it (and wait)
        members = await self.relay.enter(peer.id, room, {k: v for k, v in peer.describe().items() if k != "peer"})
        order = [str(m["_id"]) for m in members]
        # Members who joined at the same moment elsewhere: the first max_participants stay.
        if peer.id not in order or order.index(peer.id) >= self.max_participants:
            self.local.pop(peer.id, None)
            await self.relay.leave(peer.id)
            await self._refuse(socket, "the visit is full")
            return None
        # Those before it: the newcomer offers to each of them (the call page's rule).
        earlier = [_described(m) for m in members[:order.index(peer.id)]]
        await peer.welcome({"type": "welcome", **peer.describe(), "peers": earlier, "iceServers": self.ice_servers})
        await self._broadcast(room, {"type": "peer-joined", **peer.describe()}, but=peer.id)
        return peer

    async def _broadcast(self, room: str, message: Doc, but: str | None = None) -> None:
        await asyncio.gather(*(p.send(message) for p in self.peers(room) if p.id != but))
        await self.relay.publish(room, message, but=but)

    async def _drop(self, room: str, peer_id: str, code: int, reason: str) -> None:
        """`peer_id` (already out of the room's record) leaves: its socket is closed wherever
        it is held, and the room is told."""
        old = self.local.pop(peer_id, None)
        if old is not None:
            await old.close(code, reason)
        else:
            await self.relay.publish(room, {"code": code, "reason": reason}, to=peer_id, kind="close")
        await self._broadcast(room, {"type": "peer-left", "peer": peer_id})

    async def _relayed(self, doc: Doc) -> None:
        """A message from another process, for sockets of this one in its room."""
        room, to, message = doc.get("room"), doc.get("to"), doc.get("message")
        if not isinstance(message, dict):
            return
        if to is None:
            await asyncio.gather(*(p.send(message) for p in self.peers(str(room)) if p.id != doc.get("but")))
            return
        target = self.local.get(str(to))
        if target is None or target.admission.room != room:
            return
        if doc.get("kind") == "close":
            self.local.pop(target.id, None)
            await target.close(int(message.get("code", 4409)), str(message.get("reason", ""))[:100])
        else:
            await target.send(message)

    async def _gone(self, room: str, peer_id: str) -> None:
        """A member whose process stopped answering: the room is told it left."""
        await self._broadcast(room, {"type": "peer-left", "peer": peer_id})

    async def _signal(self, peer: Peer, message: Any) -> None:
        if not isinstance(message, dict) or message.get("type") != "signal":
            return
        to, data = str(message.get("to")), message.get("data")
        if to == peer.id or not isinstance(data, dict) or len(str(data)) > MAX_SIGNAL:
            return
        relayed = {"type": "signal", "from": peer.id, "data": data}
        target = self.local.get(to)
        if target is not None:
            if target.admission.room == peer.admission.room:
                await target.send(relayed)
            return
        # Not here: maybe a member on another process (which checks the room on arrival).
        await self.relay.publish(peer.admission.room, relayed, to=to)

    async def serve(self, socket: WebSocket) -> None:
        await socket.accept()
        peer = await self._admit(socket)
        if peer is None:
            return
        room = peer.admission.room
        try:
            while True:
                await self._signal(peer, await socket.receive_json())
        except (WebSocketDisconnect, RuntimeError, ValueError, KeyError):
            pass  # closed, or not JSON text: the peer leaves
        finally:
            if self.local.get(peer.id) is peer:
                self.local.pop(peer.id)
                with contextlib.suppress(PyMongoError):
                    if await self.relay.leave(peer.id):
                        await self._broadcast(room, {"type": "peer-left", "peer": peer.id})
