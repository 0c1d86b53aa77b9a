"""The built-in rooms' signaling websocket, authenticated by the join token: participants of
one visit are admitted and their messages relayed to each other; an unknown, foreign or
expired token is refused (close code 4403) and learns nothing about the room."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from telehealth.signaling import REFUSED
from tests.subscriptions.conftest import wait_until
from tests.telehealth.conftest import TeleServer, closing_visit, join, make_visit, output


def _ws_url(tele: TeleServer) -> str:
    return tele.base.replace("http://", "ws://") + "/$visit-ws"


async def _enter(url: str, room: str, token: str) -> tuple[ClientConnection, dict[str, Any]]:
    socket = await connect(url)
    await socket.send(json.dumps({"type": "join", "room": room, "token": token}))
    return socket, json.loads(await asyncio.wait_for(socket.recv(), 10))


async def _refused(url: str, room: str, token: str) -> tuple[dict[str, Any], int | None]:
    socket, first = await _enter(url, room, token)
    try:
        await asyncio.wait_for(socket.recv(), 10)
    except ConnectionClosed as closed:
        return first, closed.rcvd.code if closed.rcvd else None
    raise AssertionError("the socket stayed open")


def test_participants_are_admitted_and_signal_each_other(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    tele.session_address(admin, visit.appointment)
    doctor = output(join(tele.practitioner(visit.practitioner), visit.appointment))["token"]
    patient = output(join(tele.patient(visit.patient), visit.appointment))["token"]
    url = _ws_url(tele)

    async def scenario() -> None:
        first, welcome = await _enter(url, visit.appointment, doctor)
        assert welcome["type"] == "welcome" and welcome["peers"] == []
        assert welcome["participant"] == f"Practitioner/{visit.practitioner}" and welcome["role"] == "host"
        second, hello = await _enter(url, visit.appointment, patient)
        assert hello["type"] == "welcome" and [p["participant"] for p in hello["peers"]] == [
            f"Practitioner/{visit.practitioner}"]
        joined = json.loads(await asyncio.wait_for(first.recv(), 10))
        assert joined == {"type": "peer-joined", "peer": hello["peer"], "participant": f"Patient/{visit.patient}",
                          "display": f"Patient/{visit.patient}", "role": "guest"}
        await second.send(json.dumps({"type": "signal", "to": welcome["peer"], "data": {"sdp": {"type": "offer"}}}))
        relayed = json.loads(await asyncio.wait_for(first.recv(), 10))
        assert relayed == {"type": "signal", "from": hello["peer"], "data": {"sdp": {"type": "offer"}}}
        await second.close()
        left = json.loads(await asyncio.wait_for(first.recv(), 10))
        assert left == {"type": "peer-left", "peer": hello["peer"]}
        await first.close()

    asyncio.run(scenario())


def test_unknown_foreign_and_expired_tokens_are_refused(tele: TeleServer) -> None:
    admin = tele.admin()
    # This visit's window closes in a few seconds: its join expires with it.
    closing, expiring = closing_visit(tele, admin)
    visit, other = make_visit(admin), make_visit(admin)
    for v in (visit, other):
        tele.session_address(admin, v.appointment)
    foreign = output(join(tele.patient(other.patient), other.appointment))["token"]
    url = _ws_url(tele)

    async def scenario() -> None:
        for room, token, reason in ((visit.appointment, "x" * 43, "unknown join token"),
                                    (visit.appointment, foreign, "a join token for another visit"),
                                    (visit.appointment, "", "not a join token")):
            refusal, code = await _refused(url, room, token)
            assert refusal == {"type": "refused", "reason": reason}
            assert code == REFUSED
        # Not a join first: refused as well.
        socket = await connect(url)
        await socket.send(json.dumps({"type": "signal", "to": "x", "data": {}}))
        assert json.loads(await socket.recv())["type"] == "refused"
        await socket.close()

    asyncio.run(scenario())
    expires = datetime.fromisoformat(expiring["expires"].replace("Z", "+00:00"))
    assert expires <= datetime.now(UTC) + timedelta(seconds=81)

    def refused_now() -> bool:
        refusal, code = asyncio.run(_refused(url, closing.appointment, expiring["token"])) \
            if datetime.now(UTC) > expires else ({}, None)
        return refusal.get("reason") == "an expired join token" and code == REFUSED

    assert wait_until(refused_now, 90, "the join token expiring")


def test_the_call_page_is_served_by_the_server_with_a_strict_policy(tele: TeleServer) -> None:
    anyone = tele.client()
    page = anyone.get("/$visit/some-visit")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    # Everything the page loads comes from the server itself (no CDN).
    assert "http" not in page.text.replace('http-equiv', '')
    for name, kind in (("call.js", "text/javascript"), ("call.css", "text/css")):
        asset = anyone.get(f"/$visit-assets/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert anyone.get("/$visit-assets/..%2Fservice.py").status_code == 404
    assert anyone.get("/$visit-assets/call.html").status_code == 404
    assert anyone.get("/$visit/bad%20id").status_code == 400


def test_a_peer_the_welcome_listed_is_not_announced_again() -> None:
    # The race of two processes: the doctor's peer-joined, relayed through the database, can
    # reach the patient's socket after the patient's welcome already listed the doctor.
    from starlette.websockets import WebSocketState

    from telehealth.signaling import Peer

    class Socket:
        application_state = WebSocketState.CONNECTED

        def __init__(self) -> None:
            self.sent: list[dict[str, Any]] = []

        async def send_json(self, message: dict[str, Any]) -> None:
            self.sent.append(message)

    async def scenario() -> list[dict[str, Any]]:
        socket = Socket()
        peer = Peer("patient", None, socket)  # type: ignore[arg-type]
        await peer.send({"type": "peer-joined", "peer": "doctor"})  # waits for the welcome
        await peer.welcome({"type": "welcome", "peer": "patient", "peers": [{"peer": "doctor"}]})
        await peer.send({"type": "peer-joined", "peer": "doctor"})
        await peer.send({"type": "peer-joined", "peer": "nurse"})
        await peer.send({"type": "peer-left", "peer": "doctor"})
        await peer.send({"type": "peer-joined", "peer": "doctor"})  # back, after a reload
        return socket.sent

    assert [(m["type"], m["peer"]) for m in asyncio.run(scenario())] == [
        ("welcome", "patient"), ("peer-joined", "nurse"), ("peer-left", "doctor"), ("peer-joined", "doctor")]
