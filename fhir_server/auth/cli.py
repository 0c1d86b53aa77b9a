"""Command-line pieces of `fhir-server`: `client add`, `user add`, `token`, `keys rotate`.

`add_commands` declares them on the `fhir-server` parser, so `--help` is answered by argparse
before anything is imported or started; each command's `run` then works directly on the
database the entry point resolved (`args.mongodb_uri`). The `*_main(argv)` functions run one
command on its own (`--mongodb-uri` required), as the tests and scripts do.

Heavier imports (the database client, the key store, argon2) happen inside the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fhir_server.auth.clients import AUTH_METHODS, GRANT_TYPES

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from fhir_server.auth.settings import AuthSettings

    Db = AsyncDatabase[dict[str, Any]]

T = TypeVar("T")
Command = Callable[[argparse.Namespace], int]


TOKEN_NEEDS_SERVER = (
    "a token is signed with the keys of the server's own database: without --mongodb-uri, "
    "`token` talks to the server running on --data-dir and refuses when there is none"
)


def database_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every database command takes, here and in fhir_server.cli."""
    parser.add_argument("--mongodb-uri", default=None,
                        help="MongoDB URI of the server's database (default: $MONGODB_URI, else the "
                             "embedded database of the server running on --data-dir)")
    parser.add_argument("--data-dir", default=None,
                        help="the embedded database's data directory (default: $FHIR_DATA_DIR, else ./data)")


def _common(parser: argparse.ArgumentParser) -> None:
    database_flags(parser)
    parser.add_argument("--database", default=None, help="database name (default: $FHIR_DATABASE, else fhir)")
    parser.add_argument("--base-url", default=None,
                        help="the server's FHIR base URL: the token issuer and audience "
                             "(default: $FHIR_BASE_URL, else http://127.0.0.1:8080/fhir)")


def _auth_settings(args: argparse.Namespace) -> AuthSettings:
    from fhir_server.auth.settings import AuthSettings
    from fhir_server.config import Settings

    return AuthSettings.from_env(Settings.from_env(base_url=args.base_url))


def _run(args: argparse.Namespace, work: Callable[[Db, AuthSettings], Awaitable[T]]) -> T:
    uri = args.mongodb_uri or os.environ.get("MONGODB_URI")
    if not uri:
        raise SystemExit("--mongodb-uri (or MONGODB_URI) is required")
    database = args.database or os.environ.get("FHIR_DATABASE", "fhir")

    async def main() -> T:
        from pymongo import AsyncMongoClient

        from fhir_server.auth.startup import start_auth

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        try:
            settings = _auth_settings(args)
            db = client[database]
            await start_auth(settings, db)
            return await work(db, settings)
        finally:
            await client.close()

    return asyncio.run(main())


# ---------------------------------------------------------------- client add

def _client_add_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--name", required=True, help="the client's name (client_name)")
    parser.add_argument("--redirect-uri", action="append", default=[],
                        help="an allowed redirect URI (repeat for several); needed for authorization_code")
    parser.add_argument("--scope", default="", help="the most this client may be granted, space-separated")
    parser.add_argument("--auth-method", choices=AUTH_METHODS,
                        help="token endpoint authentication (default: client_secret_basic, "
                             "private_key_jwt with --jwks-file/--jwks-uri)")
    parser.add_argument("--grant-type", action="append", choices=GRANT_TYPES,
                        help="a grant type the client may use (repeat for several)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", type=Path, help="the client's public keys (JWKS JSON file)")
    keys.add_argument("--jwks-uri", help="where the client publishes its public keys")


def client_add(args: argparse.Namespace) -> int:
    from fhir_server.auth.clients import ClientRegistry, RegistrationError

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


def client_disable(args: argparse.Namespace) -> int:
    """`client disable|enable CLIENT_ID`: a disabled client gets no token, the ones it holds
    are revoked, and its backend Subscriptions (whose grant is its registration) stop
    delivering."""
    from fhir_server.auth.clients import ClientRegistry
    from fhir_server.auth.revocation import revocation_list

    async def work(db: Db, settings: AuthSettings) -> bool:
        disable = args.action == "disable"
        if not await ClientRegistry(db).set_disabled(args.client_id, disable):
            return False
        if disable:
            # Its live tokens too, in every server process within the revocation refresh.
            now = time.time()
            await revocation_list(db, 0).revoke_client(
                args.client_id, now, now + settings.max_token_ttl + settings.clock_skew_seconds)
        return True

    if not _run(args, work):
        print(f"no client {args.client_id}", file=sys.stderr)
        return 1
    print(f"{args.client_id} {args.action}d")
    return 0


# ---------------------------------------------------------------- user add

def _user_add_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--username", required=True)
    parser.add_argument("--fhir-user", required=True, help="the user's FHIR resource, e.g. Practitioner/1")
    parser.add_argument("--totp", action="store_true", help="enrol a TOTP second factor (prints its secret)")
    parser.add_argument("--patient", action="append", default=[],
                        help="a patient this user may pick (RelatedPerson, or a panel); repeat for several")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")


def _password(args: argparse.Namespace) -> str:
    """FHIR_USER_PASSWORD, else stdin's first line (--password-stdin, or no terminal), else a prompt."""
    if not args.password_stdin and os.environ.get("FHIR_USER_PASSWORD"):
        return os.environ["FHIR_USER_PASSWORD"]
    if args.password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise SystemExit("error: no password: give it on standard input, in FHIR_USER_PASSWORD, "
                             "or run `user add` in a terminal to be prompted")
        return password
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Password again: "):
        raise SystemExit("error: the passwords differ")
    return password


def user_add(args: argparse.Namespace) -> int:
    import pyotp

    from fhir_server.auth.users import UserStore

    password = _password(args)

    async def work(db: Db, _: AuthSettings) -> str | None:
        return await UserStore(db).add(args.username, password, args.fhir_user,
                                       totp=args.totp, patients=tuple(args.patient))

    from pymongo.errors import DuplicateKeyError

    try:
        secret = _run(args, work)
    except DuplicateKeyError:
        print(f"error: a user {args.username} exists already", file=sys.stderr)
        return 2
    print(f"user {args.username} added")
    if secret:
        uri = pyotp.TOTP(secret).provisioning_uri(name=args.username, issuer_name="fhir-server")
        print(f"TOTP secret: {secret}\nTOTP URI: {uri}")
    return 0


# ---------------------------------------------------------------- token

async def mint_dev_token(
    db: Db, settings: AuthSettings, scopes: list[str], *, patient: str | None = None,
    fhir_user: str | None = None, client_id: str = "fhir-server-cli", ttl: int | None = None,
) -> str:
    """An access token signed with the server's current key (for development and tests)."""
    from fhir_server.auth.keys import KeyStore
    from fhir_server.auth.tokens import mint_access_token

    token, _ = await mint_access_token(
        KeyStore(db), settings, client_id=client_id, scopes=scopes, patient=patient,
        fhir_user=fhir_user, subject=fhir_user, ttl=ttl,
    )
    return token


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--scope", required=True,
                        help="space-separated SMART scopes, e.g. 'system/*.cruds' or 'patient/*.rs'")
    parser.add_argument("--patient", help="the patient in context (for patient/ scopes)")
    parser.add_argument("--fhir-user", help="the user, e.g. Practitioner/1 (for user/ scopes)")
    parser.add_argument("--client-id", default="fhir-server-cli")
    parser.add_argument("--ttl", type=int, help="lifetime in seconds (default: the access token lifetime)")


def token(args: argparse.Namespace) -> int:
    from fhir_server.auth.scopes import split_scope_string

    async def work(db: Db, settings: AuthSettings) -> str:
        return await mint_dev_token(db, settings, split_scope_string(args.scope),
                                    patient=args.patient, fhir_user=args.fhir_user,
                                    client_id=args.client_id, ttl=args.ttl)

    print(_run(args, work))
    return 0


# ---------------------------------------------------------------- keys rotate

def keys_rotate(args: argparse.Namespace) -> int:
    from fhir_server.auth.keys import SIGNING_ALGS, KeyStore

    async def work(db: Db, settings: AuthSettings) -> list[str]:
        store = KeyStore(db)
        retain = settings.max_token_ttl + settings.clock_skew_seconds
        return [await store.rotate(alg, retain) for alg in SIGNING_ALGS]

    for kid in _run(args, work):
        print(kid)
    return 0


# ---------------------------------------------------------------- the parsers

_DB_NOTE = ("Without --mongodb-uri (or MONGODB_URI) it uses the embedded database of the server "
            "running on --data-dir, or starts that database itself while the server is stopped.")


def add_commands(sub: Any) -> None:
    """client add | user add | token | keys rotate, on the `fhir-server` subparsers `sub`.
    Each leaf parser sets `run` (the command) and `needs_server` (token only)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter

    client = sub.add_parser("client", help="register OAuth clients (client add --help)",
                            description="OAuth clients of the SMART authorization server.")
    actions = client.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add", help="register a client; prints it (and its secret) as JSON", formatter_class=fmt,
        description="Registers an OAuth client (as RFC 7591 dynamic registration would) and prints "
                    "its metadata, with client_secret for confidential clients. " + _DB_NOTE,
        epilog="example: fhir-server client add --name Dashboard --redirect-uri "
               "https://dash.example.org/cb --scope 'openid fhirUser launch/patient patient/*.rs'")
    _client_add_arguments(add)
    add.set_defaults(run=client_add, needs_server=False)
    for action in ("disable", "enable"):
        toggle = actions.add_parser(
            action, help=f"{action} a registered client", formatter_class=fmt,
            description=("Disables a client: it gets no more tokens, the tokens it holds stop working "
                         "(in a running server within FHIR_AUTH_REVOCATION_REFRESH_SECONDS), and the "
                         "Subscriptions a backend service created under its registration stop "
                         "delivering. " if action == "disable"
                         else "Enables a disabled client again. ") + _DB_NOTE)
        _common(toggle)
        toggle.add_argument("client_id", metavar="CLIENT_ID",
                            help="an id that starts with '-' goes after '--'")
        toggle.set_defaults(run=client_disable, needs_server=False)

    user = sub.add_parser("user", help="add users who sign in (user add --help)",
                          description="Users who sign in at the authorization server's login page.")
    add = user.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "add", help="add a user (argon2 password, optional TOTP)", formatter_class=fmt,
        description="Adds a user. The password comes from FHIR_USER_PASSWORD, else from the first "
                    "line of standard input (--password-stdin, or whenever stdin is not a terminal), "
                    "else from a prompt. " + _DB_NOTE,
        epilog="example: printf '%%s\\n' 'a long password' | fhir-server user add --username coord "
               "--fhir-user Practitioner/c1 --password-stdin")
    _user_add_arguments(add)
    add.set_defaults(run=user_add, needs_server=False)

    tok = sub.add_parser(
        "token", help="mint a development access token for the running server", formatter_class=fmt,
        description="Prints an access token signed with the running server's keys. Its issuer and "
                    "audience are --base-url: give the base URL the server was started with. "
                    + TOKEN_NEEDS_SERVER + ".",
        epilog="examples: fhir-server token --scope 'system/*.cruds'; "
               "fhir-server token --data-dir ./data --scope 'patient/*.rs' --patient 123")
    _token_arguments(tok)
    tok.set_defaults(run=token, needs_server=True)

    keys = sub.add_parser("keys", help="rotate the signing keys (keys rotate --help)",
                          description="The authorization server's signing keys.")
    rotate = keys.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "rotate", help="new signing keys; old ones stay published until their tokens expire",
        formatter_class=fmt,
        description="Creates a new signing key per algorithm and prints their key ids; the previous "
                    "keys stay in the JWKS until every token they signed has expired. " + _DB_NOTE)
    _common(rotate)
    rotate.set_defaults(run=keys_rotate, needs_server=False)


def _standalone(prog: str, arguments: Callable[[argparse.ArgumentParser], None], command: Command,
                argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=prog)
    arguments(parser)
    return command(parser.parse_args(argv))


def client_add_main(argv: list[str] | None = None) -> int:
    return _standalone("fhir-server client add", _client_add_arguments, client_add, argv)


def user_add_main(argv: list[str] | None = None) -> int:
    return _standalone("fhir-server user add", _user_add_arguments, user_add, argv)


def token_main(argv: list[str] | None = None) -> int:
    return _standalone("fhir-server token", _token_arguments, token, argv)


def keys_rotate_main(argv: list[str] | None = None) -> int:
    return _standalone("fhir-server keys rotate", _common, keys_rotate, argv)
