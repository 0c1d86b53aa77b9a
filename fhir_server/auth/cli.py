"""Command-line pieces of `fhir-server`: `client add`, `user add`, `token`, `keys rotate`.

Each `*_main(argv)` parses its own arguments and returns an exit code; the `fhir-server`
entry point dispatches to them. They work directly on the database (MONGODB_URI).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pyotp
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.clients import AUTH_METHODS, GRANT_TYPES, ClientRegistry, RegistrationError
from fhir_server.auth.keys import SIGNING_ALGS, KeyStore
from fhir_server.auth.scopes import split_scope_string
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.startup import start_auth
from fhir_server.auth.tokens import mint_access_token
from fhir_server.auth.users import UserStore
from fhir_server.config import Settings

T = TypeVar("T")
Db = AsyncDatabase[dict[str, Any]]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI"),
                        help="MongoDB URI of the server's database (env MONGODB_URI)")
    parser.add_argument("--database", default=os.environ.get("FHIR_DATABASE", "fhir"))
    parser.add_argument("--base-url", default=None,
                        help="FHIR base URL, the token audience (env FHIR_BASE_URL)")


def _auth_settings(args: argparse.Namespace) -> AuthSettings:
    return AuthSettings.from_env(Settings.from_env(base_url=args.base_url))


def _run(args: argparse.Namespace, work: Callable[[Db, AuthSettings], Awaitable[T]]) -> T:
    if not args.mongodb_uri:
        raise SystemExit("--mongodb-uri (or MONGODB_URI) is required")

    async def main() -> T:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            args.mongodb_uri, tz_aware=True
        )
        try:
            settings = _auth_settings(args)
            db = client[args.database]
            await start_auth(settings, db)
            return await work(db, settings)
        finally:
            await client.close()

    return asyncio.run(main())


def client_add_main(argv: list[str] | None = None) -> int:
    """fhir-server client add --name N [--redirect-uri U]... [--scope S] [--auth-method M]
    [--grant-type G]... [--jwks-file F | --jwks-uri U]; prints the client (and secret) as JSON."""
    parser = argparse.ArgumentParser(prog="fhir-server client add")
    _common(parser)
    parser.add_argument("--name", required=True)
    parser.add_argument("--redirect-uri", action="append", default=[])
    parser.add_argument("--scope", default="", help="the most this client may be granted")
    parser.add_argument("--auth-method", choices=AUTH_METHODS)
    parser.add_argument("--grant-type", action="append", choices=GRANT_TYPES)
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", type=Path)
    keys.add_argument("--jwks-uri")
    args = parser.parse_args(argv)
    metadata: dict[str, Any] = {"client_name": args.name, "redirect_uris": args.redirect_uri,
                                "scope": args.scope}
    if args.auth_method:
        metadata["token_endpoint_auth_method"] = args.auth_method
    if args.grant_type:
        metadata["grant_types"] = args.grant_type
    if args.jwks_file:
        metadata["jwks"] = json.loads(args.jwks_file.read_text())
    if args.jwks_uri:
        metadata["jwks_uri"] = args.jwks_uri

    async def work(db: Db, _: AuthSettings) -> dict[str, Any]:
        client, secret = await ClientRegistry(db).register(metadata)
        out = client.metadata()
        if secret:
            out["client_secret"] = secret
        return out

    try:
        print(json.dumps(_run(args, work), indent=2))
    except RegistrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def user_add_main(argv: list[str] | None = None) -> int:
    """fhir-server user add --username U --fhir-user Practitioner/1 [--totp] [--patient P]...
    (password from FHIR_USER_PASSWORD or a prompt)."""
    parser = argparse.ArgumentParser(prog="fhir-server user add")
    _common(parser)
    parser.add_argument("--username", required=True)
    parser.add_argument("--fhir-user", required=True)
    parser.add_argument("--totp", action="store_true", help="enrol a TOTP second factor")
    parser.add_argument("--patient", action="append", default=[],
                        help="patients this user may pick (RelatedPerson, or a panel)")
    args = parser.parse_args(argv)
    password = os.environ.get("FHIR_USER_PASSWORD") or getpass.getpass("Password: ")

    async def work(db: Db, settings: AuthSettings) -> str | None:
        return await UserStore(db).add(args.username, password, args.fhir_user,
                                       totp=args.totp, patients=tuple(args.patient))

    secret = _run(args, work)
    print(f"user {args.username} added")
    if secret:
        uri = pyotp.TOTP(secret).provisioning_uri(name=args.username, issuer_name="fhir-server")
        print(f"TOTP secret: {secret}\nTOTP URI: {uri}")
    return 0


async def mint_dev_token(
    db: Db, settings: AuthSettings, scopes: list[str], *, patient: str | None = None,
    fhir_user: str | None = None, client_id: str = "fhir-server-cli", ttl: int | None = None,
) -> str:
    """An access token signed with the server's current key (for development and tests)."""
    token, _ = await mint_access_token(
        KeyStore(db), settings, client_id=client_id, scopes=scopes, patient=patient,
        fhir_user=fhir_user, subject=fhir_user, ttl=ttl,
    )
    return token


def token_main(argv: list[str] | None = None) -> int:
    """fhir-server token --scope "patient/*.rs" [--patient 123] [--fhir-user Practitioner/1]"""
    parser = argparse.ArgumentParser(prog="fhir-server token")
    _common(parser)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--patient")
    parser.add_argument("--fhir-user")
    parser.add_argument("--client-id", default="fhir-server-cli")
    parser.add_argument("--ttl", type=int, help="seconds (default: the access token lifetime)")
    args = parser.parse_args(argv)

    async def work(db: Db, settings: AuthSettings) -> str:
        return await mint_dev_token(db, settings, split_scope_string(args.scope),
                                    patient=args.patient, fhir_user=args.fhir_user,
                                    client_id=args.client_id, ttl=args.ttl)

    print(_run(args, work))
    return 0


def keys_rotate_main(argv: list[str] | None = None) -> int:
    """fhir-server keys rotate: new signing keys; old ones stay published until their tokens
    expire."""
    parser = argparse.ArgumentParser(prog="fhir-server keys rotate")
    _common(parser)
    args = parser.parse_args(argv)

    async def work(db: Db, settings: AuthSettings) -> list[str]:
        store = KeyStore(db)
        retain = settings.max_token_ttl + settings.clock_skew_seconds
        return [await store.rotate(alg, retain) for alg in SIGNING_ALGS]

    for kid in _run(args, work):
        print(kid)
    return 0
