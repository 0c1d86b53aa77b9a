"""The websocket channel: bind-with-token (Backport), bind/ping (R4), several bindings on one
socket, and a reconnect that gets what it missed."""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.subscriptions.builders import task
from tests.subscriptions.conftest import check_r4, create, create_active, r4_subscription, topic_subscription, unique

Doc = dict[str, Any]


def _token(api: httpx.Client, *ids: str) -> tuple[str, str]:
    if len(ids) == 1:
        response = api.get(f"/Subscription/{ids[0]}/$get-ws-binding-token")
    else:
        response = api.get("/Subscription/$get-ws-binding-token", params=[("id", i) for i in ids])
    assert response.status_code == 200, response.text
    params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in response.json()["parameter"]}
    assert params["expiration"]
    return params["token"], params["websocket-url"]


def _bundle(ws: ClientConnection) -> Doc:
    message: Doc = json.loads(ws.recv(timeout=10))
    check_r4(message)
    return message


def _status(bundle: Doc) -> Doc:
    params = bundle["entry"][0]["resource"]["parameter"]
    out: Doc = {p["name"]: next((v for k, v in p.items() if k.startswith("value")), None) for p in params}
    out["events"] = [int(part["valueString"]) for p in params if p["name"] == "notification-event"
                     for part in p["part"] if part["name"] == "event-number"]
    return out


def _events(ws: ClientConnection, count: int) -> list[Doc]:
    bundles: list[Doc] = []
    while sum(len(_status(b)["events"]) for b in bundles) < count:
        bundle = _bundle(ws)
        if _status(bundle)["type"] == "event-notification":
            bundles.append(bundle)
    return bundles


def _ws_subscription(u: str) -> Doc:
    return topic_subscription("task-status", "", channel="websocket", filters=(f"Task?owner=Practitioner/{u}",))


def test_bind_with_token_and_reconnect_with_last_event(api: httpx.Client) -> None:
    u = unique()
    sub_id = create_active(api, _ws_subscription(u))
    token, url = _token(api, sub_id)
    assert url == f"{str(api.base_url).rstrip('/').replace('http://', 'ws://')}/$subscription-ws"
    with connect(url) as ws:
        ws.send(f"bind-with-token {token}")
        handshake = _status(_bundle(ws))
        assert handshake["type"] == "handshake" and handshake["subscription"]["reference"].endswith(sub_id)
        first = [create(api, task(u))["id"] for _ in range(2)]
        bundles = _events(ws, 2)
        assert [n for b in bundles for n in _status(b)["events"]] == [1, 2]
        assert [e["resource"]["id"] for b in bundles for e in b["entry"][1:]] == first
    missed = [create(api, task(u))["id"] for _ in range(3)]  # nobody connected
    with connect(url) as ws:
        ws.send(f"bind-with-token {token} 2")  # "I have processed up to event 2"
        assert _status(_bundle(ws))["type"] == "handshake"
        bundles = _events(ws, 3)
        assert [n for b in bundles for n in _status(b)["events"]] == [3, 4, 5]
        assert [e["resource"]["id"] for b in bundles for e in b["entry"][1:]] == missed


def test_one_socket_binds_several(api: httpx.Client) -> None:
    u, v = unique(), unique()
    a = create_active(api, _ws_subscription(u))
    b = create_active(api, _ws_subscription(v))
    token, url = _token(api, a, b)
    with connect(url) as ws:
        ws.send(f"bind-with-token {token}")
        shakes = {_status(_bundle(ws))["subscription"]["reference"].rsplit("/", 1)[-1] for _ in range(2)}
        assert shakes == {a, b}
        ta = create(api, task(u))["id"]
        tb = create(api, task(v))["id"]
        got = {_status(x)["subscription"]["reference"].rsplit("/", 1)[-1]: x["entry"][1]["resource"]["id"]
               for x in _events(ws, 2)}
        assert got == {a: ta, b: tb}


def test_r4_bind_and_ping(api: httpx.Client) -> None:
    u = unique()
    sub_id = create_active(api, r4_subscription(f"Task?owner=Practitioner/{u}", "", channel="websocket", payload=None))
    url = f"{str(api.base_url).rstrip('/').replace('http://', 'ws://')}/$subscription-ws"
    with connect(url) as ws:
        ws.send(f"bind {sub_id}")
        assert ws.recv(timeout=10) == f"bound {sub_id}"
        create(api, task(u))
        assert ws.recv(timeout=10) == f"ping {sub_id}"
        ws.send("bind no-such-subscription")
        assert ws.recv(timeout=10).startswith("error no-such-subscription")


def test_bad_token_and_wrong_channel(api: httpx.Client) -> None:
    u = unique()
    rest = api.post("/Subscription", json=topic_subscription("task-status", "http://127.0.0.1:9/x",
                                                             filters=(f"Task?owner=Practitioner/{u}",))).json()
    response = api.get(f"/Subscription/{rest['id']}/$get-ws-binding-token")
    assert response.status_code == 422 and response.json()["resourceType"] == "OperationOutcome"
    url = f"{str(api.base_url).rstrip('/').replace('http://', 'ws://')}/$subscription-ws"
    with connect(url) as ws:
        ws.send("bind-with-token not-a-token")
        assert ws.recv(timeout=10).startswith("error")
        ws.send("hello")
        assert ws.recv(timeout=10).startswith("error unknown command")
