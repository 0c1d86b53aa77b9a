"""Consent rules with Anna's people: care team, a denied practitioner, family access,
expiry, revocation, purpose of use, break-the-glass, and who may write a Consent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Mint
from tests.consent.conftest import World, actor, classes, consent, ids, ref

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


def test_without_consent_scopes_alone_decide(world: World) -> None:
    for person in ("gray", "chen", "paul"):
        assert getattr(world, person).get("/Task/anna-task").status_code == 200
    assert ids(world.clara.get("/Communication").json()) == {"anna-message"}


def test_opt_in_consent_permits_the_care_team_only(world: World) -> None:
    world.consent(consent({"type": "permit", "actor": [actor("CareTeam/anna-team")]}, policy="OPTIN"))
    # Dr. Gray is on the team; Dr. Chen through her cardiology role; Clara as family.
    for member in ("gray", "chen", "clara"):
        assert getattr(world, member).get("/Task/anna-task").status_code == 200, member
    # Paul is not: a direct read is refused, a search leaves Anna out (total included).
    assert world.paul.get("/Task/anna-task").status_code == 403
    found = world.paul.get("/Task", params={"_total": "accurate"}).json()
    assert ids(found) == {"bob-task"} and found["total"] == 1
    assert world.paul.get("/Patient/anna").status_code == 403
    assert world.paul.get("/Patient/bob").status_code == 200


def test_care_team_membership_ends_with_the_participant_period(world: World) -> None:
    team = world.admin.get("/CareTeam/anna-team").json()
    team["participant"][1]["period"] = {"end": "2020-01-01"}  # Dr. Chen left the team
    assert world.admin.put("/CareTeam/anna-team", json=team).status_code == 200
    world.consent(consent({"type": "permit", "actor": [actor("CareTeam/anna-team")]}, policy="OPTIN"))
    assert world.chen.get("/Task/anna-task").status_code == 403
    assert world.gray.get("/Task/anna-task").status_code == 200


def test_a_denied_practitioner_sees_and_changes_nothing_she_cannot_see(world: World) -> None:
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/chen")]}))
    assert world.chen.get("/Task/anna-task").status_code == 403
    assert ids(world.chen.get("/Appointment").json()) == set()
    assert world.gray.get("/Appointment/anna-visit").status_code == 200
    # Changing or deleting what she cannot see is refused as reading it is (403).
    task = world.gray.get("/Task/anna-task").json()
    assert world.chen.put("/Task/anna-task", json={**task, "status": "cancelled"}).status_code == 403
    assert world.chen.patch("/Task/anna-task", content=b'[{"op":"replace","path":"/status","value":"cancelled"}]',
                            headers={"Content-Type": "application/json-patch+json"}).status_code == 403
    assert world.chen.delete("/Task/anna-task").status_code == 403
    assert world.gray.get("/Task/anna-task").json()["status"] == "requested"
    # Adding to the record is a write: only a provision naming `collect` governs it.
    assert world.chen.post("/Task", json={**TASK, "for": ref("Patient/anna")}).status_code == 201


def test_the_organization_of_a_practitioner_is_an_actor(world: World) -> None:
    world.consent(consent({"type": "deny", "actor": [actor("Organization/heart-clinic")]}))
    assert world.chen.get("/Task/anna-task").status_code == 403
    assert world.gray.get("/Task/anna-task").status_code == 200


def test_the_daughter_sees_appointments_and_care_plan_but_not_messages(world: World) -> None:
    world.consent(consent({"type": "deny", "actor": [actor("RelatedPerson/clara")],
                           "class": classes("Communication")}))
    assert world.clara.get("/Appointment/anna-visit").status_code == 200
    assert world.clara.get("/CarePlan/anna-plan").status_code == 200
    assert world.clara.get("/Communication/anna-message").status_code == 403
    assert ids(world.clara.get("/Communication").json()) == set()
    # The GP still sees the message he sent.
    assert world.gray.get("/Communication/anna-message").status_code == 200


def test_an_opt_in_consent_lists_what_the_daughter_may_see(world: World) -> None:
    world.consent(consent({"type": "permit", "actor": [actor("RelatedPerson/clara")],
                           "action": [{"coding": [{"code": "access"}]}],
                           "class": classes("Appointment", "CarePlan", "Patient")}, policy="OPTIN"))
    assert world.clara.get("/Appointment/anna-visit").status_code == 200
    assert world.clara.get("/CarePlan/anna-plan").status_code == 200
    assert world.clara.get("/Patient/anna").status_code == 200
    assert world.clara.get("/Task/anna-task").status_code == 403
    assert world.clara.get("/Communication/anna-message").status_code == 403


def test_an_expired_consent_or_provision_does_not_apply(world: World) -> None:
    expired = consent({"period": {"start": "2020-01-01", "end": "2021-01-01"},
                       "type": "deny", "actor": [actor("Practitioner/paul")]})
    world.consent(expired)
    assert world.paul.get("/Task/anna-task").status_code == 200
    nested = consent({"provision": [{"type": "deny", "actor": [actor("Practitioner/paul")],
                                     "period": {"end": "2021-01-01"}}]})
    world.consent(nested)
    assert world.paul.get("/Task/anna-task").status_code == 200
    current = consent({"provision": [{"type": "deny", "actor": [actor("Practitioner/paul")],
                                      "period": {"start": "2021-01-01", "end": "2999-01-01"}}]})
    world.consent(current)
    assert world.paul.get("/Task/anna-task").status_code == 403


def test_a_revoked_consent_takes_effect_on_the_next_request(world: World) -> None:
    cid = world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")]}))
    assert world.paul.get("/Task/anna-task").status_code == 403
    revoked = {**world.anna.get(f"/Consent/{cid}").json(), "status": "inactive"}
    assert world.anna.put(f"/Consent/{cid}", json=revoked).status_code == 200
    assert world.paul.get("/Task/anna-task").status_code == 200
    again = world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")]}))
    assert world.paul.get("/Task/anna-task").status_code == 403
    assert world.anna.delete(f"/Consent/{again}").status_code == 200
    assert world.paul.get("/Task/anna-task").status_code == 200


def test_only_the_patient_and_clinicians_write_a_patients_consent(world: World, mint: Mint,
                                                                  secure: Callable[..., httpx.Client]) -> None:
    deny_paul = consent({"type": "deny", "actor": [actor("Practitioner/paul")]})
    # Anna cannot write Bob's Consent; her daughter cannot write Anna's (even with the scope).
    assert world.anna.post("/Consent", json={**deny_paul, "patient": ref("Patient/bob")}).status_code == 403
    clara = secure(mint("patient/*.cruds", patient="anna", fhir_user="RelatedPerson/clara"))
    permit_me = consent({"type": "permit", "actor": [actor("RelatedPerson/clara")]})
    assert clara.post("/Consent", json=permit_me).status_code == 403
    # The GP may record one on Anna's behalf.
    assert world.gray.post("/Consent", json=deny_paul).status_code == 201
    assert world.paul.get("/Task/anna-task").status_code == 403


def test_the_patient_is_never_kept_from_her_own_record(world: World) -> None:
    world.consent(consent({"type": "permit", "actor": [actor("Practitioner/gray")]}, policy="OPTIN"))
    assert world.anna.get("/Task/anna-task").status_code == 200
    assert ids(world.anna.get("/Communication").json()) == {"anna-message"}
    assert world.paul.get("/Task/anna-task").status_code == 403


def test_purpose_of_use_limits_a_permit(world: World, mint: Mint, secure: Callable[..., httpx.Client]) -> None:
    world.consent(consent({"type": "permit", "actor": [actor("Practitioner/paul")],
                           "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                        "code": "TREAT"}]}, policy="OPTIN"))
    assert world.paul.get("/Task/anna-task").status_code == 403
    # The header cannot assert a purpose the token does not grant.
    treat = {"X-Purpose-Of-Use": "TREAT"}
    assert world.paul.get("/Task/anna-task", headers=treat).status_code == 403
    # A token granting TREAT (a scope the authorization server grants) satisfies the permit.
    granted = secure(mint("user/*.rs purpose_of_use/TREAT purpose_of_use/HMARKT", fhir_user="Practitioner/paul"))
    assert granted.get("/Task/anna-task").status_code == 200
    assert granted.get("/Task/anna-task", headers=treat).status_code == 200
    # The header may narrow it: HMARKT alone is not a treatment.
    assert granted.get("/Task/anna-task", headers={"X-Purpose-Of-Use": "HMARKT"}).status_code == 403
    assert granted.get("/Task/anna-task", headers={"X-Purpose-Of-Use": "ETREAT"}).status_code == 403


def test_break_the_glass_passes_a_deny_for_allowed_scopes_only(world: World) -> None:
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul"), actor("RelatedPerson/clara")]}))
    btg = {"X-Purpose-Of-Use": "BTG"}
    assert world.paul.get("/Task/anna-task").status_code == 403
    assert world.paul.get("/Task/anna-task", headers=btg).status_code == 200
    assert ids(world.paul.get("/Task", headers=btg).json()) == {"anna-task", "bob-task"}
    # A patient-context token (the daughter's) is not allowed to break the glass.
    assert world.clara.get("/Task/anna-task", headers=btg).status_code == 403


def test_the_most_specific_provision_decides(world: World) -> None:
    # Opt-out; deny Paul everything except Anna's appointments, but not the one with Dr. Chen.
    world.consent(consent({"type": "deny", "actor": [actor("Practitioner/paul")], "provision": [
        {"type": "permit", "class": classes("Appointment"), "provision": [
            {"type": "deny", "data": [{"meaning": "instance", "reference": ref("Appointment/anna-visit")}]}]}]}))
    other: dict[str, Any] = {"resourceType": "Appointment", "status": "booked",
                             "participant": [{"actor": ref("Patient/anna"), "status": "accepted"}]}
    second = world.admin.post("/Appointment", json=other).json()["id"]
    assert ids(world.paul.get("/Appointment").json()) == {second}
    assert world.paul.get("/Appointment/anna-visit").status_code == 403
    assert world.paul.get("/CarePlan/anna-plan").status_code == 403
