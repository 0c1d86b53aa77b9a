"""One room across two server processes: two real `fhir-server serve` processes on one
database (what `serve --workers 2` gives when the two participants land on different
workers). The practitioner's socket is on one, the patient's on the other; they are admitted
to one room, each learns of the other, their signals are relayed both ways, a reload on the
other process replaces the old socket, a full room refuses across processes, and leaving is
told across processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from telehealth.signaling import REFUSED
from telehealth.virtual_service import read as read_service
from tests.conftest import free_port
from tests.processes import ServerProcess
from tests.subscriptions.conftest import wait_until
from tests.telehealth.conftest import make_visit, output
from tests.workflows.toy import unique

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def two(mongodb_uri: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    database = unique("fhir_rooms_")
    port = free_port()
    started: list[ServerProcess] = []
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("FHIR_WORKFLOW_BUILTIN", "1")  # the virtual-visit workflow records the room
            patch.setenv("FHIR_VISIT_MAX_PARTICIPANTS", "4")
            # One deployment, one public address (as behind `serve --workers 2` or a balancer):
            # the room's address is the same whichever process records it.
            patch.setenv("FHIR_BASE_URL", f"http://127.0.0.1:{port}/fhir")
            for each in (port, free_port()):  # a loaded machine starts a server slowly
                started.append(ServerProcess(mongodb_uri, database, each, startup_timeout=180))
        yield started[0], started[1]
    finally:
        for process in started:
            process.stop()


def _token(api: httpx.Client, appointment: str, participant: str) -> str:
    """$join with auth off names the participant who joins."""
    body = {"resourceType": "Parameters", "parameter": [{"name": "participant",
                                                         "valueReference": {"reference": participant}}]}
    joined = api.post(f"/Appointment/{appointment}/$join", json=body)
    assert joined.status_code == 200, joined.text
    return str(output(joined)["token"])


def _ws(server: ServerProcess) -> str:
    return server.base_url.replace("http://", "ws://") + "/$visit-ws"


async def _next(socket: ClientConnection) -> Doc:
    message: Doc = json.loads(await asyncio.wait_for(socket.recv(), 15))
    return message


async def _enter(url: str, room: str, token: str) -> tuple[ClientConnection, Doc]:
    socket = await connect(url)
    await socket.send(json.dumps({"type": "join", "room": room, "token": token}))
    return socket, await _next(socket)


async def _closed(socket: ClientConnection) -> int | None:
    try:
        while True:
            await asyncio.wait_for(socket.recv(), 15)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def _visit(api: httpx.Client, extra: tuple[str, ...] = ()) -> tuple[str, str, str]:
    visit = make_visit(api, extra=extra)
    wait_until(lambda: (found := read_service(api.get(f"/Appointment/{visit.appointment}").json())) is not None
               and found.address, timeout=60, what="the visit's room recorded")
    return visit.appointment, f"Practitioner/{visit.practitioner}", f"Patient/{visit.patient}"


def test_a_room_spans_two_server_processes(two: tuple[ServerProcess, ServerProcess]) -> None:
    first, second = two
    with httpx.Client(base_url=first.base_url, timeout=30) as a, httpx.Client(base_url=second.base_url,
                                                                              timeout=30) as b:
        room, doctor, patient = _visit(a)
        doctor_token, patient_token = _token(a, room, doctor), _token(b, room, patient)
        reload_token = _token(b, room, doctor)

    async def scenario() -> None:
        here, welcome = await _enter(_ws(first), room, doctor_token)
        assert welcome["type"] == "welcome" and welcome["peers"] == []
        there, hello = await _enter(_ws(second), room, patient_token)
        assert hello["type"] == "welcome"
        assert [(p["peer"], p["participant"]) for p in hello["peers"]] == [(welcome["peer"], doctor)]
        joined = await _next(here)
        assert joined == {"type": "peer-joined", "peer": hello["peer"], "participant": patient,
                          "display": patient, "role": "guest"}
        # Offer from the newcomer on process 2 to the practitioner on process 1, answer back.
        await there.send(json.dumps({"type": "signal", "to": welcome["peer"], "data": {"sdp": {"type": "offer"}}}))
        assert await _next(here) == {"type": "signal", "from": hello["peer"], "data": {"sdp": {"type": "offer"}}}
        await here.send(json.dumps({"type": "signal", "to": hello["peer"], "data": {"sdp": {"type": "answer"}}}))
        assert await _next(there) == {"type": "signal", "from": welcome["peer"], "data": {"sdp": {"type": "answer"}}}
        for n in range(20):  # ICE candidates, in order
            await there.send(json.dumps({"type": "signal", "to": welcome["peer"], "data": {"candidate": n}}))
        assert [(await _next(here))["data"]["candidate"] for _ in range(20)] == list(range(20))
        # The practitioner reloads the page and lands on process 2: the old socket on process 1
        # is closed, the patient is told the old peer left and the new one joined.
        again, rewelcome = await _enter(_ws(second), room, reload_token)
        assert rewelcome["type"] == "welcome"
        assert [p["participant"] for p in rewelcome["peers"]] == [patient]
        assert await _closed(here) == 4409
        told = [await _next(there), await _next(there)]
        assert {"type": "peer-left", "peer": welcome["peer"]} in told
        assert any(m["type"] == "peer-joined" and m["peer"] == rewelcome["peer"] for m in told)
        # Leaving, across processes: the patient (process 2) leaves; the practitioner is told.
        await there.close()
        assert await _next(again) == {"type": "peer-left", "peer": hello["peer"]}
        await again.close()

    asyncio.run(scenario())


def test_a_full_room_refuses_across_processes(two: tuple[ServerProcess, ServerProcess]) -> None:
    """The room's limit (FHIR_VISIT_MAX_PARTICIPANTS 4) counts the sockets of both processes:
    six more joining at the same moment, three through each process, leave exactly four in."""
    first, second = two
    extra = tuple(f"RelatedPerson/r{n}" for n in range(6))
    with httpx.Client(base_url=first.base_url, timeout=30) as a, httpx.Client(base_url=second.base_url,
                                                                              timeout=30) as b:
        room, doctor, patient = _visit(a, extra)
        tokens = [(first, _token(a, room, doctor)), (second, _token(b, room, patient))]
        tokens += [(server, _token(api, room, who))
                   for (server, api), who in zip([(first, a), (second, b)] * 3, extra, strict=True)]

    async def scenario() -> None:
        opened = [await _enter(_ws(server), room, token) for server, token in tokens[:2]]
        assert [m["type"] for _, m in opened] == ["welcome", "welcome"]
        racing = await asyncio.gather(*(_enter(_ws(server), room, token) for server, token in tokens[2:]))
        admitted = [m for _, m in racing if m["type"] == "welcome"]
        refused = [m for _, m in racing if m["type"] == "refused"]
        assert len(admitted) == 2 and len(refused) == 4
        assert {m["reason"] for m in refused} == {"the visit is full"}
        for socket, message in racing:
            if message["type"] == "refused":
                assert await _closed(socket) == REFUSED
        for socket, _ in [*opened, *racing]:
            await socket.close()

    asyncio.run(scenario())
