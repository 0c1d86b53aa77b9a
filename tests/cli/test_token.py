"""`fhir-server token` is for the server running on a data directory: it takes `--data-dir`,
refuses when no server runs there (instead of starting a database of its own and minting a
token the server refuses), and a token from another issuer is answered with the one expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import _serve, _stop, _wait_up
from tests.conftest import free_port

CLI = [sys.executable, "-m", "fhir_server"]


def _token(*args: str, env_data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "FHIR_DATA_DIR", "FHIR_BASE_URL")}
    if env_data_dir is not None:
        env["FHIR_DATA_DIR"] = str(env_data_dir)
    return subprocess.run([*CLI, "token", "--scope", "system/*.cruds", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_token_refuses_without_a_running_server(how: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "nothing-here"
    done = (_token("--data-dir", str(data_dir)) if how == "flag" else _token(env_data_dir=data_dir))
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""  # no token
    assert f"no server is running on the data directory {data_dir}" in done.stderr
    assert "fhir-server serve --data-dir" in done.stderr
    # It started no database of its own there.
    assert not data_dir.exists()


def test_token_for_the_server_on_its_data_dir(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    server = _serve(port, tmp_path)
    try:
        _wait_up(base, server)
        good = _token("--data-dir", str(tmp_path), "--base-url", base)
        assert good.returncode == 0, good.stderr
        auth = {"Authorization": f"Bearer {good.stdout.strip()}"}
        created = httpx.post(f"{base}/Task", json={"resourceType": "Task", "status": "requested",
                                                   "intent": "order"}, headers=auth)
        assert created.status_code == 201, created.text

        # The newcomer's mistake: the server was started on another port than the token says.
        wrong = _token("--data-dir", str(tmp_path))
        assert wrong.returncode == 0, wrong.stderr
        refused = httpx.get(f"{base}/Task", headers={"Authorization": f"Bearer {wrong.stdout.strip()}"})
        assert refused.status_code == 401
        said = refused.json()["issue"][0]["diagnostics"]
        assert "untrusted issuer 'http://127.0.0.1:8080/auth'" in said
        assert f"expected 'http://127.0.0.1:{port}/auth'" in said
        assert f"http://127.0.0.1:{port}/auth" in refused.headers["WWW-Authenticate"]
    finally:
        _stop(server)
