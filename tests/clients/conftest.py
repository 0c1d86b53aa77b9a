"""Real SMART client libraries against a real server with auth on, in its own database.

The server's launch API and dynamic registration are open (with the tokens below), as an
EHR deployment would have them; users and clients are added the way an operator adds them,
with the `fhir-server` command.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.services import auth_settings
from tests.conftest import RunningServer, make_settings
from tests.helpers import wipe

DATABASE = "fhir_clients"
INITIAL_ACCESS_TOKEN = "clients-initial-access-token"
LAUNCH_API_TOKEN = "clients-launch-api-token"
TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


@dataclass
class SmartServer:
    running: RunningServer

    @property
    def base(self) -> str:
        return self.running.settings.base_url

    @property
    def origin(self) -> str:
        return self.base.rsplit("/fhir", 1)[0]

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Runs `fhir-server ARGS` on the server's database; returns its standard output."""
        settings = self.running.settings
        full_env = {**os.environ, "MONGODB_URI": settings.mongodb_uri or "",
                    "FHIR_DATABASE": DATABASE, "FHIR_BASE_URL": self.base, **(env or {})}
        done = subprocess.run([sys.executable, "-m", "fhir_server", *args], env=full_env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def mint(self, scope: str, **claims: str) -> str:
        settings = self.running.settings

        async def work() -> str:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(client[DATABASE], auth_settings(settings), scope.split(),
                                            **claims)
            finally:
                await client.close()

        # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, work()).result()

    def add_user(self, fhir_user: str, *, patients: tuple[str, ...] = ()) -> tuple[str, str, str]:
        """A new user with a TOTP second factor: (username, password, TOTP secret)."""
        username, password = f"user-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        args = ["user", "add", "--username", username, "--fhir-user", fhir_user, "--totp"]
        for patient in patients:
            args += ["--patient", patient]
        out = self.cli(*args, env={"FHIR_USER_PASSWORD": password})
        secret = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                      if line.startswith("TOTP secret:"))
        return username, password, secret

    def add_client(self, *args: str) -> dict[str, Any]:
        client: dict[str, Any] = json.loads(self.cli("client", "add", *args))
        return client


@pytest.fixture(scope="session")
def smart_server(mongodb_uri: str) -> Iterator[SmartServer]:
    settings = make_settings(mongodb_uri, database=DATABASE, auth_enabled=True)
    # The auth settings are read from the environment when the app is built and started.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FHIR_AUTH_INITIAL_ACCESS_TOKEN", INITIAL_ACCESS_TOKEN)
        env.setenv("FHIR_AUTH_LAUNCH_API_TOKEN", LAUNCH_API_TOKEN)
        running = RunningServer(settings).__enter__()
    try:
        yield SmartServer(running)
    finally:
        running.__exit__(None, None, None)


@pytest.fixture
def smart(smart_server: SmartServer, mongo: MongoClient[dict[str, Any]]) -> SmartServer:
    """The server with its FHIR data emptied (registered clients, users and keys stay)."""
    wipe(mongo[DATABASE], keep=lambda name: name.startswith("auth_"))
    return smart_server


@pytest.fixture
def world(smart: SmartServer) -> dict[str, str]:
    """Patients p1 and p2 with two Tasks each (one completed), and a Practitioner."""
    ids: dict[str, str] = {}
    headers = {"Authorization": f"Bearer {smart.mint('system/*.cruds')}"}
    with httpx.Client(base_url=smart.base, headers=headers, timeout=30) as admin:
        for name, family in (("p1", "Chalmers"), ("p2", "Windsor")):
            patient = {"resourceType": "Patient", "id": name, "name": [{"family": family}]}
            assert admin.put(f"/Patient/{name}", json=patient).status_code == 201
            for status in ("requested", "completed"):
                task = {**TASK, "status": status, "for": {"reference": f"Patient/{name}"},
                        "description": f"{status} task of {name}"}
                r = admin.post("/Task", json=task)
                assert r.status_code == 201, r.text
                ids[f"{status}_{name}"] = r.json()["id"]
        ids["dr"] = admin.put("/Practitioner/dr1", json={"resourceType": "Practitioner",
                                                          "id": "dr1"}).json()["id"]
    return ids


# -- the login page, driven as a browser would -----------------------------------------------

class PageForm(HTMLParser):
    """The first form of a page: its action and its fields (hidden values, radio choices)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.choices: dict[str, list[str]] = {}
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if self._done:
            return
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        elif tag == "input" and "name" in a:
            if a.get("type") == "radio":
                self.choices.setdefault(a["name"], []).append(a.get("value", ""))
            else:
                self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._done = True


def parse_form(page: httpx.Response) -> PageForm:
    form = PageForm()
    form.feed(page.text)
    assert form.action is not None, page.text
    form.action = urljoin(str(page.url), form.action)
    return form


def follow_login(authorize_url: str, fill: Callable[[PageForm], dict[str, str]]) -> str:
    """Opens `authorize_url` and submits each page's form with what `fill` adds to it, until
    the server redirects away; returns that redirect's URL (the app's callback)."""
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        response = browser.get(authorize_url)
        for _ in range(5):
            if response.status_code in (302, 303):
                return response.headers["location"]
            assert response.status_code == 200 and "<form" in response.text, response.text
            form = parse_form(response)
            response = browser.post(form.action or "", data={**form.fields, **fill(form)})
    raise AssertionError("the authorize pages never redirected back to the app")
