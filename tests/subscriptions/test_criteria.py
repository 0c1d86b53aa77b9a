"""R4 criteria: what a Subscription is notified of equals what the same search returns.

One data set, many criteria (tokens, references, strings with folding, dates with prefixes,
:not, :missing, :exact, :contains, OR lists, a chain that needs the database), each delivered
over rest-hook with the resource as payload, then compared with `GET [type]?criteria`. The
in-memory evaluator is also compared, document by document, with the database's own answer.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import parse_qsl

import httpx
from pymongo import MongoClient

from fhir_server.search import SearchEngine
from subscriptions.filters import matches
from tests.conftest import RunningServer
from tests.subscriptions.builders import TASK_CODES, task
from tests.subscriptions.conftest import create, create_active, r4_subscription, unique
from tests.subscriptions.receiver import Receiver

Doc = dict[str, Any]


def _patients(u: str) -> list[Doc]:
    names = [("Smith", "female", "1975-04-02"), ("Smyth", "male", "1990-01-01"),
             ("Jones", "female", "1982-12-31"), ("Müller", "other", "1979-06")]
    return [{"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": u}],
             "name": [{"family": family, "given": ["Ann"]}], "gender": gender, "birthDate": born}
            for family, gender, born in names]


def _tasks(u: str, patients: list[str]) -> list[Doc]:
    statuses = ["requested", "accepted", "completed", "draft"]
    owners = [f"Practitioner/{u}a", f"Practitioner/{u}b", None]
    dates = ["2026-02-15", "2026-03-10T10:00:00Z", "2026-07-01T08:30:00+02:00", None]
    out: list[Doc] = []
    combos = itertools.product(statuses, owners, dates)
    for i, (status, owner, date) in enumerate(combos):
        if i % 2:  # half of the combinations is plenty
            continue
        task: Doc = {"resourceType": "Task", "status": status,
                     "intent": ["order", "plan", "proposal"][i % 3],
                     "identifier": [{"system": "urn:test", "value": u}],
                     "for": {"reference": patients[i % len(patients)]}}
        if owner:
            task["owner"] = {"reference": owner}
        if date:
            task["authoredOn"] = date
        if i % 4 == 0:
            task["priority"] = "urgent"
        if i % 3 != 2:
            task["code"] = {"coding": [{"system": TASK_CODES, "code": ["fulfill", "approve"][i % 3]}]}
        out.append(task)
    return out


def _criteria(u: str) -> list[str]:
    t = f"identifier=urn:test|{u}"
    p = f"identifier=urn:test|{u}"
    return [
        f"Task?{t}",
        f"Task?{t}&status=requested",
        f"Task?{t}&status:not=requested",
        f"Task?{t}&status=requested,accepted",
        f"Task?{t}&owner=Practitioner/{u}a",
        f"Task?{t}&owner=Practitioner/{u}a,Practitioner/{u}b&status=draft",
        f"Task?{t}&owner:missing=true",
        f"Task?{t}&owner:missing=false&priority=urgent",
        f"Task?{t}&code={TASK_CODES}|fulfill",
        f"Task?{t}&code=approve",
        f"Task?{t}&authored-on=ge2026-03-10",
        f"Task?{t}&authored-on=lt2026-03",
        f"Task?{t}&authored-on=2026-03",
        f"Task?{t}&authored-on=sa2026-03-01&authored-on=le2026-07-31",
        f"Task?{t}&intent=order,proposal&_lastUpdated=gt2020-01-01",
        f"Task?{t}&patient.name=smith",  # a chain: matched through the database
        f"Patient?{p}&name=sm",
        f"Patient?{p}&name=muller",
        f"Patient?{p}&family:exact=Müller",
        f"Patient?{p}&family:contains=yt",
        f"Patient?{p}&birthdate=lt1980",
        f"Patient?{p}&gender=female&birthdate=ge1980",
    ]


def _search_ids(api: httpx.Client, criteria: str) -> set[str]:
    rtype, _, query = criteria.partition("?")
    bundle = api.get(f"/{rtype}", params=[*parse_qsl(query), ("_count", "1000")]).json()
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"}


def test_criteria_match_search_results(api: httpx.Client, receiver: Receiver, subs_server: RunningServer,
                                       mongo: MongoClient[Doc]) -> None:
    u = unique()
    criteria = _criteria(u)
    subs = {i: create_active(api, r4_subscription(c, f"{receiver.url}/{i}")) for i, c in enumerate(criteria)}
    patients = [create(api, p) for p in _patients(u)]
    tasks = [create(api, t) for t in _tasks(u, [f"Patient/{p['id']}" for p in patients])]
    # Subscription 0 is every Task of the set: when the last one arrives, everything was matched.
    receiver.wait_for(lambda rs: any(r.path == "/hook/0" and r.body and r.json["id"] == tasks[-1]["id"] for r in rs))
    checked_partial = 0
    for i, c in enumerate(criteria):
        expected = _search_ids(api, c)
        status = api.get(f"/Subscription/{subs[i]}/$status").json()["entry"][0]["resource"]
        matched = int(next(p["valueString"] for p in status["parameter"] if p["name"] == "events-since-subscription-start"))
        path = f"/hook/{i}"
        received = receiver.wait_for(lambda rs, path=path, n=matched: len([r for r in rs if r.path == path and r.body]) >= n)
        got = [r.json["id"] for r in received if r.path == path and r.body]
        assert len(got) == matched == len(set(got)), c
        assert set(got) == expected, c
        total = len(tasks) if c.startswith("Task") else len(patients)
        checked_partial += 0 < len(expected) < total
    assert checked_partial >= len(criteria) - 2  # the criteria really discriminate

    # The evaluator alone, over every current document, against the database's answer.
    engine = SearchEngine(subs_server.settings)
    db = mongo[subs_server.settings.database]
    for c in criteria:
        rtype, _, query = c.partition("?")
        parsed = engine.parse(rtype, parse_qsl(query), strict=True)
        if parsed.joins:
            continue
        docs = list(db[rtype].find({"sp.identifier|": f"urn:test|{u}"}))
        from_db = {d["_id"] for d in db[rtype].find(parsed.filter)}
        assert {d["_id"] for d in docs if matches(parsed.filter, d)} == from_db & {d["_id"] for d in docs}, c


def test_delete_notifies_when_the_removed_version_matched(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    create_active(api, r4_subscription(f"Task?owner=Practitioner/{u}", receiver.url))
    t = create(api, task(u))
    assert api.delete(f"/Task/{t['id']}").status_code == 200
    other = create(api, task(u, owner=f"Practitioner/{u}x"))
    assert api.delete(f"/Task/{other['id']}").status_code == 200
    sentinel = create(api, task(u))
    received = receiver.wait_for(lambda rs: any(r.body and r.json["id"] == sentinel["id"] for r in rs))
    # handshake (R4: an empty POST), the create, the delete (no body: nothing to send), the sentinel
    assert [r.json["id"] if r.body else "" for r in received] == ["", t["id"], "", sentinel["id"]]
