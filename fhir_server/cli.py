"""fhir-server: a FHIR R4 server for care coordination, on MongoDB or its embedded database.

commands: serve (the FHIR API and SMART authorization server), load (files, Bundles, NDJSON),
init-db (collections and indexes), token (a development access token for the running server),
client add, user add, keys rotate (the authorization server's clients, users and keys), demo seed
(a demo coordinator, patient and family member with their care; never run by default).
`fhir-server COMMAND --help` tells more. Commands that need the database use --mongodb-uri
(MONGODB_URI), else the embedded database of the server running on --data-dir (./data).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from fhir_server.config import Settings

log = logging.getLogger("fhir_server")


def _settings(args: argparse.Namespace) -> Settings:
    host, port, base_url = (getattr(args, k, None) for k in ("host", "port", "base_url"))
    settings = Settings.from_env(
        host=host,
        port=port,
        base_url=base_url,
        mongodb_uri=getattr(args, "mongodb_uri", None),
        data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        header_timeout=getattr(args, "header_timeout", None),
        body_timeout=getattr(args, "body_timeout", None),
        keep_alive_timeout=getattr(args, "keep_alive_timeout", None),
    )
    if (host or port) and not base_url and "FHIR_BASE_URL" not in os.environ:
        # The default base URL follows the address the server listens on.
        settings = settings.with_(base_url=f"http://{settings.host}:{settings.port}/fhir")
    return settings


class _Database:
    """The database for a command: MONGODB_URI if set, else the embedded one, stopped after."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: Any = None

    def __enter__(self) -> Settings:
        if self.settings.mongodb_uri:
            return self.settings
        from fhir_server.embedded_db import EmbeddedDatabase, running_uri

        running = running_uri(self.settings.data_dir)
        if running:
            log.info("using the embedded database of the running server: %s", running)
            return self.settings.with_(mongodb_uri=running)

        self.embedded = EmbeddedDatabase(self.settings.data_dir)
        uri = self.embedded.start()
        log.info("embedded database (SecantusDB) on %s, data in %s", uri, self.settings.data_dir)
        return self.settings.with_(mongodb_uri=uri)

    def __exit__(self, *exc: object) -> None:
        if self.embedded is not None:
            self.embedded.stop()


class _Stopped(Exception):
    """Raised by our signal handlers so the embedded database is always stopped after uvicorn."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped()


# How long the embedded database may take to stop when serve is interrupted while starting.
DATABASE_STOP_TIMEOUT = 2.0


def cmd_serve(args: argparse.Namespace) -> int:
    from fhir_server import serving

    settings = _settings(args)
    try:
        sock = serving.listen(settings.host, settings.port)
    except serving.PortUnavailable as exc:
        log.error("%s", exc)
        return 2
    from fhir_server.app import create_app  # after the port check: importing the app takes a while

    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal with the
    # previous handler restored; these handlers turn that into an exception we clean up after.
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, _raise_stopped)
    database = _Database(settings)
    try:
        with database as settings:
            log.info("FHIR endpoint: %s (listening on %s:%s)", settings.base_url, settings.host, settings.port)
            embedded = database.embedded
            if args.workers > 1:
                from fhir_server.workers import serve_workers

                return serve_workers(args.workers, settings, sock, embedded,
                                     log_level=args.log_level.lower(), access_log=args.access_log)
            server = serving.server(create_app(settings, embedded=embedded), settings,
                                    log_level=args.log_level.lower(), access_log=args.access_log)
            if embedded is not None:
                embedded.supervise(lambda: setattr(server, "should_exit", True))
            try:
                server.run(sockets=[sock])
            finally:
                if embedded is not None:
                    embedded.stop(server.remaining())
            if embedded is not None and embedded.failed:
                log.critical("the embedded database could not be restarted: exiting")
                return 3
            if not server.started:
                return 1  # the application did not start; uvicorn logged why
    except _Stopped:
        log.info("stopped")
        if database.embedded is not None:  # a signal while it was starting
            database.embedded.stop(DATABASE_STOP_TIMEOUT)
    finally:
        sock.close()
    return 0


def cmd_init_db(args: argparse.Namespace) -> int:
    from fhir_server.services import build_services

    async def run(settings: Settings) -> None:
        services = await build_services(settings)
        await services.close()

    with _Database(_settings(args)) as settings:
        asyncio.run(run(settings))
    print("indexes created")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from fhir_server.loader import load_paths

    if args.verbose:
        logging.getLogger("fhir_server.loader").setLevel(logging.DEBUG)
    with _Database(_settings(args)) as settings:
        summary = asyncio.run(load_paths(settings, [Path(p) for p in args.paths]))
    print(summary.report(), file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_auth(args: argparse.Namespace) -> int:
    """client add | user add | token | keys rotate (fhir_server.auth.cli), on --mongodb-uri,
    else the embedded database of the server running on --data-dir; `token` refuses without
    one (a token from another database's keys is refused by the server), the others start the
    embedded database themselves while no server holds it."""
    settings = _settings(args)
    if settings.mongodb_uri:
        args.mongodb_uri = settings.mongodb_uri
        code: int = args.run(args)
        return code
    if args.needs_server:
        from fhir_server.embedded_db import running_uri

        if running_uri(settings.data_dir) is None:
            where = settings.data_dir.resolve()
            print(f"error: no server is running on the data directory {where}.\n"
                  f"Start it first (fhir-server serve --data-dir {settings.data_dir}), or give the "
                  "--data-dir of the running server, or --mongodb-uri of its database.",
                  file=sys.stderr)
            return 2
    with _Database(settings) as with_db:
        args.mongodb_uri = with_db.mongodb_uri
        code = args.run(args)
        return code


def cmd_demo_seed(args: argparse.Namespace) -> int:
    """Seeds the demo (fhir_server.demo) and prints how each demo user signs in."""
    from datetime import UTC, datetime

    import pyotp
    from pymongo import AsyncMongoClient

    from fhir_server import demo
    from fhir_server.auth.startup import start_auth
    from fhir_server.services import auth_settings

    async def run(settings: Settings) -> tuple[Any, list[Any]]:
        summary = await demo.seed_resources(settings, datetime.now(UTC))
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
        try:
            db = client[settings.database]
            await start_auth(auth_settings(settings), db)
            return summary, await demo.seed_users(db, os.environ.get("FHIR_DEMO_PASSWORD"))
        finally:
            await client.close()

    with _Database(_settings(args)) as settings:
        summary, users = asyncio.run(run(settings))
    print(summary.report(), file=sys.stderr)
    origin = settings.base_url.rsplit("/fhir", 1)[0]
    for user, password, totp in users:
        print(f"\n{user.username} ({user.fhir_user}) opens {origin}{user.opens}")
        if password is None:
            print("  exists already: its password and TOTP secret are unchanged")
            continue
        print(f"  password: {password}\n  TOTP secret: {totp}\n  TOTP URI: "
              + pyotp.TOTP(totp).provisioning_uri(name=user.username, issuer_name="fhir-server"))
    return 1 if summary.failed else 0


def _database_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mongodb-uri", help="MongoDB URI (default: $MONGODB_URI, else embedded)")
    p.add_argument("--data-dir", help="embedded database data directory (default: ./data)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fhir-server", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the FHIR server")
    serve.add_argument("--host", help="listen address (default: $FHIR_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: $FHIR_PORT, else 8080)")
    serve.add_argument("--base-url", help="public base URL (default http://HOST:PORT/fhir)")
    serve.add_argument("--log-level", default="INFO", help="debug, info, warning or error (default: info)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--header-timeout", type=float,
                       help="seconds a client has to send a request's headers (FHIR_HEADER_TIMEOUT, 10)")
    serve.add_argument("--body-timeout", type=float,
                       help="seconds a client has to send a request's body (FHIR_BODY_TIMEOUT, 60)")
    serve.add_argument("--keep-alive-timeout", type=float,
                       help="seconds an idle keep-alive connection stays open (FHIR_KEEP_ALIVE_TIMEOUT, 5)")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("FHIR_WORKERS", "1")),
                       help="server processes sharing the socket and the database, one per "
                            "core to use (FHIR_WORKERS, 1)")
    _database_flags(serve)
    serve.set_defaults(func=cmd_serve)
    load = sub.add_parser(
        "load", help="load resources, Bundles and NDJSON from files or folders",
        description="Loads resources, Bundles and NDJSON through the same validation and hooks as "
                    "the API, many resources per transaction (transaction Bundles as transactions). "
                    "Resources with an id are created, updated or left unchanged, so loading the "
                    "same files again changes nothing. Prints one progress bar and a summary; "
                    "exits 1 when something failed.")
    load.add_argument("paths", nargs="+", metavar="PATH", help="a .json or .ndjson file, or a folder of them")
    load.add_argument("-v", "--verbose", action="store_true",
                      help="log every resource skipped (a type this server does not store)")
    _database_flags(load)
    load.set_defaults(func=cmd_load)
    init = sub.add_parser("init-db", help="create collections and indexes")
    _database_flags(init)
    init.set_defaults(func=cmd_init_db)
    demo = sub.add_parser("demo", help="demo data for the apps (demo seed --help); never run by default",
                          description="Demo data for the server's own apps, for a demo only: never run by "
                                      "default, never in production.")
    seed = demo.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "seed", help="create the demo coordinator, patient and family member with their care",
        description="Creates (or moves to today) a demo coordinator (Practitioner), a patient and her "
                    "daughter (RelatedPerson) with Tasks, a referral, visits, a care plan, a care team and "
                    "a thread, and three users who sign in to the apps with a password and a TOTP code "
                    "(printed once; FHIR_DEMO_PASSWORD sets the password). For a demo: never in production.")
    _database_flags(seed)
    seed.add_argument("--base-url", help="the server's public FHIR base URL, for the printed links")
    seed.set_defaults(func=cmd_demo_seed)
    from fhir_server.auth import cli as auth_cli

    auth_cli.add_commands(sub)
    for name in AUTH_COMMANDS:
        sub.choices[name].set_defaults(func=cmd_auth)
    return root


AUTH_COMMANDS = ("client", "user", "token", "keys")


def main(argv: list[str] | None = None) -> int:
    # Parsed first: --help and usage errors are answered before anything starts.
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from fhir_server.observability import logs
    from fhir_server.observability.settings import ObservabilitySettings

    logs.configure(ObservabilitySettings.from_settings().log_format)  # FHIR_LOG_FORMAT
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
