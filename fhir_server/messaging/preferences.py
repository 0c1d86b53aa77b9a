"""The channel an alert of a participant goes by: their communication preferences.

A person's preferred way to be reached is their `telecom` of the lowest `rank` (FHIR: "1 is
the highest preference") among the systems an alert can use: sms, email, phone. The channel
is said as a v3 ParticipationMode code, as `Communication.medium` says it (SMSWRIT, EMAILWRIT,
PHONE). With no such telecom the alert goes in-app: ONLINEWRIT (the consuming systems' own
inboxes). The alert carries the channel and the `communication-unrendered` topic filters on
it, so the system that delivers by that channel (an SMS gateway, a mailer, the portal's push)
subscribes for it the standard way and the others leave it alone.
"""

from __future__ import annotations

from typing import Any

Doc = dict[str, Any]
MEDIUM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
IN_APP = "ONLINEWRIT"
_BY_TELECOM = {"sms": "SMSWRIT", "email": "EMAILWRIT", "phone": "PHONE"}
DISPLAY = {"SMSWRIT": "SMS written", "EMAILWRIT": "email written", "PHONE": "telephone",
           IN_APP: "online written"}


def _rank(telecom: Doc) -> int:
    rank = telecom.get("rank")
    return rank if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0 else 1_000_000


def preferred_channel(person: Doc | None) -> str:
    """The ParticipationMode code of the person's preferred channel for an alert."""
    usable = [t for t in (person or {}).get("telecom") or []
              if isinstance(t, dict) and t.get("system") in _BY_TELECOM and t.get("value")
              and t.get("use") != "old" and not (t.get("period") or {}).get("end")]
    if not usable:
        return IN_APP
    return _BY_TELECOM[min(usable, key=_rank)["system"]]
