"""The tables the HTTP layer reads for _summary and _elements."""

from __future__ import annotations

from fhir_server.resource_types import STORED_TYPES
from fhir_server.validation import structure


def test_summary_elements() -> None:
    summary = structure.summary_elements("Task")
    assert {"id", "meta", "status", "intent", "for", "owner", "code"} <= summary
    assert not {"input", "output", "note", "text", "contained"} & summary
    assert "deceased" in structure.summary_elements("Patient")


def test_mandatory_elements() -> None:
    assert structure.mandatory_elements("Task") == {"status", "intent"}
    assert structure.mandatory_elements("Patient") == frozenset()
    assert structure.mandatory_elements("Appointment") == {"status", "participant"}


def test_choice_elements() -> None:
    choices = structure.choice_elements("Patient")
    assert choices["deceased"] == ("deceasedBoolean", "deceasedDateTime")
    assert choices["multipleBirth"] == ("multipleBirthBoolean", "multipleBirthInteger")
    assert set(structure.choice_elements("Provenance")) == {"occurred"}
    choices["deceased"] = ()
    assert structure.choice_elements("Patient")["deceased"] != ()


def test_every_stored_type_has_tables() -> None:
    for rtype in STORED_TYPES:
        assert {"id", "meta"} <= structure.summary_elements(rtype), rtype
    assert structure.summary_elements("NotAType") == frozenset()
    assert structure.choice_elements("NotAType") == {}
