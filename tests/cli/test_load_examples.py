"""`fhir-server load` of the specification's examples, twice: a summary whose numbers add up,
no line per skipped resource (unless -v), one progress bar on a terminal, and a second load
that changes nothing and exits 0 (AuditEvents included: same content = unchanged)."""

from __future__ import annotations

import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from fcntl import ioctl
from pathlib import Path
from typing import Any

from pymongo.database import Database

from tests.cli.test_cli import load_db  # noqa: F401 - the fixture
from tests.conftest import EXAMPLES_DIR

CLI = [sys.executable, "-m", "fhir_server"]
# The two Subscription examples notify https://biliwatch.com/...: a name this machine cannot
# resolve, so the SSRF policy would refuse them. The operator's allow-list lets them load.
EXAMPLE_ENDPOINTS = "biliwatch.com"


def _env(mongodb_uri: str) -> dict[str, str]:
    return {**os.environ, "MONGODB_URI": mongodb_uri, "FHIR_DATABASE": "load_test",
            "FHIR_SUBSCRIPTION_ALLOWED_HOSTS": EXAMPLE_ENDPOINTS}


def _load(mongodb_uri: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "load", *map(str, paths)], env=_env(mongodb_uri),
                          capture_output=True, text=True, timeout=120)
SUMMARY = re.compile(
    r"read (\d+) resources in [\d.]+s: (\d+) to load \(\d+/s\) = (\d+) created \+ (\d+) updated"
    r" \+ (\d+) unchanged \+ (\d+) failed; (\d+) skipped")


def _resources_in(value: Any) -> int:
    """How many resources a file holds, counted independently of the loader."""
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        entries = value.get("entry", [])
        if value.get("type") == "transaction":
            return len(entries)
        return sum(_resources_in(e["resource"]) for e in entries if isinstance(e.get("resource"), dict))
    return 1


def _summary(stderr: str) -> dict[str, int]:
    found = SUMMARY.search(stderr)
    assert found, stderr[-3000:]
    keys = ("read", "to_load", "created", "updated", "unchanged", "failed", "skipped")
    return dict(zip(keys, map(int, found.groups()), strict=True))


def _histories(db: Database[dict[str, Any]]) -> dict[str, int]:
    return {n: db[n].count_documents({}) for n in db.list_collection_names() if n.endswith("_history")}


def test_load_the_spec_examples_twice(mongodb_uri: str, load_db: Database[dict[str, Any]]) -> None:  # noqa: F811
    in_folder = sum(_resources_in(json.loads(p.read_bytes())) for p in EXAMPLES_DIR.glob("*.json"))

    first = _load(mongodb_uri, EXAMPLES_DIR)
    assert first.returncode == 0, first.stderr[-3000:]
    one = _summary(first.stderr)
    assert one["read"] == in_folder
    assert one["created"] + one["updated"] + one["unchanged"] + one["failed"] == one["to_load"]
    assert one["to_load"] + one["skipped"] == one["read"]
    assert one["failed"] == 0 and one["created"] > 400
    # Skipped resources are summed up by type, not logged one by one.
    assert "skipped " in first.stderr and "DiagnosticReport" in first.stderr
    assert len(first.stderr.splitlines()) < 20, first.stderr[-3000:]
    assert load_db["AuditEvent"].count_documents({}) == 9
    histories = _histories(load_db)

    second = _load(mongodb_uri, EXAMPLES_DIR)
    assert second.returncode == 0, second.stderr[-3000:]
    two = _summary(second.stderr)
    assert two == {**one, "created": 0, "updated": 0, "unchanged": one["to_load"]}
    assert "405" not in second.stderr
    assert _histories(load_db) == histories  # not one new version


def test_verbose_names_each_skipped_resource(mongodb_uri: str, load_db: Database[dict[str, Any]]) -> None:  # noqa: F811
    done = subprocess.run([*CLI, "load", "-v", str(EXAMPLES_DIR / "diagnosticreport-example-lipids.json")],
                          env=_env(mongodb_uri), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"skipped .*lipids\.json#entry\[0\]: type DiagnosticReport is not stored", done.stderr)


def test_an_audit_event_changed_under_its_id_is_refused(
    mongodb_uri: str, load_db: Database[dict[str, Any]], tmp_path: Path  # noqa: F811
) -> None:
    event = json.loads((EXAMPLES_DIR / "auditevent-example.json").read_text())
    path = tmp_path / "audit.json"
    path.write_text(json.dumps(event))
    assert _load(mongodb_uri, path).returncode == 0
    event["outcome"] = "4"
    path.write_text(json.dumps(event))
    done = _load(mongodb_uri, path)
    assert done.returncode == 1
    assert _summary(done.stderr)["failed"] == 1
    assert "405: AuditEvents are append-only" in done.stderr
    # Append-only: one stored version, and no history copy of it.
    assert load_db["AuditEvent"].count_documents({}) == 1
    assert load_db["AuditEvent_history"].count_documents({}) == 0


def test_one_progress_bar_on_a_terminal(mongodb_uri: str, load_db: Database[dict[str, Any]]) -> None:  # noqa: F811
    leader, follower = pty.openpty()
    ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen([*CLI, "load", str(EXAMPLES_DIR)], env=_env(mongodb_uri), stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=120) == 0
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    # Every redraw is a carriage return on the one bar's line; it ends full, then the summary.
    lines = [line for line in screen.replace("\r\n", "\n").split("\n") if line.strip()]
    bar_lines = [line for line in lines if "load:" in line]
    assert len(bar_lines) == 1, lines
    assert "100%" in bar_lines[0].split("\r")[-1]
    assert "is not stored" not in screen
    assert SUMMARY.search(screen)
