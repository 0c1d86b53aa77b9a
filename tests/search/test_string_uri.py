"""String (starts-with, case/accent-insensitive, :exact, :contains) and uri (:below, :above)
parameters, and values that must stay plain values."""

from __future__ import annotations

import pytest

from tests.search.conftest import Searcher


@pytest.fixture
def people(s: Searcher) -> Searcher:
    s.put({"resourceType": "Patient", "id": "p1", "name": [{"family": "Müller", "given": ["Anna"]}],
           "address": [{"city": "Zürich", "postalCode": "8001"}],
           "meta": {"profile": ["http://example.org/fhir/StructureDefinition/patient-a"],
                    "source": "http://sys.example.org/feed#1"}})
    s.put({"resourceType": "Patient", "id": "p2", "name": [{"family": "Mueller", "given": ["Ben"]}],
           "meta": {"profile": ["http://example.org/fhir/StructureDefinition/other"]}})
    s.put({"resourceType": "Patient", "id": "p3", "name": [{"text": "Carla .* Smith",
                                                              "family": "Smith"}]})
    return s


def test_starts_with_folded(people: Searcher) -> None:
    assert people.idset("/Patient?family=mul") == {"p1"}
    assert people.idset("/Patient?family=MÜL") == {"p1"}
    assert people.idset("/Patient?family=mu") == {"p1", "p2"}
    assert people.idset("/Patient?name=anna") == {"p1"}
    assert people.idset("/Patient?address-city=zurich") == {"p1"}
    assert people.idset("/Patient?family=ller") == set()


def test_exact(people: Searcher) -> None:
    assert people.idset("/Patient?family:exact=Müller") == {"p1"}
    assert people.idset("/Patient?family:exact=müller") == set()
    assert people.idset("/Patient?family:exact=Smith") == {"p3"}
    assert people.idset("/Patient?family:exact=Smi") == set()


def test_contains(people: Searcher) -> None:
    assert people.idset("/Patient?family:contains=LLER") == {"p1", "p2"}
    assert people.idset("/Patient?name:contains=.*") == {"p3"}


def test_regex_and_operators_are_values(people: Searcher) -> None:
    assert people.idset("/Patient?family=.*") == set()
    assert people.idset("/Patient?family:contains=^M") == set()
    assert people.idset('/Patient?family={"$gt":""}') == set()
    assert people.idset('/Patient?_id={"$ne":null}') == set()
    assert people.idset("/Patient?family=$where") == set()
    assert people.idset("/Patient?family=" + "m" * 10_000) == set()


def test_uri(people: Searcher) -> None:
    profile = "http://example.org/fhir/StructureDefinition/patient-a"
    assert people.idset(f"/Patient?_profile={profile}") == {"p1"}
    assert people.idset("/Patient?_profile:below=http://example.org/fhir/") == {"p1", "p2"}
    assert people.idset(f"/Patient?_profile:above={profile}/extra/part") == {"p1"}
    assert people.idset("/Patient?_profile=http://example.org/fhir") == set()
    assert people.idset("/Patient?_source=http://sys.example.org/feed%231") == {"p1"}


def test_edge_code_points_are_values(people: Searcher) -> None:
    assert people.idset("/Patient?family=%F4%8F%BF%BF") == set()  # U+10FFFF
    assert people.idset("/Patient?family=%ED%9F%BF") == set()  # U+D7FF
    assert people.idset("/Patient?name:contains=%00") == set()
