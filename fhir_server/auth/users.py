"""People who log in on the authorize page (`auth_users`): Practitioners, Patients and
RelatedPersons, with argon2-hashed passwords and an optional TOTP second factor."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "auth_users"
USER_TYPES = ("Practitioner", "Patient", "RelatedPerson")
_FHIR_USER = re.compile(r"^(Practitioner|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$")

_hasher = PasswordHasher()
# A well-formed hash to verify against when the user does not exist, so that a login for an
# unknown name costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password")


@dataclass(frozen=True)
class User:
    username: str
    fhir_user: str  # "Practitioner/123"
    totp_enabled: bool
    # Patients a RelatedPerson (or a Practitioner's panel) may pick in the patient picker.
    patients: tuple[str, ...] = ()

    @property
    def user_type(self) -> str:
        return self.fhir_user.split("/", 1)[0]

    @property
    def resource_id(self) -> str:
        return self.fhir_user.split("/", 1)[1]


def _user(doc: dict[str, Any]) -> User:
    return User(doc["_id"], doc["fhir_user"], bool(doc.get("totp_secret")),
                tuple(doc.get("patients", ())))


class UserStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._collection = db[COLLECTION]

    async def add(
        self, username: str, password: str, fhir_user: str, *, totp: bool = False,
        patients: tuple[str, ...] = (),
    ) -> str | None:
        """Creates a user; returns the TOTP secret (base32) to enrol in an authenticator."""
        if not _FHIR_USER.match(fhir_user):
            raise ValueError(f"fhir_user must be one of {USER_TYPES} followed by /id")
        secret = pyotp.random_base32() if totp else None
        await self._collection.insert_one({
            "_id": username,
            "password_hash": _hasher.hash(password),
            "fhir_user": fhir_user,
            "totp_secret": secret,
            "totp_last_step": None,
            "patients": list(patients),
        })
        return secret

    async def get(self, username: str) -> User | None:
        doc = await self._collection.find_one({"_id": username})
        return _user(doc) if doc else None

    async def authenticate(self, username: str, password: str, totp_code: str = "") -> User | None:
        """The user if password (and TOTP code, when enrolled) are right; else None."""
        doc = await self._collection.find_one({"_id": username})
        try:
            _hasher.verify(doc["password_hash"] if doc else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if doc is None:
            return None
        if _hasher.check_needs_rehash(doc["password_hash"]):
            await self._collection.update_one(
                {"_id": username}, {"$set": {"password_hash": _hasher.hash(password)}}
            )
        if doc.get("totp_secret") and not await self._check_totp(doc, totp_code):
            return None
        return _user(doc)

    async def _check_totp(self, doc: dict[str, Any], code: str) -> bool:
        totp = pyotp.TOTP(doc["totp_secret"])
        now = time.time()
        # One step of drift either way; a code is accepted once (its time step is recorded).
        for drift in (0, -1, 1):
            at = now + drift * totp.interval
            step = totp.timecode(at)
            if code and totp.verify(code, for_time=at):
                last = doc.get("totp_last_step")
                if last is not None and step <= last:
                    return False
                result = await self._collection.update_one(
                    {"_id": doc["_id"], "totp_last_step": last},
                    {"$set": {"totp_last_step": step}},
                )
                return result.modified_count == 1
        return False
