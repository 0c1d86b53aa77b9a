"""Searches over the specification's own examples, with answers read off the files."""

from __future__ import annotations

import pytest

from tests.conftest import EXAMPLES_DIR, load_example
from tests.search.conftest import Searcher

FILES = sorted(p.name for p in EXAMPLES_DIR.glob("*.json")
               if p.name.split("-")[0] in ("task", "appointment", "careplan", "communication"))


@pytest.fixture
def examples(s: Searcher) -> Searcher:
    for name in FILES:
        s.put(load_example(name))
    return s


# One test, so the examples load once (the database is cleaned per test).
CASES = [
    ("Task?owner=Practitioner/example", {"example3"}),
    ("Task?owner=Organization/1832473e-2fe0-452d-abe9-3cdb9879522f&status=in-progress",
     {"example1", "example5"}),
    ("Task?patient=Patient/example&status=completed", {"example4", "example6"}),
    ("Task?patient=f001", {"example3"}),
    # 2016-10-31T08:25:05+10:00 is 2016-10-30 in UTC, the server's zone for dates without one
    ("Task?authored-on=2016-10-30&status:not=completed", {"example1", "example2", "example5"}),
    ("Task?authored-on=2016-10-31T08:25:05%2B10:00", {"example1", "example5", "example6"}),
    ("Task?authored-on=lt2016-10-01", {"example3"}),
    ("Appointment?actor=Practitioner/f202", {"2docs"}),
    ("Appointment?practitioner=example&date=ge2013-12-10", {"example"}),
    ("Appointment?patient=Patient/example&status=proposed", {"examplereq"}),
    ("Appointment?location=Location/1", {"example", "examplereq"}),
    ("Communication?subject=Patient/1&status=completed", {"fm-attachment", "fm-solicited"}),
    ("CarePlan?patient=example&status=active", {"obesity-narrative"}),
    ("Task?_id=example3&_include=Task:owner", {"example3"}),
]


def test_example_searches(examples: Searcher) -> None:
    for query, expected in CASES:
        assert examples.idset(f"/{query}") == expected, query
    for name in FILES:
        resource = load_example(name)
        found = examples.ids(f"/{resource['resourceType']}?_id={resource['id']}")
        assert found == [resource["id"]], name
