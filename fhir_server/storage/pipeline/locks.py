"""Conditional criteria in canonical form, and the lock document that serializes the writes
that resolve them.

Two clients writing conditionally with the same criteria at once (conditional create, or a
conditional update that finds no match and creates) would both see "no match" and both
create. So each upserts the lock document of its criteria first, inside its transaction: the
second conflicts, is retried, and then sees the first one's resource. The key is the
criteria's canonical form, so that spellings of the same search share one lock:
`identifier=s|v`, `identifier=s%7Cv` (decoded by the URL parser already), the same
parameter twice, the OR values in another order, and result parameters (`_count`, `_sort`,
`_summary`, ... which change how a result is shown, not what matches) are one criteria.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.storage.database import CONDITIONAL_LOCKS, Doc

Criteria = list[tuple[str, str]]

# Result parameters (search.html#return): they shape the Bundle, never the set of matches.
RESULT_PARAMETERS = frozenset({
    "_count", "_sort", "_total", "_summary", "_elements", "_contained", "_containedType",
    "_include", "_revinclude", "_format", "_pretty",
})
# A comma that is not escaped with a backslash separates the OR values of one parameter.
_OR = re.compile(r"(?<!\\),")


def _result_parameter(name: str) -> bool:
    return name.partition(":")[0] in RESULT_PARAMETERS


def _value(value: str) -> str:
    # A value still percent-encoded (encoded twice by a client) is taken as its decoded form.
    # Where that joins two criteria that differ, they only share a lock: serialized, never
    # wrong. Criteria that mean the same under two locks would be the bug.
    decoded = unquote(value) if "%" in value else value
    alternatives = sorted({part.strip() for part in _OR.split(decoded)})
    return ",".join(alternatives)


def canonical(criteria: Criteria) -> Criteria:
    """The criteria that decide what matches, each parameter once, in one order."""
    kept = {(name.strip(), _value(value)) for name, value in criteria if not _result_parameter(name.strip())}
    return sorted(kept)


def lock_id(resource_type: str, criteria: Criteria) -> str:
    text = resource_type + "?" + "&".join(f"{name}={value}" for name, value in canonical(criteria))
    return hashlib.sha256(text.encode()).hexdigest()


async def hold(db: AsyncDatabase[Doc], session: AsyncClientSession, resource_type: str,
               criteria: Criteria) -> None:
    """Takes the lock of `criteria` for the rest of `session`'s transaction, before the
    criteria are matched. Snapshot isolation does the rest: a holder that committed before
    this transaction's snapshot is seen (its resource matches), one that committed after it
    makes this upsert a write conflict, and the transaction is run again."""
    await db[CONDITIONAL_LOCKS].update_one(
        {"_id": lock_id(resource_type, criteria)}, {"$inc": {"n": 1}}, upsert=True, session=session)
