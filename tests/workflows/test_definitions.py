"""The definitions file: validated at start-up with an error naming the line and the key;
the shipped defaults load; an organization's own setting wins over the default."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from fhir_server.config import DEFAULT_PROFILES_DIR, WorkflowSettings
from fhir_server.services import build_services
from tests.conftest import make_settings
from workflows.definitions import Definitions, DefinitionsError
from workflows.durations import parse_duration


def test_iso_8601_durations() -> None:
    assert parse_duration("PT2S") == timedelta(seconds=2)
    assert parse_duration("PT1H30M") == timedelta(hours=1, minutes=30)
    assert parse_duration("P1W2D") == timedelta(days=9)
    assert parse_duration("PT0.5S") == timedelta(milliseconds=500)
    for wrong in ("2s", "P", "PT", "P1DT", "PT-1S"):
        with pytest.raises(ValueError, match="is not an ISO 8601 duration"):
            parse_duration(wrong)
    with pytest.raises(ValueError, match="years and months have no fixed length"):
        parse_duration("P1M")


def test_the_shipped_defaults_load() -> None:
    definitions = Definitions.load(DEFAULT_PROFILES_DIR / "workflows.yaml")
    assert definitions.duration("handoff", "timeout") == timedelta(hours=4)
    assert definitions.get("referral", "notifyRequester") is True


def test_an_organizations_setting_wins_over_the_default() -> None:
    definitions = Definitions.parse(
        "defaults:\n  handoff:\n    timeout: PT4H\n"
        "organizations:\n  Organization/north:\n    handoff:\n      timeout: PT2S\n"
        "      escalateTo: [PractitionerRole/coordinator]\n")
    assert definitions.duration("handoff", "timeout", "Organization/north") == timedelta(seconds=2)
    assert definitions.duration("handoff", "timeout", "Organization/south") == timedelta(hours=4)
    assert definitions.get("handoff", "escalateTo", "Organization/north") == ["PractitionerRole/coordinator"]
    assert definitions.duration("referral", "acceptedWithin") is None


@pytest.mark.parametrize(("text", "error"), [
    ("defaults:\n  handoff:\n    timeout: 2s\n",
     "w.yaml: line 3: defaults.handoff.timeout: '2s' is not an ISO 8601 duration"),
    ("defaults:\n  referral:\n    acceptedWithin: P1M\n",
     "w.yaml: line 3: defaults.referral.acceptedWithin: 'P1M' is not an ISO 8601 duration"),
    ("defaults:\n  handoff:\n    escalateTo:\n      - PractitionerRole/a\n      - bob\n",
     "w.yaml: line 5: defaults.handoff.escalateTo[1]: 'bob' is not a reference"),
    ("organizations:\n  Organization/a: {}\n  Patient/x: {}\n",
     "w.yaml: line 3: organizations.Patient/x: 'Patient/x': organizations are keyed by Organization/<id>"),
    ("defaults:\n  Handoff: {}\n", "w.yaml: line 2: defaults.Handoff: workflow name 'Handoff'"),
    ("timeouts: {}\n", "w.yaml: line 1: (top level): Additional properties are not allowed ('timeouts'"),
    ("defaults: [\n", "w.yaml: line 2: not valid YAML/JSON"),
    ('{"defaults": {"handoff": {\n  "timeout": 3}}}', "w.yaml: line 2: defaults.handoff.timeout: 3 is not of type 'string'"),
])
def test_a_wrong_definition_is_named_by_line_and_key(text: str, error: str) -> None:
    with pytest.raises(DefinitionsError) as raised:
        Definitions.parse(text, "w.yaml")
    assert str(raised.value).startswith(error)


def test_the_server_does_not_start_with_a_wrong_definitions_file(mongodb_uri: str, tmp_path: Path) -> None:
    wrong = tmp_path / "workflows.yaml"
    wrong.write_text("defaults:\n  handoff:\n    timeout: four hours\n")
    settings = make_settings(mongodb_uri, workflows=WorkflowSettings(definitions=wrong))
    with pytest.raises(DefinitionsError, match=rf"^{wrong}: line 3: defaults.handoff.timeout: 'four hours'"):
        asyncio.run(build_services(settings))
    # Switched off, the engine reads no file.
    off = make_settings(mongodb_uri, workflows=WorkflowSettings(enabled=False, definitions=wrong))

    async def start() -> None:
        services = await build_services(off)
        assert services.workflows is None
        await services.close()

    asyncio.run(start())


def test_a_workflow_module_that_does_not_import_stops_start_up(mongodb_uri: str) -> None:
    settings = make_settings(mongodb_uri, workflows=WorkflowSettings(modules=("tests.workflows.toy:no_such_factory",)))
    with pytest.raises(ValueError, match=r"^workflow module 'tests.workflows.toy:no_such_factory': "):
        asyncio.run(build_services(settings))
    named = make_settings(mongodb_uri, workflows=WorkflowSettings(modules=("tests.workflows.toy:killed_after_effect",),
                                                                 builtin=False))

    async def start() -> None:
        services = await build_services(named)
        assert services.workflows is not None and list(services.workflows.workflows) == ["thank-requester"]
        await services.close()

    asyncio.run(start())
