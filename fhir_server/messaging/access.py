"""Who may see a thread and its messages: its participants (CareTeam membership expanded when
the thread was written), within their scopes and the patient's Consent.

This is a rule of the read pipeline beside the access decision (`fhir_server.access`): the
FILTER_QUERY hook adds `check` to every query of Communications (search, `_include`,
`_revinclude`, chains, history, `$everything`, conditional matching, delivery of
notifications as the Subscription's owner), and CAN_SEE asks `may_see` of every
Communication that leaves. Scopes and Consent are still decided by the access decision; this
only narrows. A `system/` client (a consuming system acting for its users) and the server's
own work see every thread their scopes allow.
"""

from __future__ import annotations

from typing import Any

from fhir_server.auth.scopes import parse_scopes
from fhir_server.context import Principal
from fhir_server.messaging.threads import MESSAGE, TAG_SYSTEM, THREAD, caller_identities, kind_of, participants
from fhir_server.storage import schema

Doc = dict[str, Any]
_MARKS = frozenset({f"{TAG_SYSTEM}|{THREAD}", f"{TAG_SYSTEM}|{MESSAGE}"})


def is_system_client(principal: Principal, resource_type: str = "Communication") -> bool:
    return any(s.context == "system" and s.covers_type(resource_type) for s in parse_scopes(principal.scopes))


def restricted(principal: Principal | None) -> frozenset[str] | None:
    """The identities a caller must be among a thread's participants as, or None when
    participation does not narrow what the caller sees (the server, dev mode, a system)."""
    if principal is None or principal.kind != "token" or is_system_client(principal):
        return None
    return caller_identities(principal)


def _values(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def document_allowed(doc: Doc, identities: frozenset[str]) -> bool:
    """One stored Communication (its index values): not part of a thread, or the caller
    takes part in it."""
    index = schema.index_of(doc)
    if not _MARKS & set(_values(index.get("_tag|"))):
        return True
    return bool(identities & set(_values(index.get("participant"))))


def may_see(resource: Doc, identities: frozenset[str]) -> bool:
    if kind_of(resource) not in (THREAD, MESSAGE):
        return True
    return bool(identities & set(participants(resource)))
