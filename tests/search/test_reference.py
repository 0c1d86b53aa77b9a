"""Reference parameters (Type/id, id, absolute URL, :Type, :identifier, :missing), chaining
and reverse chaining (_has)."""

from __future__ import annotations

import pytest

from tests.search.conftest import Searcher


@pytest.fixture
def world(s: Searcher) -> Searcher:
    base = str(s.client.base_url).rstrip("/")
    s.put({"resourceType": "Patient", "id": "smith", "name": [{"family": "Smith"}],
           "identifier": [{"system": "http://mrn", "value": "111"}]})
    s.put({"resourceType": "Patient", "id": "jones", "name": [{"family": "Jones"}],
           "identifier": [{"system": "http://mrn", "value": "222"}]})
    s.put({"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Who"}],
           "identifier": [{"system": "http://npi", "value": "9"}]})
    s.put({"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
           "for": {"reference": "Patient/smith"}, "owner": {"reference": "Practitioner/doc"}})
    s.put({"resourceType": "Task", "id": "t2", "status": "requested", "intent": "order",
           "for": {"reference": f"{base}/Patient/jones"}, "focus": {"reference": "Task/t1"}})
    s.put({"resourceType": "Task", "id": "t3", "status": "completed", "intent": "order",
           "for": {"reference": "Group/smith"},
           "owner": {"identifier": {"system": "http://npi", "value": "9"}}})
    s.put({"resourceType": "Appointment", "id": "a1", "status": "booked",
           "participant": [{"actor": {"reference": "Practitioner/doc"}, "status": "accepted"},
                           {"actor": {"reference": "Patient/jones"}, "status": "accepted"}]})
    return s


def test_type_and_id(world: Searcher) -> None:
    assert world.idset("/Task?patient=Patient/smith") == {"t1"}
    assert world.idset("/Task?subject=Group/smith") == {"t3"}
    assert world.idset("/Task?subject=smith") == {"t1", "t3"}
    assert world.idset("/Task?patient=smith") == {"t1"}  # resolve() is Patient
    assert world.idset("/Task?subject:Patient=smith") == {"t1"}


def test_absolute_url(world: Searcher) -> None:
    base = str(world.client.base_url).rstrip("/")
    assert world.idset(f"/Task?patient={base}/Patient/jones") == {"t2"}
    assert world.idset("/Task?patient=Patient/jones") == {"t2"}
    assert world.idset("/Task?patient=http://elsewhere.org/fhir/Patient/jones") == set()


def test_identifier_modifier_and_missing(world: Searcher) -> None:
    assert world.idset("/Task?owner:identifier=http://npi|9") == {"t3"}
    assert world.idset("/Task?focus:missing=false") == {"t2"}
    assert world.idset("/Task?owner:missing=true") == {"t2"}


def test_chain(world: Searcher) -> None:
    assert world.idset("/Task?patient.name=smi") == {"t1"}
    assert world.idset("/Task?patient.identifier=http://mrn|222") == {"t2"}
    assert world.idset("/Task?patient:Patient.family=jones") == {"t2"}
    assert world.idset("/Appointment?actor:Practitioner.identifier=http://npi|9") == {"a1"}
    assert world.idset("/Appointment?actor:Patient.identifier=http://npi|9") == set()
    assert world.idset("/Task?focus:Task.patient.name=smith") == {"t2"}  # two levels


def test_reverse_chain(world: Searcher) -> None:
    assert world.idset("/Patient?_has:Task:patient:status=requested") == {"smith", "jones"}
    assert world.idset("/Patient?_has:Task:patient:owner=Practitioner/doc") == {"smith"}
    assert world.idset("/Task?_has:Task:focus:status=requested") == {"t1"}
    assert world.idset("/Practitioner?_has:Appointment:actor:status=booked") == {"doc"}
    assert world.idset("/Patient?_has:Task:patient:status=cancelled") == set()


def test_chain_errors(world: Searcher) -> None:
    assert "status" in world.error("/Task?status.name=x")
    assert "_has" in world.error("/Patient?_has:Task:nothing:status=requested")
    assert "_has" in world.error("/Patient?_has:Task=requested")
