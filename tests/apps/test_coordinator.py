"""The coordinator dashboard in Debian's Chromium, through a real standalone launch and our
login page: every worklist shows exactly what was seeded for the signed-in practitioner (and
their role and CareTeam), every action changes the right resource (checked through the FHIR
API), a change made by another client appears in the open worklist without reload, and a
lost connection is shown and recovered from. Screenshots of each view at 1280×800 and 390×844
go to test-artifacts/apps/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute

from tests.apps.test_apps_browser import SIZES, _page, _seed, _shoot, _sign_in, browser  # noqa: F401
from tests.clients.conftest import SmartServer

Doc = dict[str, Any]
SCT = "http://snomed.info/sct"
COORDINATOR_ROLE = {"coding": [{"system": SCT, "code": "768820003"}]}
OTHER_ROLE = {"coding": [{"system": SCT, "code": "159141008"}]}
HANDOFF = {"coding": [{"system": "http://fhir.care-coord.example/CodeSystem/coordination-task-code",
                       "code": "handoff"}]}
FULFILL = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}
CAREGAP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CAREGAP"}]}
PREPARATION = {"coding": [{"system": "http://fhir.care-coord.example/CodeSystem/visit-task",
                           "code": "visit-preparation"}]}
TASK = {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": "Patient/p1"}}


def _instant(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _today_at(hour: int, minute: int = 0) -> datetime:
    return datetime.now(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)


@dataclass
class World:
    smart: SmartServer
    ids: dict[str, str]

    def api(self, fhir_user: str | None = None) -> httpx.Client:
        claims = {"fhir_user": fhir_user} if fhir_user else {}
        token = self.smart.mint("system/*.cruds" if not fhir_user else "user/*.cruds", **claims)
        return httpx.Client(base_url=self.smart.base, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def read(self, reference: str) -> Doc:
        with self.api() as admin:
            r = admin.get(f"/{reference}")
            assert r.status_code == 200, r.text
            body: Doc = r.json()
            return body

    def search(self, query: str) -> list[Doc]:
        with self.api() as admin:
            r = admin.get(f"/{query}")
            assert r.status_code == 200, r.text
            return [e["resource"] for e in r.json().get("entry", [])]


def _post(client: httpx.Client, resource: Doc) -> str:
    r = client.post(f"/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
def world(smart: SmartServer) -> World:
    """dr1 (the user) with PractitionerRole/r1 (care coordinator) in CareTeam/ct1, and one
    thing for each worklist, plus things that must NOT show (someone else's, closed, another role)."""
    past, later = datetime.now(UTC) - timedelta(days=2), datetime.now(UTC) + timedelta(days=5)
    _seed(smart, [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Chalmers"}]},
        {"resourceType": "Practitioner", "id": "dr1"},
        {"resourceType": "Practitioner", "id": "dr2", "name": [{"given": ["Ada"], "family": "Okafor"}]},
        {"resourceType": "Practitioner", "id": "dr3"},
        {"resourceType": "PractitionerRole", "id": "r1", "active": True, "practitioner": {"reference": "Practitioner/dr1"},
         "code": [COORDINATOR_ROLE]},
        {"resourceType": "CareTeam", "id": "ct1", "status": "active", "subject": {"reference": "Patient/p1"},
         "participant": [{"member": {"reference": "Practitioner/dr1"}, "role": [COORDINATOR_ROLE]}]},
        {"resourceType": "CareTeam", "id": "ct2", "status": "active",
         "participant": [{"member": {"reference": "Practitioner/dr2"}}]},
    ])
    ids: dict[str, str] = {}
    with httpx.Client(base_url=smart.base, timeout=30,
                      headers={"Authorization": f"Bearer {smart.mint('system/*.cruds')}"}) as admin:
        ids["overdue"] = _post(admin, {**TASK, "description": "Call the patient", "owner": {"reference": "Practitioner/dr1"},
                                       "restriction": {"period": {"end": _instant(past)}}})
        ids["upcoming"] = _post(admin, {**TASK, "description": "Book the echo", "priority": "urgent",
                                        "owner": {"reference": "PractitionerRole/r1"},
                                        "restriction": {"period": {"end": _instant(later)}}})
        _post(admin, {**TASK, "status": "completed", "description": "Done already", "owner": {"reference": "Practitioner/dr1"}})
        _post(admin, {**TASK, "description": "Someone else's", "owner": {"reference": "Practitioner/dr2"}})
        ids["pool"] = _post(admin, {**TASK, "description": "Unclaimed follow-up", "performerType": [COORDINATOR_ROLE]})
        _post(admin, {**TASK, "description": "Another role's pool", "performerType": [OTHER_ROLE]})
        ids["gap"] = _post(admin, {**TASK, "code": {**CAREGAP, "text": "Care gap"}, "description": "Care gap: HbA1c",
                                   "owner": {"reference": "CareTeam/ct1"},
                                   "restriction": {"period": {"start": _instant(past)}}})
        _post(admin, {**TASK, "code": CAREGAP, "description": "Care gap of another team",
                      "owner": {"reference": "CareTeam/ct2"}})
        ids["dr2-task"] = _post(admin, {**TASK, "description": "dr2's discharge call", "owner": {"reference": "Practitioner/dr2"}})
        ids["sr-in"] = _post(admin, {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                                     "subject": {"reference": "Patient/p1"}, "code": {"text": "Cardiology consult"}})
        ids["sr-out"] = _post(admin, {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                                      "subject": {"reference": "Patient/p1"}, "code": {"text": "Dietitian"}})
        ids["visit"] = _post(admin, {"resourceType": "Appointment", "status": "booked", "description": "Diabetes review",
                                     "start": _instant(_today_at(23, 0)), "end": _instant(_today_at(23, 30)),
                                     "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"},
                                                     {"actor": {"reference": "Practitioner/dr1"}, "status": "accepted"}]})
        _post(admin, {**TASK, "code": PREPARATION, "status": "in-progress", "focus": {"reference": f"Appointment/{ids['visit']}"},
                      "owner": {"reference": "Patient/p1"}})
        _post(admin, {"resourceType": "Appointment", "status": "booked", "description": "Someone else's visit",
                      "start": _instant(_today_at(23, 0)), "end": _instant(_today_at(23, 30)),
                      "participant": [{"actor": {"reference": "Practitioner/dr2"}, "status": "accepted"}]})
        schedule = _post(admin, {"resourceType": "Schedule", "active": True, "actor": [{"reference": "Practitioner/dr1"}]})
        for hour in (22, 23):
            ids[f"slot-{hour}"] = _post(admin, {
                "resourceType": "Slot", "schedule": {"reference": f"Schedule/{schedule}"}, "status": "free",
                "start": _instant(_today_at(hour, 30)), "end": _instant(_today_at(hour, 45))})
    # A hand-off to my role, from dr2 (the focus's owner: the hand-off rules want its requester).
    with World(smart, ids).api("Practitioner/dr2") as dr2:
        ids["handoff"] = _post(dr2, {**TASK, "code": HANDOFF, "description": "Hand-off: dr2's discharge call",
                                     "focus": {"reference": f"Task/{ids['dr2-task']}"},
                                     "requester": {"reference": "Practitioner/dr2"}, "owner": {"reference": "PractitionerRole/r1"},
                                     "input": [{"type": {"coding": [{"system": "http://fhir.care-coord.example/CodeSystem/handoff-note-section",
                                                                     "code": "i-pass-action-list"}]},
                                                "valueString": "call the family at 5"}]})
        # A referral received (dr2 → dr1) and one sent (dr1 → dr3); the requester side creates.
        ids["ref-in"] = _post(dr2, {**TASK, "code": FULFILL, "description": "Cardiology consult",
                                    "focus": {"reference": f"ServiceRequest/{ids['sr-in']}"},
                                    "requester": {"reference": "Practitioner/dr2"}, "owner": {"reference": "Practitioner/dr1"}})
    with World(smart, ids).api("Practitioner/dr1") as dr1:
        ids["ref-out"] = _post(dr1, {**TASK, "code": FULFILL, "description": "Dietitian referral",
                                     "focus": {"reference": f"ServiceRequest/{ids['sr-out']}"},
                                     "requester": {"reference": "Practitioner/dr1"}, "owner": {"reference": "Practitioner/dr3"}})
    return World(smart, ids)


def _open(page: Page, view: str) -> None:
    page.click(f"nav a[data-view={view}]")
    page.wait_for_function(f"() => document.getElementById('view').dataset.view === '{view}'"
                           " && !document.querySelector('#view p.empty')?.textContent?.startsWith('Loading')")
    page.wait_for_selector(f"#{view}-title")
    _live(page)  # its own Subscription is bound
    _no_error(page)


def _no_error(page: Page) -> None:
    assert page.text_content("#status") == "ready", page.text_content("#status")


def _rows(page: Page) -> list[str]:
    ids: list[str] = page.locator("#view tbody tr").evaluate_all("rs => rs.map(r => r.dataset.id)")
    return ids


def _count(page: Page, view: str) -> str:
    return page.text_content(f"#count-{view}") or ""


def _live(page: Page) -> None:
    page.wait_for_function("() => document.getElementById('live').dataset.state === 'live'")


@pytest.mark.parametrize("size", list(SIZES))
def test_every_worklist_shows_what_is_mine(browser: Browser, world: World, size: str) -> None:  # noqa: F811
    ids = world.ids
    page = _page(browser, size)
    _sign_in(page, world.smart, "coordinator", "Practitioner/dr1")
    # My tasks: mine and my role's, open, sorted by due date; the overdue one marked.
    assert _rows(page) == [ids["overdue"], ids["upcoming"]]
    assert page.get_attribute(f"tr[data-id='{ids['overdue']}']", "class") == "overdue"
    # The patient by name, from the page's own `_include` (no request per row).
    assert page.locator("#view td[data-label=Patient]").all_text_contents() == ["Chalmers", "Chalmers"]
    page.wait_for_function("() => document.getElementById('count-visits').textContent === '1'")
    assert {v: _count(page, v) for v in ("mine", "pool", "handoffs", "referrals", "gaps", "visits")} == {
        "mine": "2", "pool": "1", "handoffs": "1", "referrals": "1", "gaps": "1", "visits": "1"}
    # Shoelace's badges are defined (their component loaded under the CSP), so they are styled.
    assert page.evaluate("() => !!customElements.get('sl-badge')"
                         " && !!document.getElementById('count-mine').shadowRoot")
    _live(page)
    _shoot(page, f"coordinator-mine-{size}")
    # The server filters: only the overdue one.
    page.select_option("#mine-filter", label="Overdue")
    page.wait_for_function(f"() => document.querySelectorAll('#view tbody tr').length === 1"
                           f" && document.querySelector('#view tbody tr').dataset.id === '{ids['overdue']}'")
    _open(page, "pool")
    assert _rows(page) == [ids["pool"]]
    _shoot(page, f"coordinator-pool-{size}")
    _open(page, "handoffs")
    assert _rows(page) == [ids["handoff"]]
    assert "call the family at 5" in (page.text_content("#view tbody") or "")
    _shoot(page, f"coordinator-handoffs-{size}")
    _open(page, "referrals")
    assert _rows(page) == [ids["ref-in"]]
    assert page.locator("#view section.group h3").all_text_contents() == ["Service Request Created (1)"]
    assert page.text_content(f"tr[data-id='{ids['ref-in']}'] td[data-label=From]") == "Ada Okafor"
    page.select_option("#referrals-filter", label="Sent")
    page.wait_for_function(f"() => document.querySelector('#view tbody tr')?.dataset.id === '{ids['ref-out']}'")
    _shoot(page, f"coordinator-referrals-{size}")
    _open(page, "gaps")
    assert _rows(page) == [ids["gap"]]
    _shoot(page, f"coordinator-gaps-{size}")
    _open(page, "visits")
    assert _rows(page) == [ids["visit"]]
    assert page.text_content(f"tr[data-id='{ids['visit']}'] td[data-label=Preparation]") == "preparation in-progress"
    assert page.locator(f"tr[data-id='{ids['visit']}'] button[data-action=join]").count() == 1
    _shoot(page, f"coordinator-visits-{size}")
    assert page.evaluate("() => localStorage.length") == 0
    _no_error(page)
    page.context.close()


def _answer(page: Page, **fields: str) -> None:
    page.wait_for_selector("dialog[open]")
    for name, value in fields.items():
        page.fill(f"dialog #ask-{name}", value)
    page.click("dialog button[data-action=submit]")


def _row_gone_or_changed(page: Page, task_id: str, text: str) -> None:
    page.wait_for_function(
        f"() => {{ const r = document.querySelector(\"tr[data-id='{task_id}']\");"
        f" return !r || r.textContent.includes({text!r}); }}")


def test_task_actions_write_the_task(browser: Browser, world: World) -> None:  # noqa: F811
    ids = world.ids
    page = _page(browser, "desktop")
    _sign_in(page, world.smart, "coordinator", "Practitioner/dr1")
    # Accept (from the keyboard: the buttons are native, named after their row), then complete.
    accept = f"tr[data-id='{ids['overdue']}'] button[data-action=accept]"
    assert page.get_attribute(accept, "aria-label") == "Accept: Call the patient"
    page.focus(accept)
    page.keyboard.press("Enter")
    _row_gone_or_changed(page, ids["overdue"], "accepted")
    assert world.read(f"Task/{ids['overdue']}")["status"] == "accepted"
    page.click(f"tr[data-id='{ids['overdue']}'] button[data-action=complete]")
    _answer(page, output="Spoke to the patient; all fine")
    page.wait_for_function(f"() => !document.querySelector(\"tr[data-id='{ids['overdue']}']\")")
    done = world.read(f"Task/{ids['overdue']}")
    assert done["status"] == "completed"
    assert done["output"] == [{"type": {"text": "outcome"}, "valueString": "Spoke to the patient; all fine"}]
    page.wait_for_function("() => document.getElementById('count-mine').textContent === '1'")
    # Reassign: a hand-off Task to dr3 with the notes; the focus keeps its owner until accepted.
    page.click(f"tr[data-id='{ids['upcoming']}'] button[data-action=reassign]")
    page.wait_for_selector("dialog[open] #ask-owner")
    # Offered while typing: my CareTeam (my own role is not offered to me).
    offered = page.locator("dialog datalist option").evaluate_all("os => os.map(o => o.value)")
    assert offered == ["CareTeam/ct1"], offered
    _answer(page, owner="Practitioner/dr3", actions="book the echo before Friday")
    page.wait_for_function("() => !document.querySelector('dialog[open]')")
    handoffs: list[Doc] = []

    def made() -> bool:
        handoffs[:] = world.search(f"Task?focus=Task/{ids['upcoming']}")
        return len(handoffs) == 1

    _wait(made)
    assert handoffs[0]["owner"] == {"reference": "Practitioner/dr3"}
    assert handoffs[0]["requester"] == {"reference": "PractitionerRole/r1"}
    assert handoffs[0]["code"]["coding"][0]["code"] == "handoff"
    assert [i["valueString"] for i in handoffs[0]["input"]] == ["book the echo before Friday"]
    assert world.read(f"Task/{ids['upcoming']}")["owner"] == {"reference": "PractitionerRole/r1"}
    # Reject (with the reason) the hand-off waiting for me.
    _open(page, "handoffs")
    page.click(f"tr[data-id='{ids['handoff']}'] button[data-action=reject]")
    _answer(page, reason="not my patient")
    _wait(lambda: world.read(f"Task/{ids['handoff']}")["status"] == "rejected")
    assert world.read(f"Task/{ids['handoff']}")["statusReason"] == {"text": "not my patient"}
    # Claim from the pool: accepted and mine.
    _open(page, "pool")
    page.click(f"tr[data-id='{ids['pool']}'] button[data-action=accept]")
    _wait(lambda: world.read(f"Task/{ids['pool']}")["status"] == "accepted")
    claimed = world.read(f"Task/{ids['pool']}")
    assert claimed["owner"] == {"reference": "Practitioner/dr1"} and "performerType" not in claimed
    page.wait_for_function("() => document.querySelectorAll('#view tbody tr').length === 0")
    # A refusal by the server's rules is shown, and nothing is written: accepting a referral
    # received is fine, declining needs a reason (the dialog requires one).
    _open(page, "referrals")
    page.click(f"tr[data-id='{ids['ref-in']}'] button[data-action=accept]")
    _wait(lambda: world.read(f"Task/{ids['ref-in']}")["status"] == "accepted")
    assert world.read(f"Task/{ids['ref-in']}")["businessStatus"]["coding"][0]["code"] == "3.0"
    page.wait_for_function("() => [...document.querySelectorAll('#view section.group h3')]"
                           ".map(h => h.textContent).join() === 'Service Request Accepted (1)'")
    _no_error(page)
    page.context.close()


def test_a_referral_is_declined_with_its_reason(browser: Browser, world: World) -> None:  # noqa: F811
    ids = world.ids
    page = _page(browser, "phone")
    _sign_in(page, world.smart, "coordinator", "Practitioner/dr1")
    _open(page, "referrals")
    page.click(f"tr[data-id='{ids['ref-in']}'] button[data-action=reject]")
    _answer(page, reason="we do not see children")
    _wait(lambda: world.read(f"Task/{ids['ref-in']}")["status"] == "rejected")
    declined = world.read(f"Task/{ids['ref-in']}")
    assert declined["statusReason"] == {"text": "we do not see children"}
    assert declined["businessStatus"]["coding"][0]["code"] == "4.0"
    page.wait_for_function("() => document.querySelector('#view section.group h3')?.textContent"
                           " === 'Service Request Declined (1)'")
    _shoot(page, "coordinator-referral-declined-phone")
    _no_error(page)
    page.context.close()


def test_book_move_and_cancel_a_visit_from_free_slots(browser: Browser, world: World) -> None:  # noqa: F811
    ids = world.ids
    page = _page(browser, "desktop")
    _sign_in(page, world.smart, "coordinator", "Practitioner/dr1")
    _open(page, "visits")
    page.click("button[data-action=book]")
    page.wait_for_selector("dialog[open] #ask-date")
    _answer(page, patient="Patient/p1")  # the day defaults to today
    page.wait_for_selector("dialog[open] #ask-slot")
    options = page.locator("dialog #ask-slot option").all_text_contents()
    assert len(options) == 2, options  # the two free Slots of today
    page.select_option("dialog #ask-slot", index=0)
    page.click("dialog button[data-action=submit]")
    booked: list[Doc] = []

    def appointment_on(slot: str) -> bool:
        booked[:] = world.search(f"Appointment?slot=Slot/{slot}&status=booked")
        return len(booked) == 1

    _wait(lambda: appointment_on(ids["slot-22"]))
    new = booked[0]["id"]
    assert world.read(f"Slot/{ids['slot-22']}")["status"] == "busy"
    assert {"reference": "Patient/p1"} in [p["actor"] for p in booked[0]["participant"]]
    page.wait_for_selector(f"tr[data-id='{new}']")
    # Move it to the other Slot ($reschedule): the old one cancelled, its Slot free again.
    page.click(f"tr[data-id='{new}'] button[data-action=move]")
    page.wait_for_selector("dialog[open] #ask-date")
    page.click("dialog button[data-action=submit]")
    page.wait_for_selector("dialog[open] #ask-slot")
    assert len(page.locator("dialog #ask-slot option").all_text_contents()) == 1  # only the other one is free
    page.click("dialog button[data-action=submit]")
    _wait(lambda: appointment_on(ids["slot-23"]))
    moved = booked[0]["id"]
    assert world.read(f"Appointment/{new}")["status"] == "cancelled"
    assert world.read(f"Slot/{ids['slot-22']}")["status"] == "free"
    page.wait_for_selector(f"tr[data-id='{moved}']")
    # Cancel it with a reason.
    page.click(f"tr[data-id='{moved}'] button[data-action=cancel]")
    _answer(page, reason="patient in hospital")
    _wait(lambda: world.read(f"Appointment/{moved}")["status"] == "cancelled")
    assert world.read(f"Appointment/{moved}")["cancelationReason"]["text"] == "patient in hospital"
    assert world.read(f"Slot/{ids['slot-23']}")["status"] == "free"
    page.wait_for_function(f"() => !document.querySelector(\"tr[data-id='{moved}']\")")
    _no_error(page)
    # Join asks `$join` with the user's token; the seeded visit is not a virtual one (no
    # session recorded), so the server's 409 is what the user is shown, and no window opens.
    popups: list[Page] = []
    page.context.on("page", lambda popup: popups.append(popup))
    page.click(f"tr[data-id='{ids['visit']}'] button[data-action=join]")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('error: 409')")
    assert popups == []
    page.context.close()


def test_another_clients_change_appears_live_and_a_lost_connection_is_shown(
        browser: Browser, world: World) -> None:  # noqa: F811
    page = _page(browser, "desktop")
    sockets: list[WebSocketRoute] = []

    def through(ws: WebSocketRoute) -> None:  # each socket passes through; the test may cut it
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r".*\$subscription-ws.*"), through)
    _sign_in(page, world.smart, "coordinator", "Practitioner/dr1")
    _live(page)
    assert _rows(page) == [world.ids["overdue"], world.ids["upcoming"]]
    # Another client assigns a Task to dr1: the open worklist and its count show it, no reload.
    with world.api() as other:
        added = _post(other, {**TASK, "description": "Added elsewhere", "owner": {"reference": "Practitioner/dr1"}})
    page.wait_for_selector(f"tr[data-id='{added}']", timeout=10_000)
    page.wait_for_function("() => document.getElementById('count-mine').textContent === '3'")
    # The connection drops: the page says so; meanwhile another change; on reconnect it re-queries.
    assert len(sockets) == 1
    sockets[0].close(code=1011, reason="network gone")
    page.wait_for_function("() => document.getElementById('live').dataset.state === 'lost'")
    assert page.text_content("#live") == "connection lost — reconnecting"
    _shoot(page, "coordinator-connection-lost-desktop")
    with world.api() as other:
        r = other.get(f"/Task/{added}")
        changed = {**r.json(), "status": "cancelled"}
        assert other.put(f"/Task/{added}", json=changed).status_code == 200
    _live(page)
    assert len(sockets) == 2  # a new socket, bound again
    page.wait_for_function(f"() => !document.querySelector(\"tr[data-id='{added}']\")")
    # The view's Subscription is the user's own, deleted when another view opens (one per view).
    subscriptions = world.search("Subscription?status=active,requested")
    assert len(subscriptions) == 1
    _open(page, "visits")
    _live(page)
    _wait(lambda: [s["criteria"] for s in world.search("Subscription")]
          == ["http://fhir.care-coord.example/SubscriptionTopic/appointment-status"])
    _no_error(page)
    page.context.close()


def test_a_subscription_the_server_no_longer_honours_is_replaced(
        browser: Browser, world: World) -> None:  # noqa: F811
    """The server stops honouring the view's Subscription (here: deleted; in use, a grant that
    lapsed with the token it was created under): the view makes a new one under its current
    token, and what changed meanwhile and after still appears without a reload."""
    page = _page(browser, "desktop")
    sockets: list[WebSocketRoute] = []

    def through(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r".*\$subscription-ws.*"), through)
    _sign_in(page, world.smart, "coordinator", "Practitioner/dr1")
    _live(page)
    [old] = [s["id"] for s in world.search("Subscription?status=active,requested")]
    with world.api() as admin:
        assert admin.delete(f"/Subscription/{old}").status_code == 200  # with its OperationOutcome
        added = _post(admin, {**TASK, "description": "Added while gone", "owner": {"reference": "Practitioner/dr1"}})
    sockets[0].close(code=1011, reason="network gone")
    page.wait_for_selector(f"tr[data-id='{added}']", timeout=20_000)
    _live(page)
    [new] = [s["id"] for s in world.search("Subscription?status=active,requested")]
    assert new != old
    with world.api() as admin:
        later = _post(admin, {**TASK, "description": "Added after", "owner": {"reference": "Practitioner/dr1"}})
    page.wait_for_selector(f"tr[data-id='{later}']", timeout=10_000)
    _no_error(page)
    page.context.close()


def test_pages_follow_the_servers_cursors(browser: Browser, world: World) -> None:  # noqa: F811
    with world.api() as admin:
        for n in range(21):  # 23 of mine with the two seeded: a page of 20, then 3
            _post(admin, {**TASK, "description": f"batch {n:02d}", "owner": {"reference": "Practitioner/dr1"}})
    page = _page(browser, "desktop")
    _sign_in(page, world.smart, "coordinator", "Practitioner/dr1")
    first = _rows(page)
    assert len(first) == 20
    assert page.is_disabled("button[data-page=previous]") and page.is_enabled("button[data-page=next]")
    page.wait_for_function("() => document.getElementById('count-mine').textContent === '23'")
    page.click("button[data-page=next]")
    page.wait_for_function("() => document.querySelectorAll('#view tbody tr').length === 3")
    second = _rows(page)
    assert not set(first) & set(second)
    assert page.is_disabled("button[data-page=next]")
    page.click("button[data-page=previous]")
    page.wait_for_function("() => document.querySelectorAll('#view tbody tr').length === 20")
    assert _rows(page) == first
    _no_error(page)
    page.context.close()


def test_a_stale_claim_is_refused_not_lost(browser: Browser, world: World) -> None:  # noqa: F811
    """Two coordinators of one role see the same pool Task; the second, whose page has not
    heard of the first's claim yet (its websocket held back), is refused (If-Match → 412) and
    told; the Task stays with the first."""
    _seed(world.smart, [{"resourceType": "PractitionerRole", "id": "r4", "active": True,
                         "practitioner": {"reference": "Practitioner/dr4"}, "code": [COORDINATOR_ROLE]},
                        {"resourceType": "Practitioner", "id": "dr4"}])
    late = _page(browser, "desktop")
    late.route_web_socket(re.compile(r".*\$subscription-ws.*"), lambda ws: None)  # never connects
    _sign_in(late, world.smart, "coordinator", "Practitioner/dr4")
    _open_unlive(late, "pool")
    first = _page(browser, "desktop")
    _sign_in(first, world.smart, "coordinator", "Practitioner/dr1")
    _open(first, "pool")
    first.click(f"tr[data-id='{world.ids['pool']}'] button[data-action=accept]")
    _wait(lambda: world.read(f"Task/{world.ids['pool']}")["status"] == "accepted")
    late.click(f"tr[data-id='{world.ids['pool']}'] button[data-action=accept]")
    late.wait_for_function("() => document.getElementById('status').textContent.startsWith('error: 412')")
    assert world.read(f"Task/{world.ids['pool']}")["owner"] == {"reference": "Practitioner/dr1"}
    assert world.read(f"Task/{world.ids['pool']}")["meta"]["versionId"] == "2"
    for page in (late, first):
        page.context.close()


def test_without_a_subscription_the_view_still_works_and_says_it_is_not_live(
        browser: Browser, world: World) -> None:  # noqa: F811
    """A server (or an EHR's registration) refusing the Subscription: the worklist is shown,
    and the header says it will not update by itself, instead of "connecting" for ever."""
    page = _page(browser, "desktop")
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden",
                                                              "diagnostics": "no Subscription scope"}]}

    def refuse(route: Any) -> None:
        if route.request.method == "POST":
            route.fulfill(status=403, content_type="application/fhir+json", json=outcome)
        else:
            route.continue_()

    page.route(re.compile(r".*/fhir/Subscription$"), refuse)
    _sign_in(page, world.smart, "coordinator", "Practitioner/dr1")
    assert _rows(page) == [world.ids["overdue"], world.ids["upcoming"]]
    page.wait_for_function("() => document.getElementById('live').textContent === 'no live updates'")
    assert page.get_attribute("#live", "data-state") == "lost"
    assert "no Subscription scope" in (page.get_attribute("#live", "title") or "")
    page.context.close()


def _open_unlive(page: Page, view: str) -> None:
    page.click(f"nav a[data-view={view}]")
    page.wait_for_selector(f"#{view}-title")


def _wait(check: Any, timeout: float = 10.0) -> None:
    from tests.subscriptions.conftest import wait_until
    wait_until(check, timeout=timeout)
