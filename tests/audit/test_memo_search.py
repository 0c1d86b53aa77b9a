"""AuditEvents' search values come through a memo (fhir_server/search/memo.py): the events of
each person, written one after another with most parts shared, are found by that person."""

from __future__ import annotations

from tests.audit.conftest import audit_events
from tests.consent.conftest import World


def test_the_servers_audit_events_are_found_by_agent(world: World) -> None:
    # Two people's reads, many each: the events of each are found by that person alone.
    for _ in range(3):
        assert world.gray.get("/Patient/anna").status_code == 200
        assert world.chen.get("/Patient/anna").status_code == 200
    gray = audit_events(world, agent="Practitioner/gray", entity="Patient/anna")
    chen = audit_events(world, agent="Practitioner/chen", entity="Patient/anna")
    assert len(gray) >= 3
    assert len(chen) >= 3
    assert {e["id"] for e in gray}.isdisjoint({e["id"] for e in chen})
