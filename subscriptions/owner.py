"""Who owns a Subscription, and the request context a notification is released under.

The creating request's principal (client, fhirUser, patient in context, scopes, purpose of
use) is stored beside the Subscription when it is created. Every notification is then run
through the same read pipeline as a read by that principal, at delivery time, so SMART scopes
and the patient's Consent decide what it may carry *now*, not what they allowed at creation.
The server's own Subscriptions are owned by SYSTEM, dev mode's by AUTH_DISABLED (refused once
auth is on). A Subscription without a recorded owner delivers nothing (`owner_context` is
None): a lost owner must not open the record. The owner's own later updates record their
token as the new grant (`subscriptions.grant`: an expired or revoked one decides nothing).
"""

from __future__ import annotations

from typing import Any

from fhir_server.auth.scopes import parse_scopes
from fhir_server.context import AUTH_DISABLED, SYSTEM, Principal, RequestContext
from subscriptions.grant import grant_fields

Doc = dict[str, Any]


def principal_doc(principal: Principal | None, purpose: tuple[str, ...] = (), *,
                  registered: bool = False) -> Doc | None:
    """The owner as recorded. `registered`: a backend service whose grant is its client
    registration (`subscriptions.grant`), not the token's lifetime."""
    if principal is None:
        return None
    return {
        **({"grant": "client"} if registered else {}),
        "client": principal.client_id,
        "user": principal.fhir_user,
        "patient": principal.patient,
        "encounter": principal.encounter,
        "scopes": sorted(principal.scopes),
        "issuer": principal.issuer,
        "purpose": list(purpose),
        "key": owner_key(principal),
        "kind": principal.kind,
        **grant_fields(principal),
    }


def principal_of(doc: Doc | None) -> Principal | None:
    if not doc:
        return None
    kind = doc.get("kind", "token")
    if kind == "system":
        return SYSTEM
    if kind == "auth-disabled":
        return AUTH_DISABLED
    return Principal(
        client_id=doc.get("client"),
        fhir_user=doc.get("user"),
        patient=doc.get("patient"),
        encounter=doc.get("encounter"),
        scopes=frozenset(doc.get("scopes") or ()),
        issuer=doc.get("issuer"),
    )


def owner_key(principal: Principal) -> str:
    """The same app acting for the same user: the owner of what it created."""
    return f"{principal.client_id or ''}|{principal.fhir_user or ''}"


def has_system_access(principal: Principal, resource_type: str = "Subscription") -> bool:
    """A `system/` scope on the type: the administrator of every Subscription."""
    return any(s.context == "system" and s.covers_type(resource_type)
               for s in parse_scopes(principal.scopes))


def owner_context(base_url: str, owner: Doc | None, resource_type: str,
                  resource_id: str) -> RequestContext | None:
    """A read of one resource by the owner, as the read pipeline sees it; None without an
    owner (nothing may be delivered then)."""
    principal = principal_of(owner)
    if owner is None or principal is None:
        return None
    context = RequestContext(base_url=base_url, interaction="vread", resource_type=resource_type,
                             resource_id=resource_id, method="GET", principal=principal)
    context.purpose_of_use = tuple(owner.get("purpose") or ())
    context.attributes["subscription_delivery"] = True
    return context
