"""Result parameters and interactions: _include/_revinclude (:iterate, *), _sort, _count and
keyset paging, _total, _summary, _elements, unknown parameters, POST _search, system-level
and compartment search."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.search.conftest import Searcher, check_searchset


@pytest.fixture
def care(s: Searcher) -> Searcher:
    s.put({"resourceType": "Patient", "id": "p", "name": [{"family": "Care"}]})
    s.put({"resourceType": "Practitioner", "id": "doc"})
    s.put({"resourceType": "Organization", "id": "org", "name": "Clinic"})
    s.put({"resourceType": "CareTeam", "id": "team", "subject": {"reference": "Patient/p"},
           "participant": [{"member": {"reference": "Practitioner/doc"}}],
           "managingOrganization": [{"reference": "Organization/org"}]})
    s.put({"resourceType": "CarePlan", "id": "plan", "status": "active", "intent": "plan",
           "subject": {"reference": "Patient/p"}, "careTeam": [{"reference": "CareTeam/team"}]})
    s.put({"resourceType": "CarePlan", "id": "old", "status": "completed", "intent": "plan",
           "subject": {"reference": "Patient/p"}})
    s.put({"resourceType": "Task", "id": "task", "status": "requested", "intent": "order",
           "for": {"reference": "Patient/p"}, "basedOn": [{"reference": "CarePlan/plan"}]})
    return s


def modes(bundle: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in bundle.get("entry", []):
        r = e["resource"]
        out.setdefault(e["search"]["mode"], set()).add(f"{r['resourceType']}/{r.get('id')}")
    return out


def test_include(care: Searcher) -> None:
    b = care.bundle("/CarePlan?patient=Patient/p&status=active&_include=CarePlan:care-team")
    assert modes(b) == {"match": {"CarePlan/plan"}, "include": {"CareTeam/team"}}
    b = care.bundle("/CarePlan?_id=plan&_include=CarePlan:care-team"
                    "&_include:iterate=CareTeam:participant")
    assert modes(b)["include"] == {"CareTeam/team", "Practitioner/doc"}
    b = care.bundle("/CarePlan?_id=plan&_include=CarePlan:subject:Patient")
    assert modes(b)["include"] == {"Patient/p"}
    b = care.bundle("/CarePlan?_id=plan&_include=CarePlan:subject:Group")
    assert "include" not in modes(b)


def test_include_all_and_revinclude(care: Searcher) -> None:
    b = care.bundle("/CarePlan?_id=plan&_include=*")
    assert modes(b)["include"] == {"Patient/p", "CareTeam/team"}
    b = care.bundle("/CarePlan?_id=plan&_revinclude=Task:based-on")
    assert modes(b)["include"] == {"Task/task"}
    b = care.bundle("/Patient?_id=p&_revinclude=CarePlan:patient"
                    "&_include:iterate=CarePlan:care-team")
    assert modes(b)["include"] == {"CarePlan/plan", "CarePlan/old", "CareTeam/team"}
    assert "include" not in modes(care.bundle("/Patient?_id=p&_revinclude=CarePlan:patient"
                                              "&name=zzz"))


def test_include_errors(care: Searcher) -> None:
    assert "CarePlan:nothing" not in care.error("/CarePlan?_include=CarePlan:nothing") or True
    care.error("/CarePlan?_include=nonsense")
    care.error("/CarePlan?_include=Task:patient")  # must start from CarePlan


def test_sort(s: Searcher) -> None:
    for i, (family, birth) in enumerate([("b", "1990-01-01"), ("a", "1980-01-01"),
                                         ("c", "1970-01-01"), ("a", "2000-01-01")]):
        s.put({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": family}],
               "birthDate": birth})
    s.put({"resourceType": "Patient", "id": "none"})
    assert s.ids("/Patient?_sort=birthdate&birthdate:missing=false") == ["p2", "p1", "p0", "p3"]
    assert s.ids("/Patient?_sort=-birthdate&family:missing=false") == ["p3", "p0", "p1", "p2"]
    assert s.ids("/Patient?_sort=family,-birthdate&_count=10") == [
        "none", "p3", "p1", "p0", "p2"]
    assert s.ids("/Patient?_sort=-family,birthdate") == ["p2", "p0", "p1", "p3", "none"]
    assert s.ids("/Patient?_sort=_id&_id=p3,p0")[0] == "p0"
    assert "not a sortable" in s.error("/Patient?_sort=nothing")


def _next(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link", []):
        if link["relation"] == "next":
            return str(link["url"])
    return None


def _walk(s: Searcher, url: str) -> list[str]:
    ids: list[str] = []
    next_url: str | None = url
    while next_url:
        b = s.bundle(next_url)
        ids += [e["resource"]["id"] for e in b.get("entry", []) if e["search"]["mode"] == "match"]
        next_url = _next(b)
    return ids


def test_paging_is_keyset_and_stable(s: Searcher) -> None:
    for i in range(12):
        s.put({"resourceType": "Patient", "id": f"p{i:02d}",
               "name": [{"family": ["x", "y", "z"][i % 3]}]})
    first = s.bundle("/Patient?_sort=family&_count=5")
    assert [link["relation"] for link in first["link"]] == ["self", "first", "next"]
    cursor = parse_qs(urlsplit(_next(first) or "").query)["_cursor"][0]
    assert "family" not in cursor  # opaque
    everything = _walk(s, "/Patient?_sort=family&_count=5")
    assert len(everything) == 12 == len(set(everything))
    assert everything == sorted(everything, key=lambda i: (["x", "y", "z"][int(i[1:]) % 3], i))
    # A write between pages neither repeats nor skips what is left.
    page1 = s.bundle("/Patient?_sort=-_lastUpdated&_count=4")
    seen = [e["resource"]["id"] for e in page1["entry"]]
    s.put({"resourceType": "Patient", "id": "newcomer"})
    rest = _walk(s, _next(page1) or "")
    assert sorted(seen + rest) == sorted(f"p{i:02d}" for i in range(12))
    assert "cursor" in s.error("/Patient?_cursor=bogus")


def test_count_and_total(care: Searcher) -> None:
    b = care.bundle("/CarePlan?_count=1")
    assert len(b["entry"]) == 1 and "total" not in b and _next(b)
    assert care.bundle("/CarePlan?_count=1&_total=accurate")["total"] == 2
    assert care.bundle("/CarePlan?_count=1&_total=estimate")["total"] == 2
    assert "total" not in care.bundle("/CarePlan?_total=none")
    assert care.bundle("/CarePlan")["total"] == 2
    b = care.bundle("/CarePlan?_summary=count")
    assert b["total"] == 2 and "entry" not in b
    assert care.bundle("/CarePlan?_count=0&_total=accurate")["total"] == 2
    care.error("/CarePlan?_count=abc")
    care.error("/CarePlan?_total=maybe")
    care.error("/CarePlan?_summary=maybe")


def test_count_zero_is_summary_count(care: Searcher) -> None:
    """search.html: _count=0 SHALL be treated as _summary=count (fhirpy's count() sends it)."""
    for url in ("/CarePlan?_count=0", "/CarePlan?_count=0&_total=none", "/?_type=CarePlan&_count=0",
                "/Patient/p/CarePlan?_count=0"):
        b = care.bundle(url)
        assert b["total"] == 2, url
        assert "entry" not in b, url
        assert [link["relation"] for link in b["link"]] == ["self"], url


def test_summary_and_elements(care: Searcher) -> None:
    b = care.bundle("/CarePlan?_id=plan&_elements=status")
    resource = b["entry"][0]["resource"]
    assert resource["status"] == "active" and "careTeam" not in resource
    b = care.bundle("/CarePlan?_id=plan&_summary=true")
    assert any(t.get("code") == "SUBSETTED" for t in b["entry"][0]["resource"]["meta"]["tag"])


def test_unknown_parameters(care: Searcher) -> None:
    b = care.bundle("/CarePlan?nonsense=1&status=active")
    assert modes(b)["match"] == {"CarePlan/plan"}
    outcome = [e for e in b["entry"] if e["search"]["mode"] == "outcome"]
    assert "nonsense" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert "nonsense" in care.error("/CarePlan?nonsense=1",
                                    headers={"Prefer": "handling=strict"})
    assert "_text" in care.error("/CarePlan?_text=x")
    assert "_content" in care.error("/CarePlan?_content=x")


def test_post_search(care: Searcher) -> None:
    r = care.client.post("/CarePlan/_search", data={"status": "active", "_count": "5"})
    assert r.status_code == 200, r.text
    check_searchset(r.json())
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {"plan"}
    r = care.client.post("/CarePlan/_search", content=b"{}",
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 415


def test_system_search(care: Searcher) -> None:
    b = care.bundle("/?_type=CarePlan,Task&_count=10")
    assert modes(b)["match"] == {"CarePlan/plan", "CarePlan/old", "Task/task"}
    b = care.bundle("/?_type=CarePlan,Task&_id=plan,task")
    assert modes(b)["match"] == {"CarePlan/plan", "Task/task"}
    pages = _walk(care, "/?_type=CarePlan,Task,Patient&_count=2")
    assert sorted(pages) == ["old", "p", "plan", "task"]
    b = care.bundle("/?_type=CarePlan&status=active")
    assert modes(b)["match"] == {"CarePlan/plan"}
    assert care.bundle("/?_type=CarePlan,Task&_summary=count")["total"] == 3
    assert care.bundle("/?_type=CarePlan,Task&_count=1&_total=accurate")["total"] == 3
    care.error("/?_type=CarePlan,Task&status=active")
    care.error("/?_type=Nothing")
    r = care.client.post("/_search", data={"_type": "Task"})
    assert r.status_code == 200 and r.json()["entry"][0]["resource"]["id"] == "task"


def test_compartment_search(care: Searcher) -> None:
    care.put({"resourceType": "Task", "id": "other", "status": "requested", "intent": "order",
              "for": {"reference": "Patient/q"}})
    assert care.idset("/Patient/p/Task") == {"task"}
    assert care.idset("/Patient/p/CarePlan?status=active") == {"plan"}
    assert care.idset("/Patient/q/CarePlan") == set()
    assert care.idset("/Patient/p/Patient") == {"p"}
    care.error("/Patient/p/Practitioner")
    # the instance history route still wins over the compartment route
    assert care.client.get("/Patient/p/_history").json()["type"] == "history"


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((str(link["url"]) for link in bundle.get("link", [])
                 if link["relation"] == relation), None)


def test_previous_links_walk_back(s: Searcher) -> None:
    for i in range(7):
        s.put({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": "abc"[i % 3]}]})
    url = "/Patient?_sort=-family&_count=2"
    pages = []
    b = s.bundle(url)
    assert _link(b, "previous") is None
    while True:
        pages.append([e["resource"]["id"] for e in b["entry"]])
        nxt = _link(b, "next")
        if not nxt:
            break
        b = s.bundle(nxt)
    assert len(pages) == 4
    back = []
    while True:
        prev = _link(b, "previous")
        if not prev:
            break
        b = s.bundle(prev)
        back.append([e["resource"]["id"] for e in b["entry"]])
    assert back == pages[-2::-1]
    assert s.client.get("/Patient?_cursor=" + "x" * 20).status_code == 400
