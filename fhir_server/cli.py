"""The `fhir-server` command: serve, load, init-db."""

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
        from fhir_server.embedded_db import EmbeddedDatabase

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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fhir_server.app import create_app

    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal with the
    # previous handler restored; these handlers turn that into an exception we clean up after.
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, _raise_stopped)
    with _Database(_settings(args)) as settings:
        log.info("FHIR endpoint: %s", settings.base_url)
        try:
            uvicorn.run(
                create_app(settings), host=settings.host, port=settings.port,
                log_level=args.log_level.lower(), access_log=args.access_log,
            )
        except _Stopped:
            log.info("stopping")
    return 0


def cmd_init_db(args: argparse.Namespace) -> int:
    from fhir_server.app import build_services

    async def run(settings: Settings) -> None:
        services = await build_services(settings)
        await services.close()

    with _Database(_settings(args)) as settings:
        asyncio.run(run(settings))
    print("indexes created")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from fhir_server.loader import load_paths

    with _Database(_settings(args)) as settings:
        summary = asyncio.run(load_paths(settings, [Path(p) for p in args.paths]))
    print(summary.report(), file=sys.stderr)
    return 1 if summary.failed else 0


def _database_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mongodb-uri", help="MongoDB URI (default: $MONGODB_URI, else embedded)")
    p.add_argument("--data-dir", help="embedded database data directory (default: ./data)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the FHIR server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--base-url", help="public base URL (default http://HOST:PORT/fhir)")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--access-log", action="store_true")
    _database_flags(serve)
    serve.set_defaults(func=cmd_serve)
    load = sub.add_parser("load", help="load resources or Bundles from files or folders")
    load.add_argument("paths", nargs="+")
    _database_flags(load)
    load.set_defaults(func=cmd_load)
    init = sub.add_parser("init-db", help="create collections and indexes")
    _database_flags(init)
    init.set_defaults(func=cmd_init_db)
    return root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
