"""The built-in room in Debian's Chromium with fake camera and microphone: the practitioner's
and the patient's pages, opened with their join URLs from $join, each receive the other's
remote video track over a connected RTCPeerConnection (media peer to peer, signaling over
the server's websocket); a third page with another visit's token, or an expired one, is
refused and shows nobody.

Needs Debian's `chromium` (`make test-deps` installs it); without it this test fails, it
never skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import PATIENCE
from tests.subscriptions.conftest import wait_until
from tests.telehealth.conftest import TeleServer, closing_visit, join, make_visit, output

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
         # Host candidates as addresses, not mDNS names (no resolver in the test machine).
         "--disable-features=WebRtcHideLocalIpsWithMdns"]
CONNECTED = """() => Object.values(window.visit.peers).some(p =>
    p.connectionState === "connected" && p.remoteVideoTracks > 0 && p.videoWidth > 0)"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make test-deps` (apt-get install chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def _open(browser: Browser, url: str) -> Page:
    context = browser.new_context()  # its own cookies and storage: another person's browser
    page = context.new_page()
    page.set_default_timeout(30_000 * PATIENCE)
    page.goto(url)
    return page


def test_practitioner_and_patient_see_each_other_and_a_foreign_token_is_refused(
        tele: TeleServer, browser: Browser) -> None:
    admin = tele.admin()
    _, expiring = closing_visit(tele, admin)
    visit, other = make_visit(admin), make_visit(admin)
    for v in (visit, other):
        tele.session_address(admin, v.appointment)
    doctor_url = output(join(tele.practitioner(visit.practitioner), visit.appointment))["url"]
    patient_url = output(join(tele.patient(visit.patient), visit.appointment))["url"]
    foreign = output(join(tele.patient(other.patient), other.appointment))["token"]

    doctor = _open(browser, doctor_url)
    patient = _open(browser, patient_url)
    try:
        for page in (doctor, patient):
            page.wait_for_function(CONNECTED)
            # The token left the address bar as soon as the page read it.
            assert "token" not in page.url
        seen_by_doctor = doctor.evaluate("Object.values(window.visit.peers).map(p => p.participant)")
        seen_by_patient = patient.evaluate("Object.values(window.visit.peers).map(p => p.participant)")
        assert seen_by_doctor == [f"Patient/{visit.patient}"]
        assert seen_by_patient == [f"Practitioner/{visit.practitioner}"]

        # Another visit's token on this visit's page: refused, and nobody shown.
        intruder = _open(browser, f"{tele.base}/$visit/{visit.appointment}#token={foreign}")
        intruder.wait_for_function("() => window.visit.status === 'refused'")
        assert intruder.evaluate("window.visit.reason") == "a join token for another visit"
        assert intruder.evaluate("Object.keys(window.visit.peers).length") == 0
        # An expired token on its own visit's page: refused too.
        expires = datetime.fromisoformat(expiring["expires"].replace("Z", "+00:00"))
        wait_until(lambda: datetime.now(UTC) > expires + timedelta(seconds=1), 90, "the join token expiring")
        late = _open(browser, expiring["url"])
        late.wait_for_function("() => window.visit.status === 'refused'")
        assert late.evaluate("window.visit.reason") == "an expired join token"
        # The two in the visit are still connected to each other, and to no one else.
        for page in (doctor, patient):
            assert page.evaluate(CONNECTED)
            assert page.evaluate("Object.keys(window.visit.peers).length") == 1
    finally:
        for page in (doctor, patient):
            page.context.close()
