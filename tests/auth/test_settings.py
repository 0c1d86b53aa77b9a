"""AuthSettings.from_env: auth on by default, dev mode only when asked, derived URLs."""

from __future__ import annotations

import logging

import pytest

from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.startup import DEV_MODE_BANNER
from fhir_server.config import Settings

SERVER = Settings(base_url="https://fhir.example.org/fhir")


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FHIR_AUTH_DISABLED", "FHIR_AUTH_ISSUER", "FHIR_AUTH_TRUSTED_ISSUERS"):
        monkeypatch.delenv(name, raising=False)
    settings = AuthSettings.from_env(SERVER)
    assert settings.enabled is True
    assert settings.issuer == "https://fhir.example.org/auth"
    assert settings.audience == "https://fhir.example.org/fhir"
    assert settings.token_url == "https://fhir.example.org/auth/token"
    assert settings.initial_access_token is None


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_AUTH_DISABLED", "1")
    monkeypatch.setenv("FHIR_AUTH_TRUSTED_ISSUERS", '{"https://ehr": "https://ehr/jwks"}')
    monkeypatch.setenv("FHIR_AUTH_INTROSPECTION",
                       '{"https://idp": {"url": "https://idp/introspect", "client_id": "rs"}}')
    monkeypatch.setenv("FHIR_AUTH_BACKEND_TOKEN_TTL", "3600")
    settings = AuthSettings.from_env(SERVER)
    assert settings.enabled is False
    assert settings.trusted_issuers == {"https://ehr": "https://ehr/jwks"}
    assert settings.introspection["https://idp"].client_id == "rs"
    assert settings.backend_token_ttl == 300  # SMART caps Backend Services tokens at 5 min


def test_dev_mode_is_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    from pymongo.asynchronous.database import AsyncDatabase

    from interceptors.smart import build_smart_interceptor

    db: AsyncDatabase[dict[str, object]] | None = None
    with caplog.at_level(logging.WARNING):
        assert build_smart_interceptor(AuthSettings(enabled=False), db) is None  # type: ignore[arg-type]
    assert DEV_MODE_BANNER in caplog.text
