"""Purpose of use: granted by the access token, narrowed (never widened) by the request.

The authorization server grants purposes in the token, in either form:
- a `purpose_of_use` claim: v3-ActReason codes (`TREAT`, `BTG`, or `system|code`), a list or a
  space-separated string;
- a scope `purpose_of_use/<code>` (or `purpose_of_use/<system>|<code>`), for authorization
  servers that can only issue scopes.
Break-the-glass (`BTG`) is in force when the token grants it (claim or scope) and the
header does not narrow it away, or when the header asks for it and the token holds a scope
covering one of the Consent settings' break-the-glass scopes.

The `X-Purpose-Of-Use` header may name some of the granted purposes: then only those are in
force. A purpose the token does not grant is refused (403), so a client cannot talk its way
past a Consent's purpose condition.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.context import Principal
from fhir_server.errors import Forbidden

PURPOSE_SCOPE = "purpose_of_use/"
BREAK_THE_GLASS = "BTG"
# Where the HTTP layer leaves the X-Purpose-Of-Use values it was sent (context.attributes).
REQUESTED_PURPOSE = "requested_purpose_of_use"


def _code(value: str) -> tuple[str, str]:
    system, bar, code = value.strip().rpartition("|")
    return (system if bar else "", code)


def _covered(wanted: str, granted: Iterable[str]) -> bool:
    system, code = _code(wanted)
    return any(code == c and (not system or not s or system == s) for s, c in map(_code, granted))


def granted_purposes(principal: Principal) -> tuple[str, ...]:
    """The purposes the token itself grants: its claim and its `purpose_of_use/` scopes."""
    from_scopes = tuple(s[len(PURPOSE_SCOPE):] for s in sorted(principal.scopes)
                        if s.startswith(PURPOSE_SCOPE) and len(s) > len(PURPOSE_SCOPE))
    return tuple(dict.fromkeys(principal.purpose_of_use + from_scopes))


def purpose_in_force(principal: Principal, requested: tuple[str, ...], may_break_the_glass: bool) -> tuple[str, ...]:
    """The purpose of use of a request: the token's, or the part of it the request names."""
    granted = granted_purposes(principal)
    if not requested:
        return granted
    allowed = granted + ((BREAK_THE_GLASS,) if may_break_the_glass else ())
    refused = [p for p in requested if not _covered(p, allowed)]
    if refused:
        raise Forbidden("X-Purpose-Of-Use may only narrow the purpose of use the access token "
                        f"grants; not granted: {', '.join(refused)[:200]}", code="forbidden")
    return tuple(dict.fromkeys(requested))
