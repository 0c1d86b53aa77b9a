"""Who owns a Subscription, and the request context a notification is released under.

The creating request's principal (client, fhirUser, patient in context, scopes, purpose of
use) is stored beside the Subscription when it is created. Every notification is then run
through the same read pipeline as a read by that principal, at delivery time, so SMART scopes
and the patient's Consent decide what it may carry *now*, not what they allowed at creation.
"""

from __future__ import annotations

from typing import Any

from fhir_server.auth.scopes import parse_scopes
from fhir_server.context import Principal, RequestContext

Doc = dict[str, Any]


def principal_doc(principal: Principal | None, purpose: tuple[str, ...] = ()) -> Doc | None:
    if principal is None:
        return None
    return {
        "client": principal.client_id,
        "user": principal.fhir_user,
        "patient": principal.patient,
        "encounter": principal.encounter,
        "scopes": sorted(principal.scopes),
        "issuer": principal.issuer,
        "purpose": list(purpose),
        "key": owner_key(principal),
    }


def principal_of(doc: Doc | None) -> Principal | None:
    if not doc:
        return None
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


def owner_context(base_url: str, owner: Doc | None, resource_type: str, resource_id: str) -> RequestContext:
    """A read of one resource by the owner, as the read pipeline sees it."""
    context = RequestContext(base_url=base_url, interaction="vread", resource_type=resource_type,
                             resource_id=resource_id, method="GET")
    context.principal = principal_of(owner)
    if owner:
        context.purpose_of_use = tuple(owner.get("purpose") or ())
    context.attributes["subscription_delivery"] = True
    return context
