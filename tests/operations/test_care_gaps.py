"""Measure/$care-gaps over HTTP: DEQM's answer shape (Parameters → one document Bundle per
patient: Composition + DetectedIssue), computed from CarePlan activities, filtered by status,
period, subject, practitioner and organization; bad input is a 400 OperationOutcome; the
caller sees only what the access decision lets them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fhir_server.operations.care_gaps import DEFINITION
from fhir_server.operations.gaps import CARE_GAP_SYSTEM, CLOSED, OPEN, PROSPECTIVE
from tests.conftest import Mint
from tests.workflows.caregaps_fixtures import A1C, activity, gap_state, when

Doc = dict[str, Any]
TODAY = datetime.now(UTC).date()
FOOT_EXAM = {"system": "http://snomed.info/sct", "code": "401191002", "display": "Diabetic foot examination"}
YEAR = {"periodStart": str(TODAY - timedelta(days=180)), "periodEnd": str(TODAY + timedelta(days=180))}


def _put(api: httpx.Client, resource: Doc) -> None:
    response = api.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text


def _seed(api: httpx.Client) -> None:
    """p1 (Dr One, North): a plan with an overdue foot exam (open), an overdue one completed
    (closed), one due in ten days (prospective), one overdue for HbA1c with the Observation
    that shows it done (closed). p2 (Dr One): nothing overdue. p3 (Dr Two, South): one open."""
    for rid in ("one", "two"):
        _put(api, {"resourceType": "Practitioner", "id": rid, "name": [{"family": rid}]})
    for rid in ("north", "south"):
        _put(api, {"resourceType": "Organization", "id": rid, "name": rid})
    for rid, gp, org in (("p1", "one", "north"), ("p2", "one", "north"), ("p3", "two", "south")):
        _put(api, {"resourceType": "Patient", "id": rid, "generalPractitioner": [{"reference": f"Practitioner/{gp}"}],
                   "managingOrganization": {"reference": f"Organization/{org}"}})
    overdue = {"scheduledPeriod": {"end": when(-timedelta(days=2))}}
    _put(api, {"resourceType": "CarePlan", "id": "plan1", "status": "active", "intent": "plan",
               "subject": {"reference": "Patient/p1"}, "activity": [
                   activity(overdue, code=FOOT_EXAM),
                   activity(overdue, status="completed"),
                   activity({"scheduledPeriod": {"end": when(timedelta(days=10))}}, code=FOOT_EXAM),
                   activity({"scheduledTiming": {"event": [when(-timedelta(days=5))]}}, code=A1C)]})
    _put(api, {"resourceType": "Observation", "id": "a1c", "status": "final", "code": {"coding": [A1C]},
               "subject": {"reference": "Patient/p1"}, "basedOn": [{"reference": "CarePlan/plan1"}],
               "effectiveDateTime": when(-timedelta(days=4))})
    _put(api, {"resourceType": "CarePlan", "id": "plan2", "status": "active", "intent": "plan",
               "subject": {"reference": "Patient/p2"},
               "activity": [activity({"scheduledPeriod": {"end": when(timedelta(days=3))}})]})
    _put(api, {"resourceType": "CarePlan", "id": "plan3", "status": "active", "intent": "plan",
               "subject": {"reference": "Patient/p3"}, "activity": [activity(overdue)]})


def _gaps(api: httpx.Client, **params: str) -> Doc:
    response = api.get("/Measure/$care-gaps", params=params)
    assert response.status_code == 200, response.text
    body: Doc = response.json()
    assert body["resourceType"] == "Parameters"
    return body


def _reports(body: Doc) -> dict[str, list[Doc]]:
    """Per patient, the DetectedIssues of its return Bundle (checking the document's shape)."""
    out: dict[str, list[Doc]] = {}
    for parameter in body.get("parameter", []):
        assert parameter["name"] == "return"
        bundle = parameter["resource"]
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "document"
        assert bundle["identifier"]["value"].startswith("urn:uuid:") and bundle["timestamp"]
        composition, *rest = [e["resource"] for e in bundle["entry"]]
        assert composition["resourceType"] == "Composition" and composition["status"] == "final"
        assert composition["type"]["coding"][0]["code"] == "96315-7"
        urls = [e["fullUrl"] for e in bundle["entry"][1:]]
        assert [s["entry"][0]["reference"] for s in composition.get("section", [])] == urls
        assert {r["resourceType"] for r in rest} <= {"DetectedIssue"}
        out[composition["subject"]["reference"]] = rest
    return out


def test_open_closed_and_prospective_gaps_of_one_patient(client: httpx.Client) -> None:
    _seed(client)
    reports = _reports(_gaps(client, subject="Patient/p1", status="open-gap", **YEAR))
    assert list(reports) == ["Patient/p1"]
    [issue] = reports["Patient/p1"]
    assert gap_state(issue) == OPEN
    assert issue["code"]["coding"][0]["code"] == "CAREGAP"
    assert issue["implicated"] == [{"reference": "CarePlan/plan1"}] and issue["patient"] == {"reference": "Patient/p1"}
    assert issue["identifier"][0]["system"] == CARE_GAP_SYSTEM
    assert issue["identifier"][0]["value"].startswith("CarePlan/plan1/activity/0/")
    closed = _reports(_gaps(client, subject="Patient/p1", status="closed-gap", **YEAR))["Patient/p1"]
    assert sorted(i["identifier"][0]["value"].split("/")[3] for i in closed) == ["1", "3"]
    assert {gap_state(i) for i in closed} == {CLOSED}
    every = _reports(_gaps(client, subject="Patient/p1", status="open-gap,closed-gap", **{
        "periodStart": YEAR["periodStart"]}, periodEnd=YEAR["periodEnd"]))["Patient/p1"]
    assert len(every) == 3
    prospective = _reports(_gaps(client, subject="Patient/p1", status="prospective-gap", **YEAR))["Patient/p1"]
    assert [gap_state(i) for i in prospective] == [PROSPECTIVE]
    # A period that ends before the overdue activity was due holds none of them.
    early = _reports(_gaps(client, subject="Patient/p1", status="open-gap", periodStart="2000-01-01",
                           periodEnd=str(TODAY - timedelta(days=30))))
    assert early == {"Patient/p1": []}  # the subject's report is there, with no gap


def test_post_parameters_answers_as_get(client: httpx.Client) -> None:
    _seed(client)
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "periodStart", "valueDate": YEAR["periodStart"]}, {"name": "periodEnd", "valueDate": YEAR["periodEnd"]},
        {"name": "subject", "valueString": "Patient/p1"}, {"name": "status", "valueCode": "open-gap"}]}
    posted = client.post("/Measure/$care-gaps", json=body, headers={"Content-Type": "application/fhir+json"})
    assert posted.status_code == 200, posted.text
    got = _gaps(client, subject="Patient/p1", status="open-gap", **YEAR)
    ids = [[i["identifier"] for i in r] for r in _reports(posted.json()).values()]
    assert ids == [[i["identifier"] for i in r] for r in _reports(got).values()]


def test_by_practitioner_and_by_organization(client: httpx.Client) -> None:
    _seed(client)
    by_one = _reports(_gaps(client, practitioner="Practitioner/one", status="open-gap", **YEAR))
    assert list(by_one) == ["Patient/p1"]  # p2 has no open gap: no report
    by_south = _reports(_gaps(client, organization="Organization/south", status="open-gap", **YEAR))
    assert list(by_south) == ["Patient/p3"]
    both = _reports(_gaps(client, organization="Organization/north", practitioner="Practitioner/two",
                          status="open-gap", **YEAR))
    assert both == {}
    assert _gaps(client, organization="Organization/north", practitioner="Practitioner/two",
                 status="open-gap", **YEAR) == {"resourceType": "Parameters"}


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"subject": "Patient/p1", "status": "open-gap", "periodEnd": "2030-01-01"}, 400, "required"),
    ({"subject": "Patient/p1", "periodStart": "2020-01-01", "periodEnd": "2030-01-01"}, 400, "required"),
    ({"subject": "Patient/p1", "status": "open", **YEAR}, 400, "value"),
    ({"subject": "Patient/p1", "status": "open-gap", "periodStart": "2030-01-01", "periodEnd": "2020-01-01"},
     400, "value"),
    ({"subject": "Patient/p1", "status": "open-gap", "periodStart": "yesterday", "periodEnd": "2030-01-01"},
     400, "value"),
    ({"subject": "Group/g", "status": "open-gap", **YEAR}, 400, "not-supported"),
    ({"subject": "p1", "status": "open-gap", **YEAR}, 400, "value"),
    ({"subject": "Patient/p1", "practitioner": "Practitioner/one", "status": "open-gap", **YEAR}, 400, "value"),
    ({"subject": "Patient/p1", "measureId": "m", "status": "open-gap", **YEAR}, 400, "not-supported"),
    ({"subject": "Patient/p1", "colour": "red", "status": "open-gap", **YEAR}, 400, "invalid"),
    ({"status": "open-gap", **YEAR}, 400, "required"),
    ({"organization": "Practitioner/one", "status": "open-gap", **YEAR}, 400, "value"),
    ({"subject": "Patient/nobody", "status": "open-gap", **YEAR}, 404, "not-found"),
])
def test_bad_requests_are_operation_outcomes(client: httpx.Client, params: dict[str, str], status: int,
                                              code: str) -> None:
    _seed(client)
    response = client.get("/Measure/$care-gaps", params=params)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


def test_post_without_parameters_is_400(client: httpx.Client) -> None:
    for body in ({"resourceType": "Patient"}, {"resourceType": "Parameters", "parameter": [{"name": "status"}]},
                 {"resourceType": "Parameters", "parameter": "x"}):
        response = client.post("/Measure/$care-gaps", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get("/CarePlan").json().get("total") == 0  # nothing was written


def test_the_operation_is_declared_and_defined(client: httpx.Client) -> None:
    resources = {r["type"]: r for r in client.get("/metadata").json()["rest"][0]["resource"]}
    assert resources["Measure"]["operation"] == [{"name": "care-gaps", "definition": DEFINITION}]
    assert "interaction" not in resources["Measure"]
    definition = client.get("/OperationDefinition/care-gaps")
    assert definition.status_code == 200
    body = definition.json()
    assert body["url"] == DEFINITION and body["code"] == "care-gaps" and body["resource"] == ["Measure"]
    assert "NOT computed from Measures or CQL" in body["description"]
    assert {p["name"] for p in body["parameter"]} >= {"periodStart", "periodEnd", "subject", "status", "return"}
    assert client.get("/OperationDefinition/nope").status_code == 404


@pytest.mark.parametrize("who", ["p1", "p3"])
def test_a_patient_token_sees_only_its_own_gaps(secure: Callable[..., httpx.Client], mint: Mint, who: str) -> None:
    _seed(secure(mint("system/*.cruds")))
    app = secure(mint("patient/*.rs", patient=who))
    asked = app.get("/Measure/$care-gaps", params={"subject": "Patient/p1", "status": "open-gap", **YEAR})
    if who == "p1":
        assert asked.status_code == 200
        assert len(_reports(asked.json())["Patient/p1"]) == 1
    else:
        assert asked.status_code == 404  # p1 is not p3's to see (nor to know of)
    # Asked by organization, each patient token gets its own report only, or none.
    every = _reports(_gaps(app, organization="Organization/north", status="open-gap", **YEAR))
    assert list(every) == (["Patient/p1"] if who == "p1" else [])
    assert secure().get("/Measure/$care-gaps", params={"subject": "Patient/p1", "status": "open-gap",
                                                        **YEAR}).status_code == 401
