"""An external provider: Jitsi Meet with token authentication (JWT room tokens).

A Jitsi deployment with `authentication = "token"` admits whoever presents a JWT signed with
its `app_secret` (HS256) whose `iss` is its `app_id`, `aud` its audience, `sub` its domain
and `room` the room's name (or `*`), before `exp`. Rooms come into being when the first
participant enters, so creating a session is naming the room; joining is minting the token,
carried in the room URL's `jwt` query parameter as Jitsi expects. The secret never leaves the
server and the Appointment records only the room's address.

Configured by environment: FHIR_VIDEO_PROVIDER=jitsi, FHIR_JITSI_URL, FHIR_JITSI_APP_ID,
FHIR_JITSI_APP_SECRET, FHIR_JITSI_AUDIENCE (default `jitsi`), FHIR_JITSI_DOMAIN (default the
URL's host).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.jwk import OctKey

from telehealth.provider import CHANNEL_SYSTEM, JoinLink, Participant, Session
from telehealth.settings import JitsiSettings

CHANNEL = {"system": CHANNEL_SYSTEM, "code": "jitsi", "display": "Jitsi Meet"}


def room_name(appointment_id: str) -> str:
    """Jitsi folds room names to lower case: two Appointment ids differing only in case
    must not share a room, so the name is a digest of the id."""
    return "visit-" + hashlib.sha256(appointment_id.encode()).hexdigest()[:24]


class JitsiProvider:
    name = "jitsi"

    def __init__(self, settings: JitsiSettings) -> None:
        self.settings = settings
        self.key = OctKey.import_key(settings.app_secret.encode())
        self.domain = settings.domain or (urlsplit(settings.url).hostname or "")

    def create_session(self, appointment_id: str, max_participants: int | None = None) -> Session:
        room = room_name(appointment_id)
        return Session(appointment_id, room, f"{self.settings.url}/{room}", CHANNEL, max_participants)

    async def join(self, session: Session, participant: Participant, expires: datetime) -> JoinLink:
        issued = int(datetime.now(UTC).timestamp())
        claims = {
            "iss": self.settings.app_id, "aud": self.settings.audience, "sub": self.domain,
            "room": session.room, "iat": issued, "nbf": issued - 60, "exp": int(expires.timestamp()),
            "context": {"user": {"id": participant.reference, "name": participant.display or participant.reference},
                        "features": {}},
            "moderator": participant.role == "host",
        }
        token = jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self.key)
        return JoinLink(f"{session.address}?jwt={token}", token, expires)
