"""The request context: who is asking, for what, and how they want the answer.

Built by the HTTP layer for every request and handed down to the repository and to every
interceptor. SMART fills in the principal; Consent reads it; audit records it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Principal:
    """The authenticated party. `None` fields mean "not in this token"."""

    client_id: str | None = None
    fhir_user: str | None = None  # e.g. "Practitioner/123"
    patient: str | None = None  # patient id in context (SMART launch context)
    encounter: str | None = None
    scopes: frozenset[str] = frozenset()
    token_id: str | None = None  # jti, for audit
    issuer: str | None = None
    # Purpose of use the token asserts (v3-ActReason codes, e.g. TREAT, BTG; "system|code"
    # when qualified): a `purpose_of_use` claim. Consent reads it beside the request header's.
    purpose_of_use: tuple[str, ...] = ()


@dataclass
class RequestContext:
    base_url: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    interaction: str = ""  # FHIR interaction code: read, vread, update, create, search-type, ...
    resource_type: str | None = None
    resource_id: str | None = None
    method: str = "GET"
    url: str = ""
    principal: Principal | None = None
    # Purpose of use (v3-ActReason codes, e.g. TREAT, BTG), from the token or a header.
    purpose_of_use: tuple[str, ...] = ()
    # Prefer: handling=strict|lenient (search) and return=minimal|representation|OperationOutcome.
    prefer_handling: str = "lenient"
    prefer_return: str = "representation"
    remote_addr: str | None = None
    # Free space for interceptors to pass state between their own hooks.
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def system(cls, base_url: str, interaction: str = "system") -> RequestContext:
        """A context for the server's own work (loading, workflows): no SMART principal."""
        return cls(base_url=base_url, interaction=interaction)
