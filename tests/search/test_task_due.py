"""`due` on Task (profiles/SearchParameter-task-due.json): the end of the restriction period,
the date the coordinator dashboard's worklists filter ("Overdue") and sort by."""

from __future__ import annotations

import httpx


def _task(tid: str, due: str | None) -> dict[str, object]:
    task: dict[str, object] = {"resourceType": "Task", "id": tid, "status": "requested", "intent": "order"}
    if due:
        task["restriction"] = {"period": {"start": "2026-01-01T00:00:00Z", "end": due}}
    return task


def _ids(client: httpx.Client, query: str) -> list[str]:
    r = client.get(query)
    assert r.status_code == 200, r.text
    return [e["resource"]["id"] for e in r.json().get("entry", [])]


def test_due_filters_and_sorts_by_the_restriction_periods_end(client: httpx.Client) -> None:
    for tid, due in (("late", "2026-11-29T10:00:00Z"), ("soon", "2026-12-06T10:00:00Z"),
                     ("later", "2027-01-15T10:00:00Z"), ("undated", None)):
        assert client.put(f"/Task/{tid}", json=_task(tid, due)).status_code == 201
    assert _ids(client, "/Task?due=lt2026-12-01T12:00:00Z") == ["late"]
    assert sorted(_ids(client, "/Task?due=ge2026-12-01")) == ["later", "soon"]
    # The period's start is not the due date.
    assert _ids(client, "/Task?due=2026-01-01") == []
    assert [i for i in _ids(client, "/Task?_sort=due") if i != "undated"] == ["late", "soon", "later"]
    assert [i for i in _ids(client, "/Task?_sort=-due") if i != "undated"] == ["later", "soon", "late"]
    # A later change of the due date moves the Task out of "overdue".
    assert client.put("/Task/late", json=_task("late", "2027-02-01T00:00:00Z")).status_code == 200
    assert _ids(client, "/Task?due=lt2026-12-01T12:00:00Z") == []
    bad = client.get("/Task?due=not-a-date")
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
