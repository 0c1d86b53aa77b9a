"""Effects committed together: one transaction Bundle through the one write pipeline.

Some effects must happen at once or not at all (a hand-off's transfer: the focus Task's new
owner and the hand-off completed). `commit_together` writes them as a FHIR transaction, as
the engine (SYSTEM, with its Automation: Provenance and AuditEvent per entry), where

- a created resource carries its effect identifier and is a conditional create
  (`ifNoneExist` on it), so a second run for the same trigger creates nothing again;
- an updated resource is conditional on the version the workflow decided from (`ifMatch`),
  so a second run, or a change made meanwhile, fails the whole transaction with 412
  (`Stale`): the workflow reads again and decides again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from fhir_server.batch.entries import parse_entries
from fhir_server.batch.transaction import Transaction
from fhir_server.errors import PreconditionFailed
from workflows.effects import Effects, effect_identifier

Doc = dict[str, Any]
MAX_ENTRIES = 100


@dataclass(frozen=True)
class Create:
    resource: Doc
    name: str  # the effect's stable name for this trigger


@dataclass(frozen=True)
class Update:
    resource: Doc  # with its id
    version: str  # the versionId the workflow decided from


class Stale(Exception):
    """An update's version is no longer current: read again, decide again."""


def _entry(effects: Effects, write: Create | Update) -> Doc:
    resource = copy.deepcopy(write.resource)
    rtype = resource["resourceType"]
    if isinstance(write, Update):
        resource.pop("meta", None)
        return {"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{resource['id']}",
                                                   "ifMatch": f'W/"{write.version}"'}}
    identifier = effect_identifier(effects.workflow, effects.trigger, write.name)
    resource["identifier"] = [*resource.get("identifier", []), identifier]
    return {"resource": resource, "request": {
        "method": "POST", "url": rtype,
        "ifNoneExist": f"identifier={identifier['system']}|{identifier['value']}"}}


async def commit_together(effects: Effects, writes: list[Create | Update]) -> list[Doc]:
    """Commits `writes` in one transaction; answers the transaction-response entries. Raises
    Stale when an update's version has moved on (nothing is written then)."""
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [_entry(effects, w) for w in writes]}
    entries = parse_entries(bundle, effects.base_url, MAX_ENTRIES)
    try:
        return await Transaction(effects.repository, effects.context("transaction"), entries).run(None)
    except PreconditionFailed as error:
        raise Stale(error.diagnostics) from None
