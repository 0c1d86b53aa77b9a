"""Conditional create, update and delete: 0 / 1 / many matches, and concurrency."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.helpers import count

PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "123"}]}


def test_conditional_create_no_match_then_match(client: httpx.Client) -> None:
    first = client.post("/Patient", json=PATIENT, headers={"If-None-Exist": "identifier=urn:mrn|123"})
    assert first.status_code == 201
    second = client.post("/Patient", json=PATIENT, headers={"If-None-Exist": "identifier=urn:mrn|123"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert count(client, "Patient", identifier="urn:mrn|123") == 1


def test_conditional_create_many_matches_is_412(client: httpx.Client) -> None:
    client.post("/Patient", json=PATIENT)
    client.post("/Patient", json=PATIENT)
    r = client.post("/Patient", json=PATIENT, headers={"If-None-Exist": "identifier=urn:mrn|123"})
    assert r.status_code == 412
    assert count(client, "Patient", identifier="urn:mrn|123") == 2


def test_conditional_create_with_full_url_form_and_id(client: httpx.Client) -> None:
    created = client.post("/Patient", json=PATIENT).json()
    r = client.post("/Patient", json=PATIENT, headers={"If-None-Exist": f"Patient?_id={created['id']}"})
    assert r.status_code == 200


def test_concurrent_conditional_creates_make_one(client: httpx.Client) -> None:
    base_url = str(client.base_url)

    def create(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=base_url, timeout=30) as c:
            r = c.post("/Patient", json=PATIENT, headers={"If-None-Exist": "identifier=urn:mrn|123"})
            return r.status_code, r.json()["id"]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(6)))
    assert sorted(code for code, _ in results) == [200] * 5 + [201]
    assert len({rid for _, rid in results}) == 1
    assert count(client, "Patient", identifier="urn:mrn|123") == 1


def test_conditional_create_needs_criteria_it_understands(client: httpx.Client) -> None:
    r = client.post("/Patient", json=PATIENT, headers={"If-None-Exist": "nonsense-param=1"})
    assert r.status_code == 400
    assert count(client, "Patient") == 0


def test_conditional_update(client: httpx.Client) -> None:
    # No match and no id: created.
    r = client.put("/Patient", params={"identifier": "urn:mrn|123"}, json=PATIENT)
    assert r.status_code == 201
    pid = r.json()["id"]
    # One match: updated in place.
    r = client.put("/Patient", params={"identifier": "urn:mrn|123"}, json={**PATIENT, "active": True})
    assert r.status_code == 200
    assert r.json()["id"] == pid and r.json()["meta"]["versionId"] == "2"
    # One match but a different id in the body: 400.
    r = client.put("/Patient", params={"identifier": "urn:mrn|123"}, json={**PATIENT, "id": "other"})
    assert r.status_code == 400
    # Many matches: 412.
    client.post("/Patient", json=PATIENT)
    r = client.put("/Patient", params={"identifier": "urn:mrn|123"}, json=PATIENT)
    assert r.status_code == 412


def test_conditional_update_no_match_with_id_creates_with_that_id(client: httpx.Client) -> None:
    r = client.put("/Patient", params={"identifier": "urn:mrn|999"}, json={**PATIENT, "id": "p-999"})
    assert r.status_code == 201
    assert r.json()["id"] == "p-999"


def test_conditional_delete(client: httpx.Client) -> None:
    created = client.post("/Patient", json=PATIENT).json()
    r = client.delete("/Patient", params={"identifier": "urn:mrn|123"})
    assert r.status_code == 200
    assert client.get(f"/Patient/{created['id']}").status_code == 410
    # No match: nothing deleted, still 200 with an outcome saying so.
    r = client.delete("/Patient", params={"identifier": "urn:mrn|123"})
    assert r.status_code == 200
    assert "nothing" in r.json()["issue"][0]["diagnostics"]
    # Many matches: 412 and nothing deleted.
    a = client.post("/Patient", json=PATIENT).json()
    client.post("/Patient", json=PATIENT)
    assert client.delete("/Patient", params={"identifier": "urn:mrn|123"}).status_code == 412
    assert client.get(f"/Patient/{a['id']}").status_code == 200
    # No criteria at all: refused rather than deleting everything.
    assert client.delete("/Patient").status_code == 400


def test_conditional_create_from_the_query_string(client: httpx.Client) -> None:
    """fhirpy sends a conditional create as POST [type]?identifier=...: read as If-None-Exist."""
    first = client.post("/Patient", json=PATIENT, params={"identifier": "urn:mrn|123"})
    assert first.status_code == 201
    second = client.post("/Patient", json=PATIENT, params={"identifier": "urn:mrn|123"})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert client.get("/Patient", params={"identifier": "urn:mrn|123"}).json()["total"] == 1
    # Many matches: 412, as for If-None-Exist.
    client.post("/Patient", json=PATIENT)
    r = client.post("/Patient", json=PATIENT, params={"identifier": "urn:mrn|123"})
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"
    # Unknown criteria are refused, as for If-None-Exist, not dropped (which would create).
    r = client.post("/Patient", json=PATIENT, params={"nonsense-param": "1"})
    assert r.status_code == 400
    # Both, disagreeing: refused; agreeing: one condition. _format alone is no condition.
    r = client.post("/Patient", json=PATIENT, params={"identifier": "urn:mrn|9"},
                    headers={"If-None-Exist": "identifier=urn:mrn|8"})
    assert r.status_code == 400
    r = client.post("/Patient", json=PATIENT, params={"identifier": "urn:mrn|9"},
                    headers={"If-None-Exist": "identifier=urn:mrn|9"})
    assert r.status_code == 201
    assert client.post("/Patient", json=PATIENT, params={"_format": "json"}).status_code == 201
    assert client.get("/Patient", params={"_summary": "count"}).json()["total"] == 4
