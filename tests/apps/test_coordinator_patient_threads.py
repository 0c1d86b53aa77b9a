"""The coordinator dashboard's patient view, "at a glance" charts and threads, in Debian's
Chromium through a real standalone launch (tests/apps/test_apps_browser.py has the frame):
what each view shows is checked against what was seeded, each action through the FHIR API,
and a change by another client appears in the open view without reload.

Ids carry a random suffix: the SMART server (and its database) is shared by the whole session.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.apps.test_apps_browser import SIZES, _page, _seed, _shoot, _sign_in, browser  # noqa: F401 (fixture)
from tests.clients.conftest import SmartServer
from tests.subscriptions.conftest import wait_until

THREAD_TAG = {"system": "http://fhir.care-coord.example/CodeSystem/messaging", "code": "thread"}
BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
CAREGAP = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CAREGAP"}


def _at(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def _open(page: Page, hash_: str, title_selector: str = "#view-title") -> None:
    """Follows an in-app link (the hash), as a click on one would."""
    page.evaluate("(h) => { location.hash = h; }", hash_)
    page.wait_for_selector(title_selector)


def _api(smart: SmartServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=smart.base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _care(patient: str, other: str, now: datetime) -> list[dict[str, Any]]:
    day = timedelta(days=1)
    p = f"Patient/{patient}"
    return [
        {"resourceType": "Patient", "id": patient, "name": [{"given": ["Anna"], "family": f"T{patient[-4:]}"}]},
        {"resourceType": "Patient", "id": other, "name": [{"family": "Other"}]},
        {"resourceType": "Goal", "id": f"{patient}-goal", "lifecycleStatus": "active", "subject": _ref(p),
         "description": {"text": "Blood pressure below 140/90"}},
        {"resourceType": "CarePlan", "id": f"{patient}-plan", "status": "active", "intent": "plan", "subject": _ref(p),
         "title": "Hypertension follow-up", "goal": [_ref(f"Goal/{patient}-goal")],
         "activity": [
             {"detail": {"status": "completed", "description": "BP check",
                         "scheduledPeriod": {"start": _at(now - 20 * day)}}},
             {"detail": {"status": "scheduled", "description": "Walk daily",
                         "scheduledPeriod": {"start": _at(now + 5 * day)}}}]},
        {"resourceType": "CareTeam", "id": f"{patient}-team", "status": "active", "name": "Anna's team",
         "subject": _ref(p),
         "participant": [{"member": {"reference": "Practitioner/gp", "display": "Dr. Gray"},
                          "role": [{"text": "General practitioner"}]},
                         {"member": {"reference": "RelatedPerson/daughter", "display": "Clara"},
                          "role": [{"text": "Caregiver"}]}]},
        {"resourceType": "Task", "id": f"{patient}-task", "status": "requested", "intent": "order",
         "description": "Call Anna", "for": _ref(p), "authoredOn": _at(now - 3 * day),
         "restriction": {"period": {"end": _at(now - day)}}},
        {"resourceType": "Appointment", "id": f"{patient}-visit", "status": "booked", "description": "Follow-up",
         "start": _at(now + 2 * day), "end": _at(now + 2 * day + timedelta(minutes=30)),
         "participant": [{"actor": _ref(p), "status": "accepted"}]},
        {"resourceType": "Encounter", "id": f"{patient}-enc", "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "subject": _ref(p), "period": {"start": _at(now - 20 * day), "end": _at(now - 20 * day + timedelta(hours=1))}},
        {"resourceType": "DocumentReference", "id": f"{patient}-doc", "status": "current", "subject": _ref(p),
         "description": "Discharge letter", "date": _at(now - 19 * day),
         "content": [{"attachment": {"contentType": "text/plain", "title": "Letter"}}]},
        {"resourceType": "DetectedIssue", "id": f"{patient}-gap", "status": "final", "patient": _ref(p),
         "code": {"coding": [CAREGAP]}, "detail": "BP check overdue", "identifiedDateTime": _at(now - 10 * day)},
        # Another patient's Task: never on this patient's timeline.
        {"resourceType": "Task", "id": f"{other}-task", "status": "requested", "intent": "order",
         "for": _ref(f"Patient/{other}"), "authoredOn": _at(now)},
    ]


@pytest.mark.parametrize("size", list(SIZES))
def test_patient_view_draws_the_care_along_time_with_plan_and_team(
        browser: Browser, smart: SmartServer, size: str) -> None:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    patient, other, me = f"pt-{suffix}", f"po-{suffix}", f"dr-{suffix}"
    now = datetime.now(UTC)
    _seed(smart, [{"resourceType": "Practitioner", "id": me}, *_care(patient, other, now)])
    page = _page(browser, size)
    _sign_in(page, smart, "coordinator", f"Practitioner/{me}")
    _open(page, f"#patient/{patient}", "svg.timeline")
    links = page.locator("svg.timeline a").evaluate_all(
        "as => as.map(a => [a.dataset.lane, a.dataset.ref, a.getAttribute('href')])")
    assert sorted((lane, ref) for lane, ref, _ in links) == sorted([
        ("Tasks", f"Task/{patient}-task"), ("Appointments", f"Appointment/{patient}-visit"),
        ("Encounters", f"Encounter/{patient}-enc"), ("Documents", f"DocumentReference/{patient}-doc"),
        ("Care gaps", f"DetectedIssue/{patient}-gap"),
        ("CarePlan activities", f"CarePlan/{patient}-plan"), ("CarePlan activities", f"CarePlan/{patient}-plan"),
    ])
    assert all(href == f"#patient/{patient}/{ref}" for _, ref, href in links)
    # The same items as a table, for screen readers and phones.
    assert page.locator(".timeline-items tbody tr").count() == 7
    assert page.text_content("#view-title") == f"Anna T{suffix[-4:]}"
    plan = page.locator(f".careplan[data-id='{patient}-plan']")
    assert plan.locator(".activities li").all_text_contents() == [
        f"BP check — completed · {_at(now - timedelta(days=20))[:10]}",
        f"Walk daily — scheduled · {_at(now + timedelta(days=5))[:10]}"]
    assert plan.locator(".goals li").all_text_contents() == ["Blood pressure below 140/90 — active"]
    assert page.locator(f".careteam[data-id='{patient}-team'] li").all_text_contents() == [
        "Dr. Gray — General practitioner", "Clara — Caregiver"]
    _shoot(page, f"coordinator-patient-{size}")

    # Zoom: the range halves around its middle, and items outside it leave the picture.
    def span() -> float:
        start, end = page.locator("svg.timeline").evaluate("s => [s.dataset.start, s.dataset.end]")
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()

    full = span()
    page.click("#zoom-in")
    assert span() == pytest.approx(full / 2, rel=1e-6)
    page.click("#zoom-in")
    page.click("#zoom-in")
    assert page.locator("svg.timeline a").count() < 7
    page.focus(".timeline-figure")
    page.keyboard.press("-")
    assert span() == pytest.approx(full / 4, rel=1e-6)
    page.click("#zoom-fit")
    assert span() == pytest.approx(full, rel=1e-6)

    # An item links to its resource, read with the user's token.
    page.click(f"svg.timeline a[data-ref='Task/{patient}-task']")
    page.wait_for_selector(f"#selected[data-ref='Task/{patient}-task']")
    assert f'"id": "{patient}-task"' in (page.text_content("#selected pre") or "")
    _shoot(page, f"coordinator-patient-item-{size}")

    # Live: another client's new Task for this patient appears without reload.
    with _api(smart, smart.mint("system/*.cruds")) as admin:
        created = admin.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order",
                                            "description": "New from elsewhere", "for": _ref(f"Patient/{patient}"),
                                            "authoredOn": _at(now)})
        assert created.status_code == 201, created.text
    page.wait_for_selector(f"svg.timeline a[data-ref='Task/{created.json()['id']}']", timeout=10_000)
    page.context.close()


def test_patient_view_without_a_patient_finds_one_by_name(browser: Browser, smart: SmartServer) -> None:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    _seed(smart, [{"resourceType": "Practitioner", "id": f"dr-{suffix}"},
                  {"resourceType": "Patient", "id": f"pn-{suffix}", "name": [{"family": f"Zed{suffix}"}]}])
    page = _page(browser, "desktop")
    _sign_in(page, smart, "coordinator", f"Practitioner/dr-{suffix}")
    _open(page, "#patient", "#patient-search")
    page.fill("#patient-search", f"Zed{suffix}")
    page.click("form[role=search] button")
    page.wait_for_selector(f"#patient-results li[data-id='pn-{suffix}']")
    # The list is drawn again as the search answers (and on live changes): wait until it holds
    # exactly the one match, rather than counting a list being redrawn.
    page.wait_for_function("document.querySelectorAll('#patient-results li').length === 1")
    assert page.locator("#patient-results li").count() == 1
    page.click(f"#patient-results a[href='#patient/pn-{suffix}']")
    page.wait_for_selector(f"#view-title[data-patient='pn-{suffix}']")
    page.context.close()


def _bar(page: Page, chart: str, series: str, label: str) -> int:
    return int(page.get_attribute(f"#chart-{chart} rect[data-series='{series}'][data-label='{label}']",
                                  "data-count") or -1)


@pytest.mark.parametrize("size", list(SIZES))
def test_at_a_glance_counts_open_overdue_and_the_referral_funnel(
        browser: Browser, smart: SmartServer, size: str) -> None:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    me, other, patient = f"Practitioner/dg-{suffix}", f"Practitioner/do-{suffix}", f"Patient/pg-{suffix}"
    now = datetime.now(UTC)
    day = timedelta(days=1)

    def task(**more: Any) -> dict[str, Any]:
        return {"resourceType": "Task", "status": "requested", "intent": "order", "for": _ref(patient), **more}

    _seed(smart, [
        {"resourceType": "Practitioner", "id": me.split("/")[1]}, {"resourceType": "Practitioner", "id": other.split("/")[1]},
        {"resourceType": "Patient", "id": patient.split("/")[1]},
        {"resourceType": "ServiceRequest", "id": f"sr-{suffix}", "status": "active", "intent": "order",
         "subject": _ref(patient)},
        task(owner=_ref(me), authoredOn=_at(now), restriction={"period": {"end": _at(now - timedelta(hours=1))}}),
        task(owner=_ref(me), authoredOn=_at(now), restriction={"period": {"end": _at(now + day)}}),
        task(owner=_ref(me), authoredOn=_at(now), status="completed"),
        task(owner=_ref(me), authoredOn=_at(now - 10 * day)),
        task(owner=_ref(other), authoredOn=_at(now)),  # someone else's
    ])
    # Referrals, as their two sides make them (the referral rules refuse anyone else): sent by me
    # (one still created, one accepted by the other side) and received (accepted by me).
    with _api(smart, smart.mint("user/*.cruds", fhir_user=me)) as mine, \
            _api(smart, smart.mint("user/*.cruds", fhir_user=other)) as theirs:
        def refer(by: httpx.Client, requester: str, owner: str) -> dict[str, Any]:
            r = by.post("/Task", json=task(authoredOn=_at(now - 45 * day), focus=_ref(f"ServiceRequest/sr-{suffix}"),
                                           requester=_ref(requester), owner=_ref(owner),
                                           code={"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                                             "code": "fulfill"}]}))
            assert r.status_code == 201, r.text
            return dict(r.json())

        def accept(by: httpx.Client, referral: dict[str, Any]) -> None:
            r = by.put(f"/Task/{referral['id']}", json={**referral, "status": "accepted"})
            assert r.status_code == 200, r.text
            assert r.json()["businessStatus"]["coding"][0]["code"] == "3.0"

        refer(mine, me, other)
        accept(theirs, refer(mine, me, other))
        accept(mine, refer(theirs, other, me))
    page = _page(browser, size)
    _sign_in(page, smart, "coordinator", me)
    _open(page, "#glance", "#chart-funnel")
    labels = page.locator("#chart-mine rect[data-series=open]").evaluate_all("rs => rs.map(r => r.dataset.label)")
    assert len(labels) == 10
    today, ten_days_ago = labels[-1], labels[-4]  # 3-day bars, the newest holding today
    assert (_bar(page, "mine", "open", today), _bar(page, "mine", "overdue", today)) == (2, 1)
    assert (_bar(page, "mine", "open", ten_days_ago), _bar(page, "mine", "overdue", ten_days_ago)) == (1, 0)
    assert sum(int(c) for c in page.locator("#chart-mine rect[data-series=open]").evaluate_all(
        "rs => rs.map(r => r.dataset.count)")) == 3
    assert (_bar(page, "funnel", "sent", "Created"), _bar(page, "funnel", "sent", "Accepted"),
            _bar(page, "funnel", "received", "Accepted"), _bar(page, "funnel", "received", "Created")) == (1, 1, 1, 0)
    _shoot(page, f"coordinator-glance-{size}")
    # Live: a Task given to me by another client is counted without reload.
    with _api(smart, smart.mint("system/*.cruds")) as admin:
        assert admin.post("/Task", json=task(owner=_ref(me), authoredOn=_at(now))).status_code == 201
    page.wait_for_function(
        "(l) => document.querySelector(`#chart-mine rect[data-series=open][data-label='${l}']`).dataset.count === '3'",
        arg=today, timeout=10_000)
    page.context.close()


def _furthest(admin: httpx.Client, thread: str, participant: str) -> str | None:
    state = admin.get(f"/Communication/{thread}/$render-state")
    assert state.status_code == 200, state.text
    for p in state.json()["parameter"]:
        parts = {q["name"]: q for q in p.get("part", [])}
        if p["name"] == "participant" and parts["participant"]["valueReference"]["reference"] == participant:
            return parts.get("furthest", {}).get("valueReference", {}).get("reference")
    raise AssertionError(f"{participant} is not a participant of {thread}")


@pytest.mark.parametrize("size", list(SIZES))
def test_thread_shows_per_message_who_it_was_rendered_for_and_advances_my_cursor(
        browser: Browser, smart: SmartServer, size: str) -> None:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    me, gp, patient = f"Practitioner/dt-{suffix}", f"Practitioner/gp-{suffix}", f"Patient/pt-{suffix}"
    _seed(smart, [{"resourceType": "Practitioner", "id": me.split("/")[1]},
                  {"resourceType": "Practitioner", "id": gp.split("/")[1]},
                  {"resourceType": "Patient", "id": patient.split("/")[1]}])
    with _api(smart, smart.mint("user/*.cruds", fhir_user=gp)) as doctor, \
            _api(smart, smart.mint("system/*.cruds")) as admin:
        header = doctor.post("/Communication", json={
            "resourceType": "Communication", "status": "in-progress", "subject": _ref(patient),
            "topic": {"text": f"Readings {suffix}"}, "recipient": [_ref(me), _ref(patient)]})
        assert header.status_code == 201, header.text
        thread = header.json()["id"]

        def post(by: httpx.Client, text: str) -> str:
            r = by.post("/Communication", json={"resourceType": "Communication", "status": "completed",
                                                "subject": _ref(patient), "partOf": [_ref(f"Communication/{thread}")],
                                                "payload": [{"contentString": text}]})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        m1, m2 = post(doctor, "first reading"), post(doctor, "second reading")
        # The patient's portal rendered the first message for her.
        cursor = admin.post(f"/Communication/{thread}/$render-cursor", json={"resourceType": "Parameters", "parameter": [
            {"name": "participant", "valueReference": _ref(patient)},
            {"name": "message", "valueReference": _ref(f"Communication/{m1}")},
            {"name": "source", "valueString": "patient-portal"}]})
        assert cursor.status_code == 200, cursor.text
        assert _furthest(admin, thread, me) is None

        page = _page(browser, size)
        _sign_in(page, smart, "coordinator", me)
        _open(page, "#threads", f"#threads li[data-id='{thread}']")
        assert page.text_content(f"#threads li[data-id='{thread}'] sl-badge") == "2"  # beyond my cursor
        _shoot(page, f"coordinator-threads-{size}")
        page.click(f"#threads a[href='#threads/{thread}']")
        try:
            page.wait_for_selector(f"#view-title[data-thread='{thread}']")
        except PlaywrightTimeout as exc:  # seen once in a full run, never alone: say where it was
            raise AssertionError(f"the thread never opened; at {page.url}, status "
                                 f"{page.text_content('#status')!r}: {page.inner_text('#view')[:300]!r}") from exc
        assert page.locator("#messages li").evaluate_all("ls => ls.map(l => l.dataset.id)") == [m1, m2]
        # Displaying the messages advanced my cursor for this app to the last one shown.
        wait_until(lambda: _furthest(admin, thread, me) == f"Communication/{m2}", what="my render cursor at m2")
        page.wait_for_function(
            "(id) => document.querySelector(`#messages li[data-id='${id}'] .rendered`).dataset.rendered.includes('Practitioner/')",
            arg=m2)
        rendered = page.locator("#messages .rendered").evaluate_all("ps => ps.map(p => p.dataset.rendered.split(' '))")
        assert sorted(rendered[0]) == sorted([me, patient]) and rendered[1] == [me]
        text = page.inner_text("#view")
        assert "Rendered for" in text and not re.search(r"\bread\b", text, re.IGNORECASE)
        _shoot(page, f"coordinator-thread-{size}")

        # A reply: a message of this thread, sent as me.
        page.fill("#reply-text", f"thanks {suffix}")
        page.click("#reply button[type=submit]")
        page.wait_for_function("() => document.querySelectorAll('#messages li').length === 3")
        replies = admin.get("/Communication", params={"part-of": f"Communication/{thread}", "_sort": "sent"}).json()
        last = replies["entry"][-1]["resource"]
        assert last["payload"] == [{"contentString": f"thanks {suffix}"}]
        assert last["sender"]["reference"] == me
        assert last["inResponseTo"] == [_ref(f"Communication/{m2}")]

        # Live: the GP's next message appears without reload, and my cursor follows it.
        m4 = post(doctor, "third reading")
        page.wait_for_selector(f"#messages li[data-id='{m4}']", timeout=10_000)
        wait_until(lambda: _furthest(admin, thread, me) == f"Communication/{m4}", what="my render cursor at m4")
    page.context.close()


def test_demo_seed_creates_users_who_open_the_dashboard_and_seeds_once(
        browser: Browser, smart: SmartServer) -> None:  # noqa: F811
    out = smart.cli("demo", "seed", env={"FHIR_DEMO_PASSWORD": f"demo-{uuid.uuid4().hex}"})
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"^(demo-\w+) \(.*?\) opens .*\n((?:  .*\n?)*)", out, re.M)}
    assert set(blocks) == {"demo-coordinator", "demo-patient", "demo-family"}, out
    creds = re.search(r"password: (\S+)\n\s+TOTP secret: (\S+)", blocks["demo-coordinator"])
    assert creds, out
    password, totp = creds.groups()
    with _api(smart, smart.mint("system/*.cruds")) as admin:
        def tasks() -> int:
            return int(admin.get("/Task", params={"patient": "Patient/demo-patient", "_summary": "count"}).json()["total"])

        seeded = tasks()
        assert seeded == 5
        again = smart.cli("demo", "seed")
        assert again.count("exists already") == 3
        assert tasks() == seeded  # fixed ids: the same resources, moved to today, none added
    page = _page(browser, "desktop")
    page.goto(f"{smart.origin}/apps/coordinator/#patient/demo-patient")
    page.wait_for_selector("input[name=username]")
    page.fill("input[name=username]", "demo-coordinator")
    page.fill("input[name=password]", password)
    page.fill("input[name=totp]", pyotp.TOTP(totp).now())
    page.click("button[type=submit]")
    page.wait_for_function("() => document.getElementById('status')?.textContent === 'ready'")
    assert page.text_content("#user") == "Practitioner/demo-coordinator"
    _open(page, "#patient/demo-patient", "svg.timeline")
    lanes = set(page.locator("svg.timeline a").evaluate_all("as => as.map(a => a.dataset.lane)"))
    assert lanes >= {"Tasks", "Appointments", "Encounters", "Documents", "CarePlan activities"}, lanes
    _open(page, "#threads", "#threads li[data-id='demo-thread']")
    page.context.close()


def test_patient_view_says_what_went_wrong_for_an_unknown_patient_or_a_bad_link(
        browser: Browser, smart: SmartServer) -> None:  # noqa: F811
    suffix = uuid.uuid4().hex[:8]
    _seed(smart, [{"resourceType": "Practitioner", "id": f"dr-{suffix}"},
                  {"resourceType": "Patient", "id": f"pe-{suffix}"}])
    page = _page(browser, "desktop")
    _sign_in(page, smart, "coordinator", f"Practitioner/dr-{suffix}")
    status = "() => document.getElementById('status').textContent.startsWith('error')"
    page.evaluate("() => { location.hash = '#patient/nobody-' + Math.random(); }")
    page.wait_for_function(status)
    assert page.get_attribute("#status", "role") == "alert"
    assert "404" in (page.text_content("#status") or ""), page.text_content("#status")
    page.evaluate("() => { document.getElementById('status').textContent = 'ready'; }")
    # An item link that is no Type/id is refused before any request is made of it.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.evaluate("(h) => { location.hash = h; }", f"#patient/pe-{suffix}/..%2F..%2Fmetadata")
    page.wait_for_function(status)
    assert "not a resource reference" in (page.text_content("#status") or "")
    assert not any("metadata" in url for url in requests)
    page.context.close()


def test_two_demo_seeds_at_once_make_one_demo(smart: SmartServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: smart.cli("demo", "seed"), range(2)))
    # Each user is created by exactly one of the two (the other finds it there).
    for name in ("demo-coordinator", "demo-patient", "demo-family"):
        created = sum(bool(re.search(rf"^{name} .*\n  password: ", out, re.M)) for out in outs)
        existed = sum(bool(re.search(rf"^{name} .*\n  exists already", out, re.M)) for out in outs)
        assert created + existed == 2 and created <= 1, outs
    with _api(smart, smart.mint("system/*.cruds")) as admin:
        total = admin.get("/Task", params={"patient": "Patient/demo-patient", "_summary": "count"}).json()["total"]
        assert total == 5
