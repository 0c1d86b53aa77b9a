"""Concurrent conditional writes over real HTTP: the lock on the canonical criteria makes one
resource, whatever the interaction (create, update, transaction entry) and however the same
criteria are spelled.

R4 (http.html#cond-update): a conditional update with no match creates, with one match
updates it. Serialized by the lock, the first of 16 concurrent identical requests creates
(201) and the other 15 find that one resource and update it; their body equals it, so each is
an unchanged update (200, no new version).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.helpers import count

ROUNDS = 3
CLIENTS = 16


def _task(value: str) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order",
            "identifier": [{"system": "urn:race", "value": value}]}


async def _gather(base_url: str, send: Any) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:
        return list(await asyncio.gather(*(send(http, n) for n in range(CLIENTS))))


def test_concurrent_conditional_updates_make_one_resource(client: httpx.Client) -> None:
    for round_ in range(ROUNDS):
        value = f"update-{round_}"

        async def send(http: httpx.AsyncClient, _: int, value: str = value) -> httpx.Response:
            return await http.put(f"/Task?identifier=urn:race|{value}", json=_task(value))

        responses = asyncio.run(_gather(str(client.base_url), send))
        assert sorted(r.status_code for r in responses) == [200] * (CLIENTS - 1) + [201], \
            [r.text for r in responses if r.status_code not in (200, 201)]
        assert len({r.json()["id"] for r in responses}) == 1
        assert count(client, "Task", identifier=f"urn:race|{value}") == 1


def test_concurrent_transactions_with_one_conditional_update_make_one_resource(
    client: httpx.Client,
) -> None:
    for round_ in range(ROUNDS):
        value = f"transaction-{round_}"
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "resource": _task(value),
            "request": {"method": "PUT", "url": f"Task?identifier=urn:race|{value}"},
        }]}

        async def send(http: httpx.AsyncClient, _: int, bundle: dict[str, Any] = bundle) -> httpx.Response:
            return await http.post("", json=bundle)

        responses = asyncio.run(_gather(str(client.base_url), send))
        assert [r.status_code for r in responses] == [200] * CLIENTS, \
            [r.text for r in responses if r.status_code != 200]
        statuses = sorted(r.json()["entry"][0]["response"]["status"] for r in responses)
        assert statuses == ["200 OK"] * (CLIENTS - 1) + ["201 Created"]
        assert count(client, "Task", identifier=f"urn:race|{value}") == 1


SPELLINGS = [
    "identifier=urn:race|{v}",
    "identifier=urn:race%7C{v}",
    "identifier=urn:race|{v}&identifier=urn:race|{v}",
    "identifier=urn:race|{v}&_count=5",
]


def test_concurrent_conditional_creates_over_equivalent_spellings_make_one(client: httpx.Client) -> None:
    for round_ in range(ROUNDS):
        value = f"create-{round_}"

        async def send(http: httpx.AsyncClient, n: int, value: str = value) -> httpx.Response:
            criteria = SPELLINGS[n % len(SPELLINGS)].format(v=value)
            return await http.post("/Task", json=_task(value), headers={"If-None-Exist": criteria})

        responses = asyncio.run(_gather(str(client.base_url), send))
        assert sorted(r.status_code for r in responses) == [200] * (CLIENTS - 1) + [201], \
            [r.text for r in responses if r.status_code not in (200, 201)]
        assert len({r.json()["id"] for r in responses}) == 1
        assert count(client, "Task", identifier=f"urn:race|{value}") == 1


def test_conditional_create_and_update_share_one_lock(client: httpx.Client) -> None:
    """A conditional create and a conditional update on the same criteria, at once: one
    resource (the lock is keyed on type and criteria, not on the interaction)."""
    value = "mixed"

    async def send(http: httpx.AsyncClient, n: int) -> httpx.Response:
        if n % 2:
            return await http.put(f"/Task?identifier=urn:race|{value}", json=_task(value))
        return await http.post("/Task", json=_task(value),
                               headers={"If-None-Exist": f"identifier=urn:race|{value}"})

    responses = asyncio.run(_gather(str(client.base_url), send))
    assert sorted(r.status_code for r in responses) == [200] * (CLIENTS - 1) + [201]
    assert count(client, "Task", identifier=f"urn:race|{value}") == 1


def test_concurrent_transactions_with_equivalent_if_none_exist_make_one(client: httpx.Client) -> None:
    for round_ in range(ROUNDS):
        value = f"transaction-create-{round_}"

        async def send(http: httpx.AsyncClient, n: int, value: str = value) -> httpx.Response:
            criteria = SPELLINGS[n % len(SPELLINGS)].format(v=value)
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
                "fullUrl": "urn:uuid:8f1e1f3c-0d6b-4b8e-9a57-3f1f7a0c2b11",
                "resource": _task(value),
                "request": {"method": "POST", "url": "Task", "ifNoneExist": criteria},
            }]}
            return await http.post("", json=bundle)

        responses = asyncio.run(_gather(str(client.base_url), send))
        assert [r.status_code for r in responses] == [200] * CLIENTS, \
            [r.text for r in responses if r.status_code != 200]
        statuses = sorted(r.json()["entry"][0]["response"]["status"] for r in responses)
        assert statuses == ["200 OK"] * (CLIENTS - 1) + ["201 Created"]
        assert count(client, "Task", identifier=f"urn:race|{value}") == 1
