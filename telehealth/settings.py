"""The virtual visit's settings, from the environment (docs/telemedicine.md, "Configuration").

Read once where the server is assembled (services) and by the workflow that creates sessions,
so both see the same provider.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _ice_servers(raw: str) -> tuple[dict[str, Any], ...]:
    """FHIR_VIDEO_ICE_SERVERS: a JSON list of RTCIceServer objects (urls, username,
    credential), or comma-separated `stun:`/`turn:` URLs."""
    raw = raw.strip()
    if not raw:
        return ()
    if raw.startswith("["):
        servers = json.loads(raw)
        if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
            raise ValueError("FHIR_VIDEO_ICE_SERVERS: a JSON list of {\"urls\": ...} objects")
        return tuple(servers)
    urls = [u.strip() for u in raw.split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ValueError(f"FHIR_VIDEO_ICE_SERVERS: {url!r} is not a stun:, turn: or turns: URL")
    return ({"urls": urls},)


@dataclass(frozen=True)
class JitsiSettings:
    """A Jitsi Meet deployment with token authentication (prosody `app_id` / `app_secret`)."""

    url: str = ""  # https://meet.example.org: rooms are <url>/<room>
    app_id: str = ""  # the token's `iss`
    app_secret: str = field(default="", repr=False)  # HS256 key; never leaves the server
    audience: str = "jitsi"
    # `sub`: the XMPP domain the tokens are for (default: the url's host)
    domain: str = ""


@dataclass(frozen=True)
class TelehealthSettings:
    provider: str = "builtin"  # builtin | jitsi
    # $join is allowed from this long before Appointment.start to this long after it.
    join_before: float = 3600.0
    join_after: float = 7200.0
    # A join token lives this long (never past the end of the window).
    join_ttl: float = 3600.0
    # STUN/TURN for the built-in rooms; none: host candidates only (one machine, one network).
    ice_servers: tuple[dict[str, Any], ...] = ()
    # At most this many people in one built-in room, when the Appointment does not say.
    max_participants: int = 8
    jitsi: JitsiSettings = field(default_factory=JitsiSettings)

    @classmethod
    def from_env(cls) -> TelehealthSettings:
        provider = os.environ.get("FHIR_VIDEO_PROVIDER", cls.provider).strip() or cls.provider
        if provider not in ("builtin", "jitsi"):
            raise ValueError(f"FHIR_VIDEO_PROVIDER: {provider!r} is not builtin or jitsi")
        jitsi = JitsiSettings(
            url=os.environ.get("FHIR_JITSI_URL", "").rstrip("/"),
            app_id=os.environ.get("FHIR_JITSI_APP_ID", ""),
            app_secret=os.environ.get("FHIR_JITSI_APP_SECRET", ""),
            audience=os.environ.get("FHIR_JITSI_AUDIENCE", JitsiSettings.audience),
            domain=os.environ.get("FHIR_JITSI_DOMAIN", ""),
        )
        if provider == "jitsi" and not (jitsi.url and jitsi.app_id and jitsi.app_secret):
            raise ValueError("FHIR_VIDEO_PROVIDER=jitsi needs FHIR_JITSI_URL, FHIR_JITSI_APP_ID and "
                             "FHIR_JITSI_APP_SECRET")
        return cls(
            provider=provider,
            join_before=_seconds("FHIR_VISIT_JOIN_BEFORE", cls.join_before),
            join_after=_seconds("FHIR_VISIT_JOIN_AFTER", cls.join_after),
            join_ttl=_seconds("FHIR_VISIT_JOIN_TTL", cls.join_ttl),
            ice_servers=_ice_servers(os.environ.get("FHIR_VIDEO_ICE_SERVERS", "")),
            max_participants=int(os.environ.get("FHIR_VISIT_MAX_PARTICIPANTS") or cls.max_participants),
            jitsi=jitsi,
        )
