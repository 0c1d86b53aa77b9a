"""What a newcomer runs first: `make run` installs the runtime only (and builds the web apps
with npm), `make test` the dev tools (npm ci: the lock file exactly, the tree left clean); the
docs' examples use stored types."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fhir_server.resource_types import STORED

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(target: str) -> str:
    """What `make` would run for `target` from nothing (-B: as if no stamp existed), without running it."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is needed: `make run` and `make test` are the README's two commands")
    # Under `make test` this runs inside make: its variables would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    done = subprocess.run([make, "--no-print-directory", "-n", "-B", target], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _pip_installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "pip install" in line and "-e" in line]


def test_make_run_installs_only_the_runtime() -> None:
    commands = _dry_run("run")
    assert _pip_installs(commands) == [".venv/bin/pip install --quiet -e '.[embedded]'"]
    assert "dev" not in commands and "apt-get" not in commands
    # The server's own apps are built (apps/dist/), from their lock file exactly; no test tools.
    npm = [line for line in commands.splitlines() if "npm " in line]
    assert [line.split("&&")[0].strip() for line in npm] == ["cd apps", "cd apps"], npm
    assert " npm ci " in npm[0] and "npm run build" in npm[1], npm
    assert commands.rstrip().endswith(".venv/bin/fhir-server serve")


def test_make_test_installs_the_dev_extras_and_runs_npm_ci() -> None:
    commands = _dry_run("test")
    assert ".venv/bin/pip install --quiet -e '.[embedded,dev]'" in _pip_installs(commands)
    npm = [line for line in commands.splitlines() if "npm " in line]
    # The JS client of tests/clients, then the apps (installed, then built).
    assert len(npm) == 3 and all(" npm ci " in line for line in npm[:2]), npm
    assert "npm run build" in npm[2], npm
    assert "apt-get" in commands  # Chromium, when missing: the README says so
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"make\s+test.{0,400}`chromium` with `apt-get` — as root", readme, re.S)


# `/fhir/Type`, `[base]/Type`, `$BASE/Type` in examples, and scopes `patient/Type.rs`.
_URL_TYPE = re.compile(r"(?:/fhir|\$BASE|\[base\])/([A-Z][A-Za-z]+)\b")
_SCOPE_TYPE = re.compile(r"\b(?:patient|user|system)/([A-Z][A-Za-z]+)\.")


@pytest.mark.parametrize("doc", ["docs/smart.md", "docs/subscriptions.md", "README.md"])
def test_doc_examples_use_stored_types(doc: str) -> None:
    text = (ROOT / doc).read_text()
    blocks = "\n".join(re.findall(r"```(?:sh|bash)?\n(.*?)```", text, re.S))
    used = set(_URL_TYPE.findall(blocks)) | set(_SCOPE_TYPE.findall(blocks)) | set(_SCOPE_TYPE.findall(text))
    assert used, doc
    assert used <= set(STORED), f"{doc} shows types this server does not store: {sorted(used - set(STORED))}"
