"""Decimal precision is significant (datatypes.html#decimal): `12.50` comes back `12.50` on
every path, read, vread, search, history, _pretty/_elements/_summary, update, patch, batch
and transaction responses. Checked on the response bytes: a JSON parser would hide it."""

from __future__ import annotations

import re
from typing import Any

import httpx

TASK = (
    '{"resourceType":"Task","status":"requested","intent":"order","identifier":'
    '[{"system":"urn:dec","value":"KEY"}],"description":"dose check",'
    '"input":[{"type":{"text":"dose"},"valueQuantity":{"value":12.50,"unit":"mg"}},'
    '{"type":{"text":"weight"},"valueDecimal":70.0},'
    '{"type":{"text":"tiny"},"valueDecimal":0.000100},'
    '{"type":{"text":"big"},"valueDecimal":1267650600228229401496703205376},'
    '{"type":{"text":"count"},"valueInteger":3}]}'
)
EXACT = (b'"value":12.50', b'"valueDecimal":70.0', b'"valueDecimal":0.000100',
         b'"valueDecimal":1267650600228229401496703205376', b'"valueInteger":3')
FHIR_JSON = {"content-type": "application/fhir+json"}


def _kept(body: bytes, what: str) -> None:
    compact = re.sub(rb"\s+", b"", body)
    for text in EXACT:
        assert text in compact, (what, text, body[:600])


def _create(client: httpx.Client, key: str = "1") -> dict[str, Any]:
    r = client.post("/Task", content=TASK.replace("KEY", key), headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    _kept(r.content, "create response")
    created: dict[str, Any] = r.json()
    return created


def test_read_paths_keep_decimals(client: httpx.Client) -> None:
    tid = _create(client)["id"]
    for url, params in (
        (f"/Task/{tid}", {}), (f"/Task/{tid}", {"_pretty": "true"}),
        (f"/Task/{tid}", {"_elements": "input"}), (f"/Task/{tid}/_history/1", {}),
        ("/Task", {"_id": tid}), ("/Task", {"_id": tid, "_summary": "data"}),
        ("/Task", {"_id": tid, "_elements": "input"}), ("/", {"_type": "Task"}),
        (f"/Task/{tid}/_history", {}), ("/Task/_history", {}), ("/_history", {}),
        (f"/Task/{tid}/_history", {"_elements": "input"}),
    ):
        r = client.get(url, params=params)
        assert r.status_code == 200, (url, r.text)
        _kept(r.content, f"{url} {params}")


def test_writes_keep_decimals(client: httpx.Client) -> None:
    task = _create(client)
    tid = task["id"]
    # An update that only changes a decimal's precision is a change (a new version).
    body = TASK.replace("KEY", "1").replace('"resourceType":"Task",', f'"resourceType":"Task","id":"{tid}",')
    same = client.put(f"/Task/{tid}", content=body, headers=FHIR_JSON)
    assert same.status_code == 200
    assert same.json()["meta"]["versionId"] == "1"  # nothing new: no new version
    less = body.replace("12.50", "12.5")
    r = client.put(f"/Task/{tid}", content=less, headers=FHIR_JSON)
    assert r.json()["meta"]["versionId"] == "2"
    assert b'"value":12.5,' in r.content
    r = client.put(f"/Task/{tid}", content=body, headers=FHIR_JSON)
    assert r.json()["meta"]["versionId"] == "3"
    _kept(r.content, "update response")
    # JSON Patch: untouched decimals stay, added ones keep their text.
    patch = '[{"op":"replace","path":"/description","value":"again"},' \
            '{"op":"add","path":"/input/-","value":{"type":{"text":"x"},"valueDecimal":7.00}}]'
    r = client.patch(f"/Task/{tid}", content=patch,
                     headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    _kept(r.content, "patch response")
    assert b'"valueDecimal":7.00' in r.content
    assert b'"valueDecimal":7.00' in client.get(f"/Task/{tid}").content
    # Conditional update through the criteria.
    r = client.put("/Task", params={"identifier": "urn:dec|1"}, content=body, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    _kept(r.content, "conditional update")
    r = client.post("/Task/$validate", content=TASK.replace("KEY", "v"), headers=FHIR_JSON)
    assert r.status_code == 200, r.text


def test_bundles_keep_decimals(client: httpx.Client) -> None:
    tid = _create(client)["id"]
    entry = '{"request":{"method":"POST","url":"Task"},"resource":' + TASK.replace("KEY", "2") + "}"
    read = '{"request":{"method":"GET","url":"Task/' + tid + '"}}'
    search = '{"request":{"method":"GET","url":"Task?_id=' + tid + '"}}'
    for kind in ("transaction", "batch"):
        bundle = ('{"resourceType":"Bundle","type":"' + kind + '","entry":['
                  + ",".join((entry, read, search)) + "]}")
        r = client.post("", content=bundle, headers={**FHIR_JSON, "prefer": "return=representation"})
        assert r.status_code == 200, r.text
        entries = r.json()["entry"]
        assert [e["response"]["status"][:3] for e in entries] == ["201", "200", "200"], kind
        compact = re.sub(rb"\s+", b"", r.content)
        for text in EXACT:
            assert compact.count(text) == 3, (kind, text)
