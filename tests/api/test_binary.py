"""Binary: raw content in and out, or as a FHIR resource."""

from __future__ import annotations

import base64

import httpx

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3 referral letter\x00\x01\x02"


def test_raw_upload_and_download(client: httpx.Client) -> None:
    r = client.post("/Binary", content=PDF, headers={"content-type": "application/pdf"})
    assert r.status_code == 201
    binary = r.json()
    assert binary["contentType"] == "application/pdf"
    assert base64.b64decode(binary["data"]) == PDF
    raw = client.get(f"/Binary/{binary['id']}", headers={"accept": "application/pdf"})
    assert raw.status_code == 200
    assert raw.content == PDF
    assert raw.headers["content-type"] == "application/pdf"
    assert raw.headers["etag"] == 'W/"1"'
    as_fhir = client.get(f"/Binary/{binary['id']}", headers={"accept": "application/fhir+json"})
    assert as_fhir.json()["resourceType"] == "Binary"
    assert as_fhir.json()["data"] == binary["data"]


def test_binary_as_fhir_resource_and_raw_update(client: httpx.Client) -> None:
    resource = {"resourceType": "Binary", "contentType": "text/plain",
                "data": base64.b64encode(b"hello").decode()}
    created = client.post("/Binary", json=resource).json()
    raw = client.get(f"/Binary/{created['id']}", headers={"accept": "text/plain"})
    assert raw.content == b"hello"
    r = client.put(f"/Binary/{created['id']}", content=b"goodbye", headers={"content-type": "text/plain"})
    assert r.status_code == 200
    assert client.get(f"/Binary/{created['id']}", headers={"accept": "text/plain"}).content == b"goodbye"


def test_binary_security_context_header(client: httpx.Client) -> None:
    r = client.post("/Binary", content=b"x", headers={"content-type": "image/png",
                                                       "X-Security-Context": "Patient/p1"})
    assert r.json()["securityContext"] == {"reference": "Patient/p1"}
