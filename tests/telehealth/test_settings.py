"""The virtual visit's settings: a wrong one stops start-up, naming the variable."""

from __future__ import annotations

import asyncio

import pytest

from fhir_server.services import build_services
from telehealth.settings import TelehealthSettings
from tests.conftest import make_settings


def test_ice_servers_from_urls_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_VIDEO_ICE_SERVERS", "stun:stun.example:3478, turn:turn.example:3478")
    assert TelehealthSettings.from_env().ice_servers == ({"urls": ["stun:stun.example:3478", "turn:turn.example:3478"]},)
    monkeypatch.setenv("FHIR_VIDEO_ICE_SERVERS", '[{"urls": "turn:t.example", "username": "u", "credential": "c"}]')
    assert TelehealthSettings.from_env().ice_servers == ({"urls": "turn:t.example", "username": "u", "credential": "c"},)
    monkeypatch.setenv("FHIR_VIDEO_ICE_SERVERS", "http://stun.example")
    with pytest.raises(ValueError, match="FHIR_VIDEO_ICE_SERVERS"):
        TelehealthSettings.from_env()


def test_a_wrong_provider_stops_start_up(mongodb_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_VIDEO_PROVIDER", "zoom")
    with pytest.raises(ValueError, match="FHIR_VIDEO_PROVIDER: 'zoom'"):
        asyncio.run(build_services(make_settings(mongodb_uri)))
    monkeypatch.setenv("FHIR_VIDEO_PROVIDER", "jitsi")  # without its URL and secret
    with pytest.raises(ValueError, match="FHIR_JITSI_URL"):
        asyncio.run(build_services(make_settings(mongodb_uri)))
    # The secret is never printed with the settings.
    monkeypatch.setenv("FHIR_JITSI_URL", "https://meet.example")
    monkeypatch.setenv("FHIR_JITSI_APP_ID", "app")
    monkeypatch.setenv("FHIR_JITSI_APP_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret")
    assert "s3cret" not in repr(TelehealthSettings.from_env())
