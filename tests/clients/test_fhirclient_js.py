"""The official SMART JavaScript client (`fhirclient` on npm) doing an EHR launch in headless
Chromium: the EHR creates the launch context through our launch API and opens the app's
launch page, which calls `FHIR.oauth2.authorize`; the redirect page calls `FHIR.oauth2.ready`
and shows the patient in context and their Tasks.

Needs Debian's `chromium` and `tests/clients/js/node_modules` (`make test-deps` installs
both); without them these tests fail, they never skip.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.clients.conftest import LAUNCH_API_TOKEN, SmartServer
from tests.helpers import PATIENCE

JS = Path(__file__).parent / "js"
BUNDLE = JS / "node_modules" / "fhirclient" / "build" / "fhir-client.js"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCOPE = "launch openid fhirUser patient/Task.rs patient/Patient.rs"


class _AppFiles(SimpleHTTPRequestHandler):
    """Serves js/app/ and, at /fhir-client.js, the library's browser bundle."""

    def translate_path(self, path: str) -> str:
        if path.split("?", 1)[0] == "/fhir-client.js":
            return str(BUNDLE)
        return super().translate_path(path)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    assert BUNDLE.is_file(), f"{BUNDLE} is missing: run `make test-deps` (npm install in {JS})"
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_AppFiles, directory=str(JS / "app")))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make test-deps` (apt-get install chromium)"
    with sync_playwright() as playwright:
        # A fresh temporary profile each launch.
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(15_000 * PATIENCE)
    yield tab
    context.close()


def _register_app(smart: SmartServer, app_origin: str) -> str:
    client = smart.add_client("--name", "Task board (fhirclient.js)",
                              "--redirect-uri", f"{app_origin}/index.html", "--auth-method", "none",
                              "--scope", SCOPE)
    return str(client["client_id"])


def _ehr_launch(smart: SmartServer, **context: str) -> str:
    """What the EHR does before opening the app: POST /auth/launch."""
    response = httpx.post(f"{smart.origin}/auth/launch", json=context,
                          headers={"Authorization": f"Bearer {LAUNCH_API_TOKEN}"})
    assert response.status_code == 201, response.text
    assert response.json()["iss"] == smart.base
    return str(response.json()["launch"])


def _open_app(page: Page, app_origin: str, smart: SmartServer, client_id: str, launch: str) -> None:
    query = urlencode({"iss": smart.base, "launch": launch, "client_id": client_id, "scope": SCOPE})
    page.goto(f"{app_origin}/launch.html?{query}")


def _wait_done(page: Page) -> str:
    try:
        page.wait_for_function(
            "() => { const s = document.getElementById('status');"
            " return s && (s.textContent === 'done' || s.textContent.startsWith('error')); }")
    except PlaywrightTimeout as exc:
        raise AssertionError(f"the app never finished; at {page.url}: {page.inner_text('body')}") from exc
    status = page.text_content("#status") or ""
    assert status == "done", f"{status} at {page.url}"
    return page.url


def test_ehr_launch_with_single_sign_on(page: Page, app_origin: str, smart: SmartServer,
                                        world: dict[str, str]) -> None:
    client_id = _register_app(smart, app_origin)
    launch = _ehr_launch(smart, patient="p1", encounter="enc-7", fhirUser="Practitioner/dr1")
    _open_app(page, app_origin, smart, client_id, launch)
    url = _wait_done(page)
    assert url.startswith(f"{app_origin}/index.html")
    assert page.text_content("#patient") == "p1 Chalmers"
    assert page.text_content("#user") == "Practitioner/dr1"
    assert page.text_content("#encounter") == "enc-7"
    assert sorted(page.locator("#tasks li").all_text_contents()) == sorted(
        [f"{world['requested_p1']} requested", f"{world['completed_p1']} completed"])


def test_ehr_launch_with_sign_in_on_our_login_page(page: Page, app_origin: str, smart: SmartServer,
                                                   world: dict[str, str]) -> None:
    """The EHR names only the patient, so the user signs in on our login page in the browser."""
    username, password, totp = smart.add_user("Practitioner/dr1")
    client_id = _register_app(smart, app_origin)
    launch = _ehr_launch(smart, patient="p2")
    _open_app(page, app_origin, smart, client_id, launch)
    page.wait_for_selector("input[name=username]")
    assert page.url.startswith(f"{smart.origin}/auth/authorize")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.fill("input[name=totp]", pyotp.TOTP(totp).now())
    page.click("button[type=submit]")
    _wait_done(page)
    assert page.text_content("#patient") == "p2 Windsor"
    assert page.text_content("#user") == "Practitioner/dr1"
    assert sorted(page.locator("#tasks li").all_text_contents()) == sorted(
        [f"{world['requested_p2']} requested", f"{world['completed_p2']} completed"])
