"""The virtual visit's long-lived parts, built once with the server: the configured video
provider and the built-in rooms' signaling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from telehealth.builtin import BuiltinProvider
from telehealth.inflight import InFlight
from telehealth.jitsi import JitsiProvider
from telehealth.joins import JoinTokens
from telehealth.provider import VideoProvider
from telehealth.relay import Relay
from telehealth.settings import TelehealthSettings
from telehealth.signaling import Rooms

Doc = dict[str, Any]


def build_provider(settings: TelehealthSettings, base_url: str, db: AsyncDatabase[Doc]) -> VideoProvider:
    """The configured provider (FHIR_VIDEO_PROVIDER). `db`: where the built-in provider keeps
    its join tokens."""
    if settings.provider == "jitsi":
        return JitsiProvider(settings.jitsi)
    return BuiltinProvider(base_url, JoinTokens(db), settings.max_participants)


@dataclass
class Telehealth:
    settings: TelehealthSettings
    provider: VideoProvider
    rooms: Rooms  # the built-in provider's; idle with another provider
    # The Encounters being created by a visit's first join in this process, by Appointment id.
    first_joins: InFlight[str] = field(default_factory=InFlight)

    @classmethod
    def build(cls, settings: TelehealthSettings, base_url: str, db: AsyncDatabase[Doc]) -> Telehealth:
        return cls(settings, build_provider(settings, base_url, db),
                   Rooms(JoinTokens(db), settings.ice_servers, settings.max_participants, Relay(db)))
