"""Consent settings, from `Settings.extra` (tests, embedding) or the environment.

- `consent` / FHIR_CONSENT: `off` switches enforcement off (default: on when auth is on).
- `consent_default` / FHIR_CONSENT_DEFAULT: `opt-out` (default) or `opt-in`, the base policy
  of a Consent whose policyRule is not OPTIN, OPTINR, OPTOUT or OPTOUTE.
- `consent_btg_scopes` / FHIR_CONSENT_BTG_SCOPES: to break the glass a token must hold a
  scope covering one of these (space-separated; default `user/*.r`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fhir_server.config import Settings


def _option(settings: Settings, key: str, variable: str, default: str) -> str:
    return settings.extra.get(key) or os.environ.get(variable) or default


@dataclass(frozen=True)
class ConsentSettings:
    enabled: bool = True
    default_base: str = "permit"  # permit (opt-out) | deny (opt-in)
    btg_scopes: tuple[str, ...] = ("user/*.r",)

    @classmethod
    def from_settings(cls, settings: Settings, auth_enabled: bool) -> ConsentSettings:
        switch = _option(settings, "consent", "FHIR_CONSENT", "on" if auth_enabled else "off")
        default = _option(settings, "consent_default", "FHIR_CONSENT_DEFAULT", "opt-out")
        if default not in ("opt-in", "opt-out"):
            raise ValueError(f"FHIR_CONSENT_DEFAULT must be opt-in or opt-out, not {default!r}")
        scopes = _option(settings, "consent_btg_scopes", "FHIR_CONSENT_BTG_SCOPES", "user/*.r")
        return cls(
            enabled=switch.lower() not in ("off", "0", "false", "no"),
            default_base="deny" if default == "opt-in" else "permit",
            btg_scopes=tuple(scopes.split()),
        )
