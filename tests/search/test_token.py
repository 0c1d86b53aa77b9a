"""Token parameters: code, system|code, |code, system|, :not, :text, :of-type, :missing, :in,
:not-in, _id, _tag, _security, escaping."""

from __future__ import annotations

from typing import Any

import pytest

from tests.search.conftest import Searcher

SYS = "http://example.org/ids"


def task(tid: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "id": tid, "status": status, "intent": "order", **extra}


@pytest.fixture
def tasks(s: Searcher) -> Searcher:
    s.put(task("t1", "requested",
               identifier=[{"system": SYS, "value": "A1",
                            "type": {"coding": [{"system": "http://t", "code": "MR"}],
                                     "text": "Medical record"}}],
               code={"coding": [{"system": "http://codes", "code": "fill", "display": "Fill Order"}],
                     "text": "Fülfill the order"},
               businessStatus={"coding": [{"code": "waiting"}]},
               meta={"tag": [{"system": "http://tags", "code": "urgent"}],
                     "security": [{"system": "http://sec", "code": "R"}]}))
    s.put(task("t2", "in-progress", identifier=[{"value": "A1"}],
               code={"coding": [{"system": "http://other", "code": "fill"}]},
               meta={"tag": [{"system": "http://tags", "code": "routine"}]}))
    s.put(task("t3", "completed", identifier=[{"system": SYS, "value": "a,b|c"}]))
    return s


def test_code_any_system(tasks: Searcher) -> None:
    assert tasks.idset("/Task?status=requested") == {"t1"}
    assert tasks.idset("/Task?code=fill") == {"t1", "t2"}
    assert tasks.idset("/Task?status=nothing") == set()


def test_or_and_and(tasks: Searcher) -> None:
    assert tasks.idset("/Task?status=requested,in-progress") == {"t1", "t2"}
    assert tasks.idset("/Task?status=requested,in-progress&code=http://other|fill") == {"t2"}


def test_system_and_code(tasks: Searcher) -> None:
    assert tasks.idset(f"/Task?identifier={SYS}|A1") == {"t1"}
    assert tasks.idset("/Task?identifier=A1") == {"t1", "t2"}
    assert tasks.idset("/Task?code=http://codes|fill") == {"t1"}


def test_no_system(tasks: Searcher) -> None:
    assert tasks.idset("/Task?identifier=|A1") == {"t2"}
    assert tasks.idset("/Task?business-status=|waiting") == {"t1"}


def test_system_only(tasks: Searcher) -> None:
    assert tasks.idset(f"/Task?identifier={SYS}|") == {"t1", "t3"}


def test_not(tasks: Searcher) -> None:
    assert tasks.idset("/Task?status:not=requested") == {"t2", "t3"}
    assert tasks.idset("/Task?code:not=http://codes|fill") == {"t2", "t3"}


def test_text(tasks: Searcher) -> None:
    # :text searches the display and text, case- and accent-insensitively.
    assert tasks.idset("/Task?code:text=fulfill") == {"t1"}
    assert tasks.idset("/Task?code:text=FILL") == {"t1"}
    assert tasks.idset("/Task?identifier:text=medical") == {"t1"}


def test_of_type(tasks: Searcher) -> None:
    assert tasks.idset("/Task?identifier:of-type=http://t|MR|A1") == {"t1"}
    assert tasks.idset("/Task?identifier:of-type=http://t|MR|A2") == set()
    assert "system|code|value" in tasks.error("/Task?identifier:of-type=MR")


def test_missing(tasks: Searcher) -> None:
    assert tasks.idset("/Task?code:missing=true") == {"t3"}
    assert tasks.idset("/Task?code:missing=false") == {"t1", "t2"}
    assert "true or false" in tasks.error("/Task?code:missing=maybe")


def test_in_and_not_in(tasks: Searcher) -> None:
    vs = "http://hl7.org/fhir/ValueSet/task-status"
    assert tasks.idset(f"/Task?status:in={vs}") == {"t1", "t2", "t3"}
    assert tasks.idset(f"/Task?status:not-in={vs}") == set()
    assert "not known" in tasks.error("/Task?status:in=http://nowhere/vs", 400)


def test_escaped_separators(tasks: Searcher) -> None:
    assert tasks.idset(f"/Task?identifier={SYS}|a\\,b\\|c") == {"t3"}
    assert tasks.idset("/Task?identifier=a\\,b\\|c") == {"t3"}


def test_id(tasks: Searcher) -> None:
    assert tasks.idset("/Task?_id=t1,t3") == {"t1", "t3"}
    assert tasks.idset("/Task?_id=t1&status=completed") == set()


def test_tag_and_security(tasks: Searcher) -> None:
    assert tasks.idset("/Task?_tag=http://tags|urgent") == {"t1"}
    assert tasks.idset("/Task?_tag=routine,urgent") == {"t1", "t2"}
    assert tasks.idset("/Task?_security=R") == {"t1"}


def test_deleted_never_match(tasks: Searcher) -> None:
    assert tasks.client.delete("/Task/t1").status_code == 200
    assert tasks.idset("/Task?status=requested") == set()
    assert tasks.idset("/Task?_id=t1") == set()
    assert tasks.idset("/Task?code:missing=true") == {"t3"}
    assert tasks.idset("/Task") == {"t2", "t3"}


def test_bad_modifier_is_400(tasks: Searcher) -> None:
    assert "status" in tasks.error("/Task?status:contains=x")


def test_in_our_own_valueset(s: Searcher) -> None:
    system = "http://fhir.care-coord.example/CodeSystem/coordination-task-code"
    vs = "http://fhir.care-coord.example/ValueSet/coordination-task-code"
    s.put(task("ours", "requested", code={"coding": [{"system": system, "code": "referral"}]}))
    s.put(task("theirs", "requested",
               code={"coding": [{"system": "http://other", "code": "referral"}]}))
    assert s.idset(f"/Task?code:in={vs}") == {"ours"}
    assert s.idset(f"/Task?code:not-in={vs}") == {"theirs"}
