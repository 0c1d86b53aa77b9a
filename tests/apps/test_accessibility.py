"""The coordinator dashboard through axe-core (tests/apps/axe.py), every view of its navigation
at 1280×800 and 390×844, after a real launch: no serious or critical violation. (The
portal's views are checked in tests/apps/test_portal.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser

from tests.apps.axe import assert_accessible
from tests.apps.test_apps_browser import SIZES, _page, _seed, _shoot, _sign_in, browser  # noqa: F401 (fixture)
from tests.clients.conftest import SmartServer

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


@pytest.mark.parametrize("size", list(SIZES))
def test_every_coordinator_view_has_no_serious_accessibility_violation(
        browser: Browser, smart: SmartServer, size: str) -> None:  # noqa: F811
    past = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _seed(smart, [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Chalmers"}]},
        {"resourceType": "Practitioner", "id": "dr1"},
        {**TASK, "description": "Call the patient", "owner": {"reference": "Practitioner/dr1"},
         "for": {"reference": "Patient/p1"}, "restriction": {"period": {"end": past}}},
        {**TASK, "description": "Unclaimed follow-up", "for": {"reference": "Patient/p1"}},
    ])
    page = _page(browser, size)
    _sign_in(page, smart, "coordinator", "Practitioner/dr1")
    views = page.locator("nav a[data-view]").evaluate_all("as => as.map(a => a.dataset.view)")
    assert views, "the dashboard shows no navigation"
    for view in views:
        page.click(f"nav a[data-view={view}]")
        page.wait_for_function(
            "(id) => { const root = document.querySelector('[data-view=\"' + id + '\"]:not(a)');"
            " return root && !root.textContent.startsWith('Loading'); }", arg=view)
        assert_accessible(page, f"coordinator {view} ({size})")
        _shoot(page, f"coordinator-axe-{view}-{size}")
    page.context.close()
