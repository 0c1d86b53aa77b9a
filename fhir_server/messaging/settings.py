"""The messaging settings a deployment may change, read from the environment when used (so a
running server picks up a change without a restart of anything but the caller's request)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

GRACE_PERIOD = "FHIR_MESSAGING_GRACE_PERIOD"  # seconds; default 30
RENDER_RETENTION = "FHIR_MESSAGING_RENDER_RETENTION"  # seconds; default 90 days


def _seconds(name: str, default: float) -> timedelta:
    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} is negative")
    return timedelta(seconds=value)


@dataclass(frozen=True)
class MessagingSettings:
    # How long a system showing the thread has to render a new message before its
    # participants are alerted.
    grace_period: timedelta = timedelta(seconds=30)
    # How long superseded versions of render state are kept in history.
    render_retention: timedelta = timedelta(days=90)

    @classmethod
    def from_env(cls) -> MessagingSettings:
        return cls(_seconds(GRACE_PERIOD, 30.0), _seconds(RENDER_RETENTION, 90 * 86400.0))
