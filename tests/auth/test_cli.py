"""CLI pieces: `client add` and `token` against the database."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import httpx
import pytest

from fhir_server.auth import cli
from fhir_server.auth.clients import ClientRegistry
from fhir_server.auth.tokens import TokenValidator
from tests.auth.conftest import DATABASE, AuthServer, register
from tests.subscriptions.conftest import wait_until


@pytest.fixture
def env(auth: AuthServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("FHIR_AUTH_ISSUER", auth.settings.issuer)
    return ["--mongodb-uri", auth.mongodb_uri, "--database", DATABASE,
            "--base-url", auth.fhir_base]


def test_client_add(env: list[str], auth: AuthServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.client_add_main([*env, "--name", "Dashboard", "--redirect-uri",
                                "https://dash.example.org/cb", "--scope", "user/*.rs openid"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["client_secret"]
    stored = auth.run(lambda db: ClientRegistry(db).get(out["client_id"]))
    assert stored is not None and stored.client_name == "Dashboard"
    assert stored.auth_method == "client_secret_basic"
    bad = cli.client_add_main([*env, "--name", "No redirect"])
    assert bad == 2


def test_token_prints_a_valid_token(env: list[str], auth: AuthServer,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.token_main([*env, "--scope", "patient/*.rs launch/patient",
                           "--patient", "p-1", "--fhir-user", "Practitioner/d1"]) == 0
    token = capsys.readouterr().out.strip()

    async def validate(db: Any) -> Any:
        return await TokenValidator(auth.settings, db).validate(token)

    principal = auth.run(validate)
    assert principal.patient == "p-1"
    assert principal.fhir_user == "Practitioner/d1"
    assert principal.scopes == frozenset({"patient/*.rs", "launch/patient"})


def test_user_add_with_totp(env: list[str], auth: AuthServer,
                            monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_USER_PASSWORD", "a long password")
    assert cli.user_add_main([*env, "--username", "coord", "--fhir-user",
                              "Practitioner/c1", "--totp"]) == 0
    assert "otpauth://" in capsys.readouterr().out


def test_client_disable_and_enable(env: list[str], auth: AuthServer, capsys: pytest.CaptureFixture[str]) -> None:
    from fhir_server.cli import main

    assert cli.client_add_main([*env, "--name", "Backend", "--grant-type", "client_credentials",
                                "--auth-method", "private_key_jwt", "--jwks-uri",
                                "https://backend.example.org/jwks", "--scope", "system/Task.rs"]) == 0
    client_id = json.loads(capsys.readouterr().out)["client_id"]
    # A disabled client is no registered client to anyone who asks (token endpoint, grants).
    assert main(["client", "disable", *env, client_id]) == 0
    assert auth.run(lambda db: ClientRegistry(db).get(client_id)) is None
    assert main(["client", "enable", *env, client_id]) == 0
    enabled = auth.run(lambda db: ClientRegistry(db).get(client_id))
    assert enabled is not None and enabled.client_id == client_id
    assert main(["client", "disable", *env, "no-such-client"]) == 1


def test_registered_client_ids_read_as_arguments_on_a_command_line(
        env: list[str], auth: AuthServer, capsys: pytest.CaptureFixture[str]) -> None:
    from fhir_server.auth.clients import client_from_metadata
    from fhir_server.cli import main

    # One url-safe base64 id in 64 began with "-", which argparse takes for an option.
    ids = [client_from_metadata({"redirect_uris": ["https://a.example.org/cb"]})[0].client_id
           for _ in range(1000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    # An id from before that change is still reachable after "--".
    legacy = dataclasses.replace(client_from_metadata({"redirect_uris": ["https://a.example.org/cb"]})[0],
                                 client_id="-legacy")
    auth.run(lambda db: ClientRegistry(db).ensure(legacy))
    assert main(["client", "disable", *env, "--", "-legacy"]) == 0
    assert auth.run(lambda db: ClientRegistry(db).get("-legacy")) is None


def test_a_disabled_clients_live_tokens_stop_working(env: list[str], auth: AuthServer, http: httpx.Client,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from fhir_server.cli import main

    resource_server = register(http, client_name="Resource server", redirect_uris=["https://rs.example.org/cb"],
                               token_endpoint_auth_method="client_secret_basic")
    assert cli.client_add_main([*env, "--name", "Backend", "--grant-type", "client_credentials",
                                "--auth-method", "private_key_jwt", "--jwks-uri",
                                "https://backend.example.org/jwks", "--scope", "system/Task.rs"]) == 0
    client_id = json.loads(capsys.readouterr().out)["client_id"]

    def mint() -> str:
        assert cli.token_main([*env, "--client-id", client_id, "--scope", "system/Task.rs"]) == 0
        return capsys.readouterr().out.strip().splitlines()[-1]

    def active(token: str) -> bool:
        answer = http.post("/auth/introspect", data={"token": token},
                           auth=(resource_server["client_id"], resource_server["client_secret"]))
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["active"])

    held, other = mint(), cli.token_main([*env, "--scope", "system/Task.rs"])
    assert other == 0
    other_token = capsys.readouterr().out.strip()
    assert active(held) and active(other_token)
    disabled_at = time.time()
    assert main(["client", "disable", *env, client_id]) == 0
    # The server is another process with its own list: it sees the revocation on its next
    # refresh (FHIR_AUTH_REVOCATION_REFRESH_SECONDS).
    wait_until(lambda: not active(held))
    assert active(other_token)  # another client's token stands
    # Tokens carry whole-second issue times: one minted in the second of the disable is
    # revoked with the rest, so the enabled client's new token comes from the next second.
    wait_until(lambda: time.time() >= int(disabled_at) + 1)
    assert main(["client", "enable", *env, client_id]) == 0
    fresh = mint()
    assert active(fresh) and not active(held)
