"""The client registry (`auth_clients`): RFC 7591 metadata in, registered clients out.

Client secrets are random 256-bit values, so a plain SHA-256 of them is as good as a slow
password hash and keeps client authentication cheap on every token request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.scopes import split_scope_string

COLLECTION = "auth_clients"
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")


class RegistrationError(ValueError):
    """Bad client metadata; `error` is the RFC 7591 error code."""

    def __init__(self, description: str, error: str = "invalid_client_metadata") -> None:
        super().__init__(description)
        self.error = error


@dataclass(frozen=True)
class Client:
    client_id: str
    client_name: str = ""
    auth_method: str = "none"
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ("authorization_code",)
    scope: str = ""  # the most this client may ever be granted
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    secret_hash: str | None = None
    issued_at: int = 0

    @property
    def public(self) -> bool:
        return self.auth_method == "none"

    @property
    def allowed_scopes(self) -> list[str]:
        return split_scope_string(self.scope)

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "client_id": self.client_id,
            "client_id_issued_at": self.issued_at,
            "client_name": self.client_name,
            "token_endpoint_auth_method": self.auth_method,
            "grant_types": list(self.grant_types),
            "redirect_uris": list(self.redirect_uris),
            "scope": self.scope,
        }
        if "authorization_code" in self.grant_types:
            out["response_types"] = ["code"]
        if self.jwks is not None:
            out["jwks"] = self.jwks
        if self.jwks_uri:
            out["jwks_uri"] = self.jwks_uri
        return out

    def to_document(self) -> dict[str, Any]:
        doc = self.metadata()
        doc["_id"] = doc.pop("client_id")
        doc["secret_hash"] = self.secret_hash
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Client:
        return cls(
            client_id=doc["_id"],
            client_name=doc.get("client_name", ""),
            auth_method=doc["token_endpoint_auth_method"],
            redirect_uris=tuple(doc.get("redirect_uris", ())),
            grant_types=tuple(doc.get("grant_types", ())),
            scope=doc.get("scope", ""),
            jwks=doc.get("jwks"),
            jwks_uri=doc.get("jwks_uri"),
            secret_hash=doc.get("secret_hash"),
            issued_at=int(doc.get("client_id_issued_at", 0)),
        )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(client: Client, secret: str) -> bool:
    if not client.secret_hash:
        return False
    return hmac.compare_digest(client.secret_hash, hash_secret(secret))


def _check_uri(uri: object, what: str, error: str = "invalid_client_metadata") -> str:
    if not isinstance(uri, str):
        raise RegistrationError(f"{what} must be a string", error)
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise RegistrationError(f"{what} must be an absolute http(s) URI without fragment",
                                error)
    return uri


def client_from_metadata(metadata: dict[str, Any]) -> tuple[Client, str | None]:
    """Validates RFC 7591 metadata; returns the new client and its secret (if it gets one)."""
    grant_types = tuple(metadata.get("grant_types") or ("authorization_code",))
    if not all(isinstance(g, str) and g in GRANT_TYPES for g in grant_types):
        raise RegistrationError(f"grant_types must be among {', '.join(GRANT_TYPES)}")
    method = metadata.get("token_endpoint_auth_method") or (
        "private_key_jwt" if "client_credentials" in grant_types else "client_secret_basic"
    )
    if method not in AUTH_METHODS:
        raise RegistrationError(f"token_endpoint_auth_method must be one of {AUTH_METHODS}")
    response_types = metadata.get("response_types") or ["code"]
    if response_types != ["code"]:
        raise RegistrationError("only response_type code is supported")
    redirect_uris = metadata.get("redirect_uris") or []
    if not isinstance(redirect_uris, list):
        raise RegistrationError("redirect_uris must be a list")
    redirect_uris = [_check_uri(u, "redirect_uri", "invalid_redirect_uri") for u in redirect_uris]
    if "authorization_code" in grant_types and not redirect_uris:
        raise RegistrationError("authorization_code clients need redirect_uris",
                                "invalid_redirect_uri")
    if "client_credentials" in grant_types and method != "private_key_jwt":
        # SMART Backend Services authenticate with an asymmetric key only.
        raise RegistrationError("client_credentials requires private_key_jwt")
    if method == "none" and "client_credentials" in grant_types:
        raise RegistrationError("public clients cannot use client_credentials")
    jwks = metadata.get("jwks")
    jwks_uri = metadata.get("jwks_uri")
    if jwks is not None and jwks_uri is not None:
        raise RegistrationError("give jwks or jwks_uri, not both")
    if method == "private_key_jwt" and jwks is None and jwks_uri is None:
        raise RegistrationError("private_key_jwt needs jwks or jwks_uri")
    if jwks is not None:
        if not isinstance(jwks, dict) or any("d" in k for k in jwks.get("keys", [])):
            raise RegistrationError("jwks must be a JWK Set of public keys")
        try:
            KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise RegistrationError(f"jwks: {exc}") from exc
    if jwks_uri is not None:
        jwks_uri = _check_uri(jwks_uri, "jwks_uri")
    scope = metadata.get("scope", "")
    if not isinstance(scope, str):
        raise RegistrationError("scope must be a space-separated string")
    name = metadata.get("client_name", "")
    secret = secrets.token_urlsafe(32) if method.startswith("client_secret") else None
    client = Client(
        # Hex, not url-safe base64: an id that starts with "-" reads as an option on the
        # command line (`fhir-server client disable -x…` fails), one registration in 64.
        client_id=secrets.token_hex(16),
        client_name=str(name),
        auth_method=method,
        redirect_uris=tuple(redirect_uris),
        grant_types=grant_types,
        scope=scope,
        jwks=jwks,
        jwks_uri=jwks_uri,
        secret_hash=hash_secret(secret) if secret else None,
        issued_at=int(time.time()),
    )
    return client, secret


class ClientRegistry:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._collection = db[COLLECTION]

    async def register(self, metadata: dict[str, Any]) -> tuple[Client, str | None]:
        client, secret = client_from_metadata(metadata)
        await self._collection.insert_one(client.to_document())
        return client, secret

    async def ensure(self, client: Client) -> None:
        """Registers `client` under its own fixed id, or brings its registration up to date
        (the server's own apps, registered at every start-up; one an operator disabled stays
        disabled)."""
        doc = client.to_document()
        await self._collection.update_one({"_id": doc.pop("_id")}, {"$set": doc}, upsert=True)

    async def get(self, client_id: str) -> Client | None:
        """The client, or None when it is not registered or disabled: a disabled client
        authenticates nowhere, and what was granted to it by registration ends
        (subscriptions/grant.py)."""
        doc = await self._collection.find_one({"_id": client_id})
        return Client.from_document(doc) if doc and not doc.get("disabled") else None

    async def set_disabled(self, client_id: str, disabled: bool) -> bool:
        """Disables (or enables again) a registered client; False when there is none."""
        done = await self._collection.update_one({"_id": client_id}, {"$set": {"disabled": disabled}})
        return done.matched_count == 1
