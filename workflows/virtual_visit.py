"""The virtual visit's session: a virtual Appointment that becomes booked gets its video room.

Listens to the appointment topic (booked, cancelled, noshow); for a booked Appointment that
carries the virtual service extension (telehealth.virtual_service) and no room yet, it asks
the configured video provider for the visit's session and records the room's address,
channel type and maximum participants in that extension — never a secret (joining is
`$join`'s: a per-participant token). The session is deterministic from the Appointment's id,
so a redelivered event finds it recorded and writes nothing; the update is If-Match on the
version read, re-read when a client changed the Appointment meanwhile. An address some other
service put there (a channelType not of this server's providers) is left alone.
"""

from __future__ import annotations

from fhir_server.errors import FhirError, PreconditionFailed
from telehealth import virtual_service
from telehealth.provider import CHANNEL_SYSTEM, VideoProvider
from telehealth.service import build_provider
from telehealth.settings import TelehealthSettings
from workflows.effects import Effects
from workflows.engine import Event, Workflow

APPOINTMENT_TOPIC = "http://fhir.care-coord.example/SubscriptionTopic/appointment-status"
ATTEMPTS = 5


class VirtualVisit(Workflow):
    name = "virtual-visit"
    topic = APPOINTMENT_TOPIC

    def __init__(self, settings: TelehealthSettings | None = None) -> None:
        self.settings = settings if settings is not None else TelehealthSettings.from_env()
        self._provider: VideoProvider | None = None

    def provider(self, effects: Effects) -> VideoProvider:
        if self._provider is None:
            self._provider = build_provider(self.settings, effects.base_url, effects.repository.database.db)
        return self._provider

    async def on_event(self, event: Event, effects: Effects) -> None:
        booked = event.resource
        if (booked is None or event.focus is None or booked.get("status") != "booked"
                or not virtual_service.is_virtual(booked)):
            return
        await record_session(effects, self.provider(effects), event.focus.partition("/")[2])


async def record_session(effects: Effects, provider: VideoProvider, appointment_id: str) -> bool:
    """Records the visit's room on the Appointment; True when this call wrote it."""
    context = effects.context("update")
    for _ in range(ATTEMPTS):
        try:
            stored = await effects.repository.read(context, "Appointment", appointment_id)
        except FhirError:
            return False  # deleted since
        current = stored.resource
        service = virtual_service.read(current)
        if current.get("status") != "booked" or service is None:
            return False
        own = service.channel_type is None or (service.channel_type or {}).get("system") == CHANNEL_SYSTEM
        if service.address and not own:
            return False  # a session made elsewhere
        session = provider.create_session(appointment_id, service.max_participants)
        if service.address == session.address and service.channel_type == session.channel_type:
            return False  # recorded already (a redelivery, or another process)
        updated = virtual_service.with_service(current, virtual_service.VirtualService(
            session.channel_type, session.address, service.additional_info, session.max_participants))
        try:
            await effects.repository.update(context, "Appointment", appointment_id, updated,
                                            if_match=stored.version_id)
            return True
        except PreconditionFailed:
            continue  # changed meanwhile: read again
    return False


def workflow() -> VirtualVisit:
    return VirtualVisit()
