"""The patient portal in Debian's Chromium, through real standalone launches and our login page
(auth on): every view renders the seeded data at 1280×800 and 390×844 with no serious
accessibility violation (axe-core); every action changes the right resource, checked through
the FHIR API; a change by another client appears in the open view without reload; a family
member (RelatedPerson) sees exactly what the patient's Consent shares, and is told on whose
behalf they act. Screenshots of each view go to test-artifacts/apps/.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from fhir_server.operations.join import VISIT_SYSTEM
from tests.apps.axe import assert_accessible
from tests.apps.test_apps_browser import SIZES, _page, _seed, _shoot, _sign_in, browser  # noqa: F401 (fixture)
from tests.clients.conftest import SmartServer
from tests.helpers import PATIENCE
from tests.subscriptions.conftest import wait_until
from tests.telehealth.conftest import virtual_appointment

VISIT_TASKS = "http://fhir.care-coord.example/CodeSystem/visit-task"
PRE_VISIT = "http://fhir.care-coord.example/Questionnaire/pre-visit"
FAMILY_ACCESS = "http://fhir.care-coord.example/CodeSystem/portal-family-access"
VIEWS = ("visits", "messages", "careplan", "documents", "preferences", "consents")
PDF = b"%PDF-1.4 discharge letter of Anna Chalmers"


def _instant(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _admin(smart: SmartServer) -> httpx.Client:
    return httpx.Client(base_url=smart.base, timeout=30,
                        headers={"Authorization": f"Bearer {smart.mint('system/*.cruds')}"})


def _as(smart: SmartServer, fhir_user: str) -> httpx.Client:
    return httpx.Client(base_url=smart.base, timeout=30, headers={
        "Authorization": f"Bearer {smart.mint('user/*.cruds', fhir_user=fhir_user)}"})


def _world(smart: SmartServer) -> dict[str, str]:
    """Anna (p1) with a video visit starting in 10 minutes (its room recorded, a pre-visit
    questionnaire asked for), a visit next week, another patient's visit, a thread from her GP,
    a care plan with a goal, a document, and her daughter Clara."""
    soon, later = datetime.now(UTC) + timedelta(minutes=10), datetime.now(UTC) + timedelta(days=7)
    video = virtual_appointment("Patient/p1", "Practitioner/dr1", soon)
    video.update(id="v1", description="Video check-in with Dr. Osler")
    # The room as the engine records it on booking (the built-in provider's address).
    video["extension"][0]["extension"].append({"url": "address", "valueUrl": f"{smart.base}/$visit/v1"})
    names = ["p1", "p2", "dr1", "clara", "v1", "later", "other", "q", "qtask", "goal", "plan"]
    ids = dict(zip(names, _seed(smart, [
        {"resourceType": "Patient", "id": "p1", "name": [{"given": ["Anna"], "family": "Chalmers"}],
         "telecom": [{"system": "email", "value": "anna@example.org", "rank": 1}]},
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "Windsor"}]},
        {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Osler"}]},
        {"resourceType": "RelatedPerson", "id": "clara", "patient": {"reference": "Patient/p1"},
         "name": [{"given": ["Clara"], "family": "Chalmers"}], "relationship": [{"text": "daughter"}]},
        video,
        {"resourceType": "Appointment", "status": "booked", "description": "Cardiology follow-up",
         "start": _instant(later), "end": _instant(later + timedelta(minutes=30)),
         "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]},
        {"resourceType": "Appointment", "status": "booked", "description": "Another patient's visit",
         "start": _instant(later), "end": _instant(later + timedelta(minutes=30)),
         "participant": [{"actor": {"reference": "Patient/p2"}, "status": "accepted"}]},
        {"resourceType": "Questionnaire", "status": "active", "url": PRE_VISIT, "title": "Before your visit", "item": [
            {"linkId": "symptoms", "text": "What brings you to this visit?", "type": "text", "required": True},
            {"linkId": "feeling", "text": "How do you feel today?", "type": "choice", "answerOption": [
                {"valueCoding": {"system": "urn:example:feeling", "code": "good", "display": "Good"}},
                {"valueCoding": {"system": "urn:example:feeling", "code": "poor", "display": "Poor"}}]},
            {"linkId": "smoker", "text": "Do you smoke?", "type": "boolean"}]},
        {"resourceType": "Task", "status": "requested", "intent": "order", "description": "Answer the pre-visit questionnaire",
         "code": {"coding": [{"system": VISIT_TASKS, "code": "pre-visit-questionnaire"}]},
         "focus": {"reference": "Appointment/v1"}, "for": {"reference": "Patient/p1"}, "owner": {"reference": "Patient/p1"},
         "input": [{"type": {"text": "questionnaire"}, "valueCanonical": PRE_VISIT}]},
        {"resourceType": "Goal", "lifecycleStatus": "active", "subject": {"reference": "Patient/p1"},
         "description": {"text": "Blood pressure under 140/90"}},
        {"resourceType": "CarePlan", "status": "active", "intent": "plan", "title": "Heart health",
         "subject": {"reference": "Patient/p1"},
         "activity": [{"detail": {"status": "scheduled", "description": "Walk 30 minutes a day"}}]},
    ]), strict=True))
    with _admin(smart) as admin:
        plan = admin.get(f"/CarePlan/{ids['plan']}").json()
        plan["goal"] = [{"reference": f"Goal/{ids['goal']}"}]
        assert admin.put(f"/CarePlan/{ids['plan']}", json=plan).status_code == 200
        binary = admin.post("/Binary", json={"resourceType": "Binary", "contentType": "application/pdf",
                                             "data": base64.b64encode(PDF).decode(),
                                             "securityContext": {"reference": "Patient/p1"}})
        assert binary.status_code == 201, binary.text
        ids["binary"] = binary.json()["id"]
        doc = admin.post("/DocumentReference", json={
            "resourceType": "DocumentReference", "status": "current", "description": "Discharge letter",
            "subject": {"reference": "Patient/p1"}, "date": _instant(datetime.now(UTC)),
            "content": [{"attachment": {"contentType": "application/pdf", "url": f"Binary/{ids['binary']}",
                                        "title": "discharge-letter.pdf"}}]})
        assert doc.status_code == 201, doc.text
        ids["doc"] = doc.json()["id"]
    with _as(smart, "Practitioner/dr1") as gp:
        header = gp.post("/Communication", json={
            "resourceType": "Communication", "status": "completed", "subject": {"reference": "Patient/p1"},
            "topic": {"text": "Your blood results"},
            "recipient": [{"reference": "Patient/p1"}, {"reference": "RelatedPerson/clara"}]})
        assert header.status_code == 201, header.text
        ids["thread"] = header.json()["id"]
        message = gp.post("/Communication", json={
            "resourceType": "Communication", "status": "completed", "subject": {"reference": "Patient/p1"},
            "partOf": [{"reference": f"Communication/{ids['thread']}"}],
            "payload": [{"contentString": "Your results are fine."}]})
        assert message.status_code == 201, message.text
        ids["message"] = message.json()["id"]
    return ids


def _sign_in_picking(page: Page, smart: SmartServer, fhir_user: str, patient: str) -> None:
    """A standalone launch of the portal by a user who may pick among patients (a family
    member): our login page, then its patient picker."""
    username, password, totp = smart.add_user(fhir_user, patients=(patient,))
    page.goto(f"{smart.origin}/apps/portal/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.fill("input[name=totp]", pyotp.TOTP(totp).now())
    page.click("button[type=submit]")
    page.check(f"input[name=patient][value='{patient}']")
    page.click("button[type=submit]")
    page.wait_for_function("() => ['ready', 'error'].some(s => (document.getElementById('status')?.textContent ?? '').startsWith(s))")
    assert page.text_content("#status") == "ready", page.text_content("#status")


def _open(page: Page, view: str) -> None:
    page.click(f"a[data-view={view}]")
    page.wait_for_function(f"() => document.getElementById('content').dataset.view === '{view}'"
                           " && document.getElementById('status').textContent === 'ready'"
                           f" && document.getElementById('{view}') !== null")


def _wait(page: Page, selector: str, timeout: float = 20_000) -> Any:
    """The element, once there; else what the app said went wrong."""
    try:
        return page.wait_for_selector(selector, timeout=timeout * PATIENCE)
    except PlaywrightTimeout as exc:
        raise AssertionError(f"{selector} never appeared; the app says: {page.text_content('#status')}") from exc


def _live(page: Page) -> None:
    page.wait_for_function("() => document.getElementById('live').dataset.state === 'live'")


def _texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


@pytest.mark.parametrize("size", list(SIZES))
def test_every_view_shows_the_patients_data_accessibly(browser: Browser, smart: SmartServer, size: str) -> None:  # noqa: F811
    ids = _world(smart)
    page = _page(browser, size)
    _sign_in(page, smart, "portal", "Patient/p1", patients=("p1",))
    assert page.text_content("#user") == "Patient/p1"
    assert page.text_content("#behalf") == ""
    assert page.locator("#views a").evaluate_all("as => as.map(a => a.dataset.view)") == list(VIEWS)
    page.wait_for_selector("#visits li")
    assert page.locator("#visits li").evaluate_all("ls => ls.map(l => l.dataset.id)") == [ids["v1"], ids["later"]]
    # Only the visit inside its window can be joined; its questionnaire waits to be answered.
    assert page.locator(f"li[data-id='{ids['v1']}'] [data-action=join]").count() == 1
    assert page.locator(f"li[data-id='{ids['later']}'] [data-action=join]").count() == 0
    assert page.locator(f"li[data-id='{ids['v1']}'] [data-action=questionnaire]").count() == 1
    checked = {}
    for view in VIEWS:
        if view != "visits":
            _open(page, view)
        assert page.get_attribute(f"a[data-view={view}]", "aria-current") == "page"
        checked[view] = assert_accessible(page, f"portal {view} ({size})")
        _shoot(page, f"portal-{view}-{size}")
        if view == "messages":
            assert _texts(page, "#messages ul.threads button") == ["Your blood results"]
            assert page.get_attribute(f"li[data-id='{ids['thread']}'] .badge", "data-beyond") == "1"
        elif view == "careplan":
            assert _texts(page, "#careplan ul.activities li") == ["Walk 30 minutes a day (scheduled)"]
            assert _texts(page, "#careplan ul.goals li") == ["Blood pressure under 140/90 (active)"]
        elif view == "documents":
            assert page.locator("#documents li").evaluate_all("ls => ls.map(l => l.dataset.id)") == [ids["doc"]]
        elif view == "preferences":
            assert page.is_checked("#channel-email") and page.input_value("#addr-email") == "anna@example.org"
        elif view == "consents":
            assert page.get_attribute("#consents li[data-id=clara]", "data-access") == "unset"
    # The questionnaire, opened, is checked too.
    _open(page, "visits")
    page.click(f"li[data-id='{ids['v1']}'] [data-action=questionnaire]")
    page.wait_for_selector("section.questionnaire form")
    assert_accessible(page, f"portal questionnaire ({size})")
    _shoot(page, f"portal-questionnaire-{size}")
    assert page.evaluate("() => localStorage.length") == 0
    page.context.close()


def test_the_patients_actions_change_the_right_resources(browser: Browser, smart: SmartServer) -> None:  # noqa: F811
    ids = _world(smart)
    page = _page(browser, "desktop")
    _sign_in(page, smart, "portal", "Patient/p1", patients=("p1",))
    admin = _admin(smart)
    # Join the video visit: the server checks in (one Encounter) and hands out the room's link.
    page.click(f"li[data-id='{ids['v1']}'] [data-action=join]")
    link = _wait(page, f"li[data-id='{ids['v1']}'] a.join-link")
    assert (link.get_attribute("href") or "").startswith(f"{smart.base}/$visit/")
    # The list repaints on every live event (here: a visit booked elsewhere) and on every
    # reconnect of its socket; the room link stays.
    _live(page)
    start = datetime.now(UTC) + timedelta(days=14)
    booked = admin.post("/Appointment", json={
        "resourceType": "Appointment", "status": "booked", "description": "Booked by the front desk",
        "start": _instant(start), "end": _instant(start + timedelta(minutes=20)),
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]})
    assert booked.status_code == 201, booked.text
    _wait(page, f"li[data-id='{booked.json()['id']}']")
    assert page.query_selector(f"li[data-id='{ids['v1']}'] a.join-link") is not None
    encounters = admin.get("/Encounter", params={"appointment": f"Appointment/{ids['v1']}"}).json()
    assert [e["resource"]["identifier"][0]["system"] for e in encounters["entry"]] == [VISIT_SYSTEM]
    # The pre-visit questionnaire: the answers become a QuestionnaireResponse, the Task's output.
    page.click(f"li[data-id='{ids['v1']}'] [data-action=questionnaire]")
    page.fill("textarea[name=symptoms]", "Short of breath on stairs")
    page.select_option("select[name=feeling]", label="Poor")
    page.check("input[name=smoker]")
    page.click("section.questionnaire button[type=submit]")
    _wait(page, f"li[data-id='{ids['v1']}'] .done")
    task = admin.get(f"/Task/{ids['qtask']}").json()
    assert task["status"] == "completed"
    answer_ref = task["output"][0]["valueReference"]["reference"]
    answer = admin.get(f"/{answer_ref}").json()
    assert answer["questionnaire"] == PRE_VISIT and answer["subject"] == {"reference": "Patient/p1"}
    assert answer["status"] == "completed"
    assert [(i["linkId"], i["answer"]) for i in answer["item"]] == [
        ("symptoms", [{"valueString": "Short of breath on stairs"}]),
        ("feeling", [{"valueCoding": {"system": "urn:example:feeling", "code": "poor", "display": "Poor"}}]),
        ("smoker", [{"valueBoolean": True}])]
    # Messages: opening the thread shows its message and moves my render cursor (this app).
    _open(page, "messages")
    page.click(f"button[data-thread='{ids['thread']}']")
    page.wait_for_function(f"() => document.getElementById('thread-messages')?.dataset.rendered === '{ids['message']}'")
    state = admin.get(f"/Communication/{ids['thread']}/$render-state").json()
    mine = next(p for p in state["parameter"] if p["name"] == "participant"
                and p["part"][0]["valueReference"]["reference"] == "Patient/p1")
    cursors = [q for q in mine["part"] if q["name"] == "cursor"]
    assert [(part(c, "source")["valueString"], part(c, "message")["valueReference"]["reference"]) for c in cursors] == [
        ("patient-portal", f"Communication/{ids['message']}")]
    page.fill("#reply-text", "Thank you, doctor")
    page.click("#thread button[type=submit]")
    page.wait_for_function("() => [...document.querySelectorAll('#thread-messages li')].some(l => l.textContent.includes('Thank you, doctor'))")
    replies = admin.get("/Communication", params={"part-of": f"Communication/{ids['thread']}", "sender": "Patient/p1"}).json()
    assert [e["resource"]["payload"][0]["contentString"] for e in replies["entry"]] == ["Thank you, doctor"]
    # Documents: the download is the Binary's content, read with my token.
    _open(page, "documents")
    with page.expect_download() as download:
        page.click(f"li[data-id='{ids['doc']}'] [data-action=download]")
    assert download.value.suggested_filename == "discharge-letter.pdf"
    assert Path(download.value.path()).read_bytes() == PDF
    # Preferences: text messages first, in Spanish, where the reminders read them.
    _open(page, "preferences")
    page.check("#channel-sms")
    page.fill("#addr-sms", "+15555550123")
    page.select_option("#language", "es")
    page.click("#preferences button[type=submit]")
    wait_until(lambda: any(t.get("system") == "sms" and t.get("rank") == 1
                           for t in admin.get("/Patient/p1").json().get("telecom", [])))
    patient = admin.get("/Patient/p1").json()
    assert sorted((t["system"], t["value"], t["rank"]) for t in patient["telecom"]) == [
        ("email", "anna@example.org", 2), ("sms", "+15555550123", 1)]
    assert patient["communication"] == [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]},
                                         "preferred": True}]
    # Sharing: grant Clara visits and the care plan, then revoke it all.
    _open(page, "consents")
    page.check("#grant-clara-visits")
    page.check("#grant-clara-careplan")
    page.click("form[data-person=clara] [data-action=grant]")
    page.wait_for_function("() => document.querySelector('#consents li[data-id=clara]')?.dataset.access === 'visits careplan'")
    consents = admin.get("/Consent", params={"patient": "Patient/p1", "identifier": f"{FAMILY_ACCESS}|RelatedPerson/clara"}).json()
    assert len(consents["entry"]) == 1
    consent = consents["entry"][0]["resource"]
    assert consent["status"] == "active" and consent["provision"]["type"] == "deny"
    assert sorted(c["code"] for c in consent["provision"]["provision"][0]["class"]) == [
        "Appointment", "CarePlan", "Encounter", "Goal", "Patient"]
    page.click("form[data-person=clara] [data-action=revoke]")
    page.wait_for_function("() => document.querySelector('#consents li[data-id=clara]')?.dataset.access === 'none'")
    assert page.text_content("#consents li[data-id=clara] .access") == "Sees nothing of your record"
    revoked = admin.get(f"/Consent/{consent['id']}").json()
    assert revoked["meta"]["versionId"] == "2" and "provision" not in revoked["provision"]
    # Revoked means revoked: Clara now sees nothing of Anna's, not the server's default.
    with httpx.Client(base_url=smart.base, timeout=30, headers={"Authorization": "Bearer " + smart.mint(
            "patient/*.rs", patient="p1", fhir_user="RelatedPerson/clara")}) as clara:
        assert clara.get("/Appointment", params={"patient": "Patient/p1"}).json().get("entry", []) == []
    page.context.close()
    admin.close()


def part(parameter: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in parameter["part"] if p["name"] == name)


def test_a_change_by_another_client_appears_in_the_open_view(browser: Browser, smart: SmartServer) -> None:  # noqa: F811
    ids = _world(smart)
    page = _page(browser, "desktop")
    _sign_in(page, smart, "portal", "Patient/p1", patients=("p1",))
    _live(page)
    soon = datetime.now(UTC) + timedelta(days=2)
    with _admin(smart) as admin:
        created = admin.post("/Appointment", json={
            "resourceType": "Appointment", "status": "booked", "description": "Physiotherapy",
            "start": _instant(soon), "end": _instant(soon + timedelta(minutes=30)),
            "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]})
        assert created.status_code == 201
        page.wait_for_selector(f"#visits li[data-id='{created.json()['id']}']", timeout=10_000)
        # And a new message in the open thread.
        _open(page, "messages")
        page.click(f"button[data-thread='{ids['thread']}']")
        _live(page)
    with _as(smart, "Practitioner/dr1") as gp:
        sent = gp.post("/Communication", json={
            "resourceType": "Communication", "status": "completed", "subject": {"reference": "Patient/p1"},
            "partOf": [{"reference": f"Communication/{ids['thread']}"}], "payload": [{"contentString": "One more thing"}]})
        assert sent.status_code == 201
    page.wait_for_selector(f"#thread-messages li[data-id='{sent.json()['id']}']", timeout=10_000)
    page.context.close()


def test_a_family_member_sees_what_the_consent_shares_on_whose_behalf(browser: Browser, smart: SmartServer) -> None:  # noqa: F811
    ids = _world(smart)
    _seed(smart, [{
        "resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p1"},
        "identifier": [{"system": FAMILY_ACCESS, "value": "RelatedPerson/clara"}],
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny", "actor": [{"role": {"text": "IRCP"}, "reference": {"reference": "RelatedPerson/clara"}}],
                      "provision": [{"type": "permit",
                                     "actor": [{"role": {"text": "IRCP"}, "reference": {"reference": "RelatedPerson/clara"}}],
                                     "class": [{"system": "http://hl7.org/fhir/resource-types", "code": c}
                                               for c in ("Patient", "Appointment", "Encounter")]}]}}])
    page = _page(browser, "phone")
    _sign_in_picking(page, smart, "RelatedPerson/clara", "p1")
    assert page.text_content("#user") == "RelatedPerson/clara"
    assert (page.text_content("#behalf") or "").startswith("Acting on behalf of Anna Chalmers (Patient/p1)")
    # No preferences for her to change; the rest of the portal, as far as the Consent shares it.
    assert page.locator("#views a").evaluate_all("as => as.map(a => a.dataset.view)") == [
        "visits", "messages", "careplan", "documents", "consents"]
    page.wait_for_selector("#visits li")
    assert page.locator("#visits li").evaluate_all("ls => ls.map(l => l.dataset.id)") == [ids["v1"], ids["later"]]
    assert page.locator("[data-action=questionnaire]").count() == 0
    assert_accessible(page, "portal visits, family member")
    _shoot(page, "portal-family-visits-phone")
    for view, selector in (("messages", "#messages ul.threads li"), ("careplan", "#careplan article"),
                           ("documents", "#documents li")):
        _open(page, view)
        assert page.locator(selector).count() == 0, view
        assert page.locator(f"#{view} .empty").count() == 1, view
    _open(page, "consents")
    assert _texts(page, "#shared-with-me li") == ["Visits"]
    assert page.locator("#consents button").count() == 0
    assert_accessible(page, "portal sharing, family member")
    _shoot(page, "portal-family-sharing-phone")
    page.context.close()


def test_a_lost_connection_is_shown_and_the_view_requeries_on_reconnect(browser: Browser, smart: SmartServer) -> None:  # noqa: F811
    _world(smart)
    page = _page(browser, "desktop")
    down = False
    routes: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        # The server is unreachable while `down`: each attempt is closed at once.
        if down:
            ws.close(code=1011, reason="unreachable")
            return
        ws.connect_to_server()
        routes.append(ws)

    page.route_web_socket(re.compile(r".*/\$subscription-ws.*"), route)
    _sign_in(page, smart, "portal", "Patient/p1", patients=("p1",))
    _live(page)
    down = True
    for ws in routes:
        ws.close(code=1006, reason="dropped")
    page.wait_for_function("() => document.getElementById('live').dataset.state === 'lost'")
    assert page.get_attribute("#live", "role") == "alert"
    assert (page.text_content("#live") or "").startswith("connection lost")
    _shoot(page, "portal-connection-lost-desktop")
    # Changed while the connection was down: the view shows it once it is back.
    soon = datetime.now(UTC) + timedelta(days=3)
    with _admin(smart) as admin:
        created = admin.post("/Appointment", json={
            "resourceType": "Appointment", "status": "booked", "description": "Booked while offline",
            "start": _instant(soon), "end": _instant(soon + timedelta(minutes=30)),
            "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]})
        assert created.status_code == 201
    assert page.locator(f"#visits li[data-id='{created.json()['id']}']").count() == 0
    down = False
    page.wait_for_function("() => document.getElementById('live').dataset.state === 'live'", timeout=40_000)
    assert page.get_attribute("#live", "role") is None
    _wait(page, f"#visits li[data-id='{created.json()['id']}']", timeout=10_000)
    page.context.close()


def test_a_thread_beyond_the_inboxs_first_page_still_shows_its_count(browser: Browser, smart: SmartServer) -> None:  # noqa: F811
    """The inbox answers 50 threads a page, newest activity first; the list shows the 50 threads
    last updated. A thread last active long ago but updated since is in the list and on the
    inbox's second page: the portal follows `next` for its count."""
    ids = _world(smart)
    with _as(smart, "Practitioner/dr1") as gp:
        for n in range(50):  # 50 threads active after hers
            header = gp.post("/Communication", json={
                "resourceType": "Communication", "status": "completed", "subject": {"reference": "Patient/p1"},
                "topic": {"text": f"Note {n:02d}"}, "recipient": [{"reference": "Patient/p1"}]})
            assert header.status_code == 201, header.text
            assert gp.post("/Communication", json={
                "resourceType": "Communication", "status": "completed", "subject": {"reference": "Patient/p1"},
                "partOf": [{"reference": f"Communication/{header.json()['id']}"}],
                "payload": [{"contentString": f"note {n}"}]}).status_code == 201
        old = gp.get(f"/Communication/{ids['thread']}").json()
        assert gp.put(f"/Communication/{ids['thread']}", json={**old, "topic": {"text": "Your blood results (updated)"}}
                      ).status_code == 200
    with _admin(smart) as admin:
        first = admin.get("/Communication/$render-state", params={"participant": "Patient/p1"}).json()
    on_first = {p["part"][0]["valueReference"]["reference"] for p in first["parameter"] if p["name"] == "thread"}
    assert f"Communication/{ids['thread']}" not in on_first and len(on_first) == 50
    page = _page(browser, "desktop")
    _sign_in(page, smart, "portal", "Patient/p1", patients=("p1",))
    _open(page, "messages")
    badge = _wait(page, f"li[data-id='{ids['thread']}'] .badge")
    assert badge.get_attribute("data-beyond") == "1"
    page.context.close()
