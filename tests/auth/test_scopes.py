"""scopes.py: parsing and the access decision, as a matrix of
context (patient/user/system) × syntax (v1/v2/granular) × interaction × in/out of compartment."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from fhir_server.auth.granular import matches_params
from fhir_server.auth.scopes import (
    Access,
    decide,
    narrow_scopes,
    parse_scope,
    readable_types,
)

INTERACTIONS = {
    "read": "r", "vread": "r", "history": "r", "search": "s", "create": "c",
    "update": "u", "patch": "u", "delete": "d",
}
# syntax -> (suffix, letters it grants, granular params)
GRANTS = {
    ("v1", "read"): (".read", "rs", ()),
    ("v1", "write"): (".write", "cud", ()),
    ("v1", "all"): (".*", "cruds", ()),
    ("v2", "rs"): (".rs", "rs", ()),
    ("v2", "cud"): (".cud", "cud", ()),
    ("v2", "cruds"): (".cruds", "cruds", ()),
    ("v2", "s"): (".s", "s", ()),
    ("granular", "rs"): (".rs?category=laboratory", "rs", (("category", "laboratory"),)),
}


def _observation(patient: str, category: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "subject": {"reference": f"Patient/{patient}"},
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": category}]}],
        "code": {"text": "x"},
    }


def _visible(access: Access, resource: dict[str, Any]) -> bool:
    for grant in access.grants:
        if grant.patient is not None and grant.patient != resource["subject"]["reference"].partition("/")[2]:
            continue
        if grant.params and not matches_params(resource, grant.params):
            continue
        return True
    return False


CASES = list(itertools.product(
    ("patient", "user", "system"), GRANTS, INTERACTIONS, ("in", "out"),
    ("Observation", "*"), ("p1", None), ("laboratory", "vital-signs"),
))


@pytest.mark.parametrize(("context", "grant", "interaction", "compartment", "type_",
                          "patient", "category"), CASES)
def test_scope_matrix(context: str, grant: tuple[str, str], interaction: str,
                      compartment: str, type_: str, patient: str | None,
                      category: str) -> None:
    suffix, letters, params = GRANTS[grant]
    scope = f"{context}/{type_}{suffix}"
    parsed = parse_scope(scope)
    assert parsed is not None, scope
    assert parsed.permissions == frozenset(letters)
    resource = _observation("p1" if compartment == "in" else "p2", category)
    access = decide([scope], "Observation", interaction, patient)

    letter_ok = INTERACTIONS[interaction] in letters
    context_ok = context != "patient" or patient is not None
    assert access.allowed == (letter_ok and context_ok), (scope, interaction, patient)
    if not access.allowed:
        return
    confined = context == "patient"
    assert access.patients == (frozenset({patient}) if confined else None)
    assert access.narrowing == ([list(params)] if params else None)
    expected = (not confined or compartment == "in") and (
        not params or category == "laboratory")
    assert _visible(access, resource) == expected
    # The same scope never opens another resource type, unless it is a wildcard.
    assert decide([scope], "Condition", interaction, patient).allowed == (type_ == "*")


@pytest.mark.parametrize("text", [
    "patient/Observation.sr",  # v2 letters out of order
    "patient/Observation.rr",
    "patient/Observation.x",
    "patient/Observation.read?category=x",  # granular needs v2
    "nurse/Observation.rs",
    "patient/observation.rs",
    "openid", "launch/patient", "offline_access", "fhirUser",
])
def test_not_resource_scopes(text: str) -> None:
    assert parse_scope(text) is None
    assert not decide([text], "Observation", "read", "p1").allowed


def test_write_does_not_imply_read_and_read_does_not_imply_write() -> None:
    assert not decide(["user/Task.cud"], "Task", "read", None).allowed
    assert not decide(["user/Task.cud"], "Task", "search", None).allowed
    assert not decide(["user/Task.rs"], "Task", "update", None).allowed
    assert decide(["user/Task.u"], "Task", "patch", None).allowed


def test_unknown_interaction_is_denied() -> None:
    assert not decide(["system/*.cruds"], "Task", "$everything", None).allowed


def test_granular_scopes_are_alternatives_and_unrestricted_wins() -> None:
    access = decide(["patient/Observation.rs?category=laboratory",
                     "patient/Observation.rs?category=vital-signs"],
                    "Observation", "search", "p1")
    assert access.narrowing == [[("category", "laboratory")], [("category", "vital-signs")]]
    assert access.patients == {"p1"}
    lab, vitals, imaging = (_observation("p1", c)
                            for c in ("laboratory", "vital-signs", "imaging"))
    assert _visible(access, lab) and _visible(access, vitals)
    assert not _visible(access, imaging)
    wider = decide(["user/Observation.rs", "patient/Observation.rs?category=laboratory"],
                   "Observation", "search", "p1")
    assert wider.unrestricted and wider.narrowing is None and wider.patients is None


def test_granular_user_scope_with_reference_parameter() -> None:
    access = decide(["user/Task.rs?owner=Practitioner/d1"], "Task", "search", None)
    mine = {"resourceType": "Task", "owner": {"reference": "Practitioner/d1"}}
    theirs = {"resourceType": "Task", "owner": {"reference": "Practitioner/d2"}}
    assert _visible(access, mine) and not _visible(access, theirs)


def test_readable_types() -> None:
    assert readable_types(["user/Task.rs", "user/Patient.c", "openid"]) == {"Task"}
    assert readable_types(["patient/*.read"]) is None


def test_narrow_scopes() -> None:
    granted = ["user/Observation.rs", "patient/*.cruds", "openid"]
    assert narrow_scopes(["user/Observation.r", "patient/Task.rs", "openid"], granted) == [
        "user/Observation.r", "patient/Task.rs", "openid"]
    assert narrow_scopes(["user/Observation.rsd", "fhirUser", "system/Task.rs"], granted) == []
    assert narrow_scopes(["patient/Observation.rs?category=laboratory"], granted) == [
        "patient/Observation.rs?category=laboratory"]
    # A granular grant never covers the unrestricted scope.
    assert narrow_scopes(["user/Observation.rs"],
                         ["user/Observation.rs?category=laboratory"]) == []
