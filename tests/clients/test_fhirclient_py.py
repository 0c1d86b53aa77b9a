"""The SMART Python client (`fhirclient` on PyPI): standalone launch, authorization code with
PKCE through our login page (password + TOTP, then the patient picker), then reads through
its models."""

from __future__ import annotations

from typing import Any

import httpx
import pyotp
import pytest
from fhirclient import client as smart_client
from fhirclient.models.patient import Patient
from fhirclient.models.practitioner import Practitioner
from fhirclient.models.task import Task
from fhirclient.server import FHIRNotFoundException, FHIRPermissionDeniedException, FHIRUnauthorizedException

from tests.clients.conftest import PageForm, SmartServer, follow_login

REDIRECT = "https://app.example.org/fhirclient/callback"


def test_standalone_launch_reads_tasks_of_the_chosen_patient(smart: SmartServer,
                                                             world: dict[str, str]) -> None:
    username, password, totp = smart.add_user("Practitioner/dr1", patients=("p1", "p2"))
    registered = smart.add_client(
        "--name", "fhirclient.py", "--redirect-uri", REDIRECT, "--auth-method", "none",
        "--scope", "launch/patient openid fhirUser offline_access patient/*.rs")
    state: dict[str, Any] = {}
    app = smart_client.FHIRClient(settings={
        "app_id": registered["client_id"],
        "api_base": smart.base,
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser offline_access patient/Task.rs patient/Patient.rs",
    }, save_func=state.update)

    # The library reads our CapabilityStatement's oauth-uris, then builds the authorize URL
    # (it adds launch/patient, state and a PKCE S256 challenge itself).
    authorize_url = app.authorize_url
    assert authorize_url.startswith(f"{smart.origin}/auth/authorize?")

    def fill(form: PageForm) -> dict[str, str]:
        if "patient" in form.choices:
            assert sorted(form.choices["patient"]) == ["p1", "p2"]
            return {"patient": "p1"}
        return {"username": username, "password": password, "totp": pyotp.TOTP(totp).now()}

    callback = follow_login(authorize_url, fill)
    assert callback.startswith(REDIRECT)
    app.handle_callback(callback)
    assert app.ready
    assert app.patient_id == "p1"
    assert app.launch_context["fhirUser"] == "Practitioner/dr1"
    assert "patient/Task.rs" in app.launch_context["scope"].split()

    patient = app.patient
    assert patient is not None and patient.name[0].family == "Chalmers"
    tasks = list(Task.where(struct={}).perform_resources_iter(app.server))
    assert {t.id for t in tasks} == {world["requested_p1"], world["completed_p1"]}
    assert all(t.for_fhir.reference == "Patient/p1" for t in tasks)
    assert Task.read(world["requested_p1"], app.server).status == "requested"
    # Outside the patient in context: not found; a type the token has no scope for: refused.
    with pytest.raises(FHIRNotFoundException):
        Task.read(world["requested_p2"], app.server)
    with pytest.raises(FHIRNotFoundException):
        Patient.read("p2", app.server)
    with pytest.raises(FHIRPermissionDeniedException):
        Practitioner.read("dr1", app.server)

    # offline_access gave a refresh token: the library's reauthorize uses it.
    old_token = app.server.auth.access_token
    assert app.reauthorize()
    assert app.server.auth.access_token != old_token
    assert Task.read(world["completed_p1"], app.server).status == "completed"

    # The app signs out: it revokes its access token (RFC 7009); the very next read is refused.
    revoked = httpx.post(f"{smart.origin}/auth/revoke", data={
        "token": app.server.auth.access_token, "client_id": registered["client_id"]})
    assert revoked.status_code == 200
    with pytest.raises(FHIRUnauthorizedException):
        Task.read(world["completed_p1"], app.server)
