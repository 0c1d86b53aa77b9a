"""The server's own SMART apps in Debian's Chromium: a standalone launch of each, through our
login page, against a server with auth on; what they show is checked against what was seeded.

Needs `make apps` (the built apps in apps/dist/) and `make test-deps` (Chromium); without them
these tests fail, they never skip. Screenshots of each view at 1280×800 and 390×844 are
written to test-artifacts/apps/.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from fhir_server.web_apps import DEFAULT_APPS_DIR
from tests.clients.conftest import SmartServer
from tests.clients.test_fhirclient_js import CHROMIUM, CHROMIUM_FLAGS
from tests.helpers import PATIENCE

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "apps"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
OPEN_TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert (DEFAULT_APPS_DIR / "coordinator" / "index.html").is_file(), "the apps are not built: run `make apps`"
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make test-deps`"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def _page(browser: Browser, size: str) -> Page:
    width, height = SIZES[size]
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.set_default_timeout(20_000 * PATIENCE)
    return page


def _sign_in(page: Page, smart: SmartServer, app: str, fhir_user: str,
             patients: tuple[str, ...] = ()) -> None:
    """Opens /apps/<app>/ (a standalone launch) and signs in on our login page."""
    username, password, totp = smart.add_user(fhir_user, patients=patients)
    page.goto(f"{smart.origin}/apps/{app}/")
    page.wait_for_selector("input[name=username]")
    assert page.url.startswith(f"{smart.origin}/auth/authorize"), page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.fill("input[name=totp]", pyotp.TOTP(totp).now())
    page.click("button[type=submit]")
    try:
        page.wait_for_function("() => { const s = document.getElementById('status');"
                               " return s && (s.textContent === 'ready' || s.textContent.startsWith('error')); }")
    except PlaywrightTimeout as exc:
        raise AssertionError(f"the app never got ready; at {page.url}: {page.inner_text('body')[:500]}") from exc
    assert page.text_content("#status") == "ready", page.text_content("#status")
    assert page.url.startswith(f"{smart.origin}/apps/{app}/")


def _shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _seed(smart: SmartServer, resources: list[dict[str, Any]]) -> list[str]:
    headers = {"Authorization": f"Bearer {smart.mint('system/*.cruds')}"}
    ids = []
    with httpx.Client(base_url=smart.base, headers=headers, timeout=30) as admin:
        for resource in resources:
            if "id" in resource:
                r = admin.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
            else:
                r = admin.post(f"/{resource['resourceType']}", json=resource)
            assert r.status_code in (200, 201) if "id" in resource else r.status_code == 201, r.text
            ids.append(r.json()["id"])
    return ids


@pytest.mark.parametrize("size", list(SIZES))
def test_coordinator_shows_my_tasks_and_the_pool(browser: Browser, smart: SmartServer, size: str) -> None:
    past = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (datetime.now(UTC) + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ids = _seed(smart, [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Chalmers"}]},
        {"resourceType": "Practitioner", "id": "dr1"},
        {"resourceType": "Practitioner", "id": "dr2"},
        {**OPEN_TASK, "description": "Call the patient", "owner": {"reference": "Practitioner/dr1"},
         "for": {"reference": "Patient/p1"}, "restriction": {"period": {"end": past}}},
        {**OPEN_TASK, "description": "Book the echo", "owner": {"reference": "Practitioner/dr1"},
         "for": {"reference": "Patient/p1"}, "restriction": {"period": {"end": later}}, "priority": "urgent"},
        {**OPEN_TASK, "description": "Unclaimed follow-up", "for": {"reference": "Patient/p1"}},
        {**OPEN_TASK, "description": "Someone else's", "owner": {"reference": "Practitioner/dr2"}},
        {**OPEN_TASK, "status": "completed", "description": "Done already",
         "owner": {"reference": "Practitioner/dr1"}},
    ])
    overdue, upcoming, pool = ids[3], ids[4], ids[5]
    page = _page(browser, size)
    _sign_in(page, smart, "coordinator", "Practitioner/dr1")
    assert page.text_content("#user") == "Practitioner/dr1"
    rows = page.locator("#view tbody tr")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) == sorted([overdue, upcoming])
    assert page.get_attribute(f"tr[data-id='{overdue}']", "class") == "overdue"
    assert page.get_attribute(f"tr[data-id='{upcoming}']", "class") == ""
    page.wait_for_function("() => document.getElementById('count-pool').textContent === '1'")
    assert page.text_content("#count-mine") == "2"
    # The token stays in sessionStorage (gone with the tab), never in localStorage.
    assert page.evaluate("() => localStorage.length") == 0
    _shoot(page, f"coordinator-my-tasks-{size}")
    page.click("a[data-view=pool]")
    page.wait_for_function("() => document.getElementById('pool-title')?.textContent === 'Team pool'")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.id)") == [pool]
    assert page.get_attribute("a[data-view=pool]", "aria-current") == "page"
    _shoot(page, f"coordinator-pool-{size}")
    page.context.close()


@pytest.mark.parametrize("size", list(SIZES))
def test_portal_shows_my_visits_and_care_plan(browser: Browser, smart: SmartServer, size: str) -> None:
    soon = datetime.now(UTC) + timedelta(days=3)
    gone = datetime.now(UTC) - timedelta(days=3)

    def visit(patient: str, start: datetime, what: str) -> dict[str, Any]:
        return {"resourceType": "Appointment", "status": "booked", "description": what,
                "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"}]}

    ids = _seed(smart, [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Chalmers"}]},
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "Windsor"}]},
        visit("p1", soon, "Cardiology follow-up"),
        visit("p1", gone, "Last month's visit"),
        visit("p2", soon, "Another patient's visit"),
        {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"},
         "activity": [{"detail": {"status": "scheduled", "description": "Walk 30 minutes a day"}}]},
    ])
    page = _page(browser, size)
    _sign_in(page, smart, "portal", "Patient/p1", patients=("p1",))
    visits = page.locator("#visits li").evaluate_all("ls => ls.map(l => l.dataset.id)")
    assert visits == [ids[2]]
    assert "Cardiology follow-up" in (page.text_content("#visits") or "")
    page.click("a[data-view=careplan]")  # each portal view is its own page (tests/apps/test_portal.py)
    page.wait_for_selector("#careplan")
    assert page.locator("#careplan li").all_text_contents() == ["Walk 30 minutes a day (scheduled)"]
    assert page.evaluate("() => localStorage.length") == 0
    _shoot(page, f"portal-{size}")
    page.context.close()


def test_apps_are_registered_public_clients_and_load_nothing_from_elsewhere(smart: SmartServer) -> None:
    for app, client_id in (("coordinator", "coordinator-dashboard"), ("portal", "patient-portal")):
        config = httpx.get(f"{smart.origin}/apps/{app}/config.json").json()
        assert config["clientId"] == client_id and config["iss"] == smart.base
        page = httpx.get(f"{smart.origin}/apps/{app}/")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "http" not in page.text.replace('name="viewport"', "")  # every URL is relative
        # Nothing outside the app's folder is served.
        assert httpx.get(f"{smart.origin}/apps/{app}/..%2F..%2Fpyproject.toml").status_code == 404
    assert httpx.get(f"{smart.origin}/apps/nope/").status_code == 404
