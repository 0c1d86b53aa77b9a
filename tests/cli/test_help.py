"""`fhir-server ... --help` answers at once, says something useful, and starts nothing;
`user add` without a terminal reads its password from stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

CLI = [sys.executable, "-m", "fhir_server"]

# command -> what its help must mention (its own flags or subcommands)
HELP = {
    (): ["serve", "load", "init-db", "token", "client add", "user add", "keys rotate", "demo seed", "--data-dir"],
    ("serve",): ["--port", "--data-dir", "--mongodb-uri"],
    ("load",): ["--verbose", "PATH", "--data-dir", "unchanged"],
    ("init-db",): ["--data-dir"],
    ("token",): ["--scope", "--patient", "--fhir-user", "--data-dir", "--base-url", "running"],
    ("client",): ["add", "register"],
    ("client", "add"): ["--name", "--redirect-uri", "--scope", "--auth-method", "--jwks-file", "--data-dir"],
    ("user",): ["add"],
    ("user", "add"): ["--username", "--fhir-user", "--totp", "--password-stdin", "standard input"],
    ("keys",): ["rotate"],
    ("keys", "rotate"): ["--data-dir", "expired"],
    ("demo",): ["seed", "never run by default"],
    ("demo", "seed"): ["--data-dir", "--mongodb-uri", "FHIR_DEMO_PASSWORD", "never in production"],
}


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "FHIR_USER_PASSWORD")}
    env["FHIR_DATA_DIR"] = str(data_dir)
    return env


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "fhir-server")
def test_help_is_complete_and_starts_nothing(command: tuple[str, ...], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run([*CLI, *command, "--help"], env=_env(data_dir), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    usage = " ".join(("usage: fhir-server", *command))
    assert done.stdout.startswith(usage), done.stdout
    for word in HELP[command]:
        assert word in done.stdout, f"{word!r} missing from `{usage} --help`:\n{done.stdout}"
    # Answered by the parser: no database was started (it would have made its data directory).
    assert not data_dir.exists()
    assert list(tmp_path.iterdir()) == []
    assert done.stderr == ""


def test_a_command_group_without_its_action_says_which(tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "client"], env=_env(tmp_path / "data"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "usage: fhir-server client" in done.stderr and "ACTION" in done.stderr
    assert not (tmp_path / "data").exists()


def _user_add(mongodb_uri: str, *flags: str, stdin: Any, text_in: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FHIR_USER_PASSWORD"}
    return subprocess.run(
        [*CLI, "user", "add", "--mongodb-uri", mongodb_uri, "--database", "cli_users",
         "--fhir-user", "Practitioner/c1", *flags],
        env=env, input=text_in, stdin=stdin, capture_output=True, text=True, timeout=120,
        start_new_session=True,  # no controlling terminal, as under cron, CI or a pipe
    )


@pytest.fixture
def users_db(mongodb_uri: str) -> Any:
    with MongoClient(mongodb_uri) as client:
        client.drop_database("cli_users")
        yield client["cli_users"]["auth_users"]
        client.drop_database("cli_users")


def test_user_add_without_a_terminal_reads_stdin(mongodb_uri: str, users_db: Any) -> None:
    piped = _user_add(mongodb_uri, "--username", "piped", stdin=None, text_in="a long password\n")
    assert piped.returncode == 0, piped.stderr
    assert "user piped added" in piped.stdout
    flagged = _user_add(mongodb_uri, "--username", "flagged", "--password-stdin", stdin=None,
                        text_in="another long password\n")
    assert flagged.returncode == 0, flagged.stderr
    assert {u["_id"] for u in users_db.find()} == {"piped", "flagged"}
    again = _user_add(mongodb_uri, "--username", "piped", stdin=None, text_in="a long password\n")
    assert again.returncode == 2
    assert "a user piped exists already" in again.stderr and "Traceback" not in again.stderr


def test_user_add_with_nothing_on_stdin_says_so(mongodb_uri: str, users_db: Any) -> None:
    done = _user_add(mongodb_uri, "--username", "nobody", stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert "no password" in done.stderr and "FHIR_USER_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr and "EOFError" not in done.stderr
    assert users_db.count_documents({}) == 0
