"""The video-provider interface: what the server asks of a video service, and nothing more.

A provider does two things (docs/telemedicine.md, "Adding a video provider"):

- `create_session(appointment_id)` — the room of one visit, as the Appointment records it
  (channel type, address, maximum participants). Deterministic from the Appointment's id:
  the workflow that calls it may run twice for one booking, and must find the same room.
- `join(session, participant, expires)` — a join link for one participant of that visit
  (a token and the URL that carries it), valid until `expires`.

The configured provider comes from TelehealthSettings (FHIR_VIDEO_PROVIDER): telehealth.service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

Doc = dict[str, Any]
CHANNEL_SYSTEM = "urn:fhir-server:video-provider"


@dataclass(frozen=True)
class Session:
    """One visit's room."""

    appointment_id: str
    room: str
    address: str
    channel_type: Doc
    max_participants: int | None = None


@dataclass(frozen=True)
class Participant:
    """Who joins: a participant of the Appointment (`Patient/1`, `Practitioner/2`, ...)."""

    reference: str
    display: str | None = None
    # A host (the clinician) may moderate where the service knows the idea; guests may not.
    role: Literal["host", "guest"] = "guest"


@dataclass(frozen=True)
class JoinLink:
    url: str
    token: str
    expires: datetime


class VideoProvider(Protocol):
    name: str

    def create_session(self, appointment_id: str, max_participants: int | None = None) -> Session:
        """The room of this Appointment (the same every time for the same id)."""
        ...

    async def join(self, session: Session, participant: Participant, expires: datetime) -> JoinLink:
        """A link for `participant` into `session`, valid until `expires`."""
        ...

