"""Small helpers shared by the HTTP tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx

# How many times longer than its stated bound a test waits for what must happen (a delivery,
# a timer, a page element) before it fails. A bound, not a speed claim: a test that passes
# returns as soon as the thing happens; on a loaded 2-core machine, with the suite's processes
# side by side, things take a few times longer than on a quiet one.
PATIENCE = float(os.environ.get("TEST_PATIENCE", "3"))


def count(client: httpx.Client, resource_type: str, **params: Any) -> int:
    """How many resources of a type match: FHIR's own `_summary=count` search."""
    r = client.get(f"/{resource_type}", params={**params, "_summary": "count", "_total": "accurate"})
    assert r.status_code == 200, r.text
    total: int = r.json()["total"]
    return total


def wipe(db: Any, keep: Callable[[str], bool] = lambda name: False) -> None:
    """Empties every collection of `db` but those `keep` names, each in a transaction.

    Not a bare `delete_many`: SecantusDB 0.7 retries a write outside a transaction on every
    write conflict while it holds the collection's lock, so a wipe that meets a test server's
    open transaction on the same collection (a Subscription's status being set, say) waits for
    it forever while the transaction waits for the lock. Inside a transaction the conflict
    is raised at once and the driver's `with_transaction` retries after it.
    """
    with db.client.start_session() as session:
        for name in db.list_collection_names():
            if not keep(name):
                session.with_transaction(lambda s, name=name: db[name].delete_many({}, session=s))
