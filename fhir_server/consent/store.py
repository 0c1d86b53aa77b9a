"""The active Consents of given patients, read by index (`sp.patient`) and parsed.

Only the patients a request touches are ever asked about, so the cost of a request does not
grow with the number of Consents in the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from fhir_server.consent.model import Consent, parse_consent
from fhir_server.storage.database import Database

Doc = dict[str, Any]
PATIENT_REF = "sp.patient"


class ConsentStore:
    def __init__(self, database: Database, base_url: str, default_base: str) -> None:
        self.database = database
        self.base_url = base_url
        self.default_base = default_base

    async def active_of(self, patients: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        """Patient id -> that patient's active patient-privacy Consents (every patient asked
        about is a key, with () when they hold none)."""
        wanted = sorted(set(patients))
        out: dict[str, list[Consent]] = {p: [] for p in wanted}
        if not wanted:
            return {}
        refs = [f"Patient/{p}" for p in wanted]
        # Deleted Consents (tombstones) keep no search values, so they never match.
        query = {PATIENT_REF: refs[0] if len(refs) == 1 else {"$in": refs}}
        async for doc in self.database.current("Consent").find(query, {"res": 1}):
            consent = parse_consent(orjson.loads(doc["res"]), self.base_url, self.default_base)
            if consent is not None and consent.patient in out:
                out[consent.patient].append(consent)
        return {p: tuple(sorted(found, key=lambda c: c.id)) for p, found in out.items()}

    async def patients_of(self, consent_ids: Iterable[str]) -> set[str]:
        """The patients the current versions of these Consents name (for invalidation)."""
        ids = sorted(set(consent_ids))
        if not ids:
            return set()
        out: set[str] = set()
        async for doc in self.database.current("Consent").find({"_id": {"$in": ids}}, {PATIENT_REF: 1}):
            value = (doc.get("sp") or {}).get("patient")
            for ref in value if isinstance(value, list) else [value]:
                if isinstance(ref, str) and ref.startswith("Patient/"):
                    out.add(ref[len("Patient/"):])
        return out

