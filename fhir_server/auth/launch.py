"""EHR launch contexts (`auth_launches`): an EHR creates one through the launch API, then
opens the app with `launch=<id>`; the authorize request binds it into the token response."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "auth_launches"


@dataclass(frozen=True)
class LaunchContext:
    launch_id: str
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None
    need_patient_banner: bool = False
    smart_style_url: str | None = None
    intent: str | None = None


class LaunchStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._collection = db[COLLECTION]

    async def create(
        self, *, ttl_seconds: int, patient: str | None = None, encounter: str | None = None,
        fhir_user: str | None = None, need_patient_banner: bool = False,
        smart_style_url: str | None = None, intent: str | None = None,
    ) -> LaunchContext:
        context = LaunchContext(secrets.token_urlsafe(24), patient, encounter, fhir_user,
                                need_patient_banner, smart_style_url, intent)
        await self._collection.insert_one({
            "_id": context.launch_id,
            "patient": patient,
            "encounter": encounter,
            "fhir_user": fhir_user,
            "need_patient_banner": need_patient_banner,
            "smart_style_url": smart_style_url,
            "intent": intent,
            "expires_at": datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        })
        return context

    async def get(self, launch_id: str) -> LaunchContext | None:
        doc = await self._collection.find_one(
            {"_id": launch_id, "expires_at": {"$gt": datetime.now(UTC)}}
        )
        if doc is None:
            return None
        return LaunchContext(doc["_id"], doc.get("patient"), doc.get("encounter"),
                             doc.get("fhir_user"), bool(doc.get("need_patient_banner")),
                             doc.get("smart_style_url"), doc.get("intent"))
