"""The external provider: a server configured for Jitsi (by environment) records a Jitsi
room on booking and mints JWT room tokens in $join; a local stand-in of Jitsi's token check
admits them, as moderator for the clinician, and refuses another room's or an expired one.
The Appointment never holds the secret or a token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from telehealth.jitsi import CHANNEL, room_name
from telehealth.virtual_service import read as read_service
from tests.conftest import RunningServer
from tests.subscriptions.conftest import wait_until
from tests.telehealth.conftest import TeleServer, closing_visit, join, make_visit, output, start_server
from tests.telehealth.jitsi_standin import APP_ID, APP_SECRET, DOMAIN, jitsi_standin


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with jitsi_standin() as running:
        yield running


@pytest.fixture(scope="module")
def jitsi(mongodb_uri: str, standin: tuple[str, list[dict[str, Any]]]) -> Iterator[TeleServer]:
    env = {"FHIR_VIDEO_PROVIDER": "jitsi", "FHIR_JITSI_URL": standin[0], "FHIR_JITSI_APP_ID": APP_ID,
           "FHIR_JITSI_APP_SECRET": APP_SECRET, "FHIR_JITSI_DOMAIN": DOMAIN}
    running: RunningServer = start_server(mongodb_uri, "fhir_telehealth_jitsi", env)
    server = TeleServer(running)
    yield server
    for c in server.clients:
        c.close()
    running.__exit__(None, None, None)


def test_a_jitsi_room_is_recorded_and_its_tokens_admit_participants(
        jitsi: TeleServer, standin: tuple[str, list[dict[str, Any]]]) -> None:
    url, entered = standin
    admin = jitsi.admin()
    visit = make_visit(admin)
    address = jitsi.session_address(admin, visit.appointment)
    assert address == f"{url}/{room_name(visit.appointment)}"
    appointment = admin.get(f"/Appointment/{visit.appointment}").json()
    service = read_service(appointment)
    assert service is not None and service.channel_type == CHANNEL
    assert APP_SECRET not in str(appointment) and "jwt" not in str(appointment)

    doctor = output(join(jitsi.practitioner(visit.practitioner), visit.appointment))
    patient = output(join(jitsi.patient(visit.patient), visit.appointment))
    assert doctor["url"] == f"{address}?jwt={doctor['token']}"
    for link, who, moderator in ((doctor, f"Practitioner/{visit.practitioner}", True),
                                 (patient, f"Patient/{visit.patient}", False)):
        admitted = httpx.get(link["url"], timeout=10)
        assert admitted.status_code == 200, admitted.text
        assert admitted.json() == {"room": room_name(visit.appointment), "user": who, "name": who,
                                   "moderator": moderator}
    assert [e["user"] for e in entered[-2:]] == [f"Practitioner/{visit.practitioner}", f"Patient/{visit.patient}"]
    # Another visit's token does not open this room.
    other = make_visit(admin)
    jitsi.session_address(admin, other.appointment)
    theirs = output(join(jitsi.patient(other.patient), other.appointment))["token"]
    assert httpx.get(f"{address}?jwt={theirs}", timeout=10).status_code == 403
    assert httpx.get(f"{address}?jwt={doctor['token'][:-4]}AAAA", timeout=10).status_code == 403
    # The join page of the built-in rooms is not served with another provider.
    assert admin.get(f"/$visit/{visit.appointment}").status_code == 404


def test_a_jitsi_token_expires_with_the_window(jitsi: TeleServer, standin: tuple[str, list[dict[str, Any]]]) -> None:
    admin = jitsi.admin()
    _, link = closing_visit(jitsi, admin)
    expires = datetime.fromisoformat(link["expires"].replace("Z", "+00:00"))
    assert expires <= datetime.now(UTC) + timedelta(seconds=81)
    assert httpx.get(link["url"], timeout=10).status_code == 200  # admitted until then
    assert wait_until(lambda: datetime.now(UTC) > expires + timedelta(seconds=1)
                      and httpx.get(link["url"], timeout=10).status_code == 403, 90, "the token expiring")
