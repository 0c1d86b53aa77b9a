"""The request context: who is asking, for what, and how they want the answer.

Built by the HTTP layer for every request and handed down to the repository and to every
interceptor. SMART fills in the principal; Consent reads it; audit records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fhir_server import requestid

# Who a principal is: a bearer of an access token, the server itself (SYSTEM), or anyone while
# auth is switched off (AUTH_DISABLED, dev mode). Never None: a missing principal is a bug.
PrincipalKind = Literal["token", "system", "auth-disabled"]


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
    kind: PrincipalKind = "token"
    # When the token stops being valid (its `exp`, epoch seconds): what the server keeps of
    # a verified token (messaging's recorded grants) lapses with it.
    expires_at: int | None = None

    @property
    def is_server(self) -> bool:
        """The server's own work (SYSTEM): not a client, not governed by scopes or Consent."""
        return self.kind == "system"


# The server's own work: loading, subscription matching, workflows. Only code inside the
# server builds contexts with it (RequestContext.system); no token can produce it.
SYSTEM = Principal(client_id="fhir-server", kind="system")
# Every request while auth is disabled (dev mode): unrestricted because nothing is enforced,
# and refused by the access decision if it ever reaches a server with auth on.
AUTH_DISABLED = Principal(client_id="auth-disabled", kind="auth-disabled")


@dataclass(frozen=True)
class Automation:
    """The server's own work on behalf of a workflow: which Device acts (a reference, or None
    while Device is not a stored type) and which resource version triggered it. Provenance
    names the Device as its agent and the trigger as its source entity."""

    workflow: str
    trigger: str | None  # "Type/id/_history/v" of the triggering version
    device: str | None = None  # "Device/id"


@dataclass
class RequestContext:
    base_url: str
    # The HTTP request's id (X-Request-Id, in its logs and AuditEvent); a new one elsewhere.
    request_id: str = field(default_factory=requestid.new_id)
    interaction: str = ""  # FHIR interaction code: read, vread, update, create, search-type, ...
    resource_type: str | None = None
    resource_id: str | None = None
    method: str = "GET"
    url: str = ""
    # None only until INCOMING_REQUEST has run: with auth on, the access decision refuses a
    # context that still has none (fhir_server.access), it never means "unrestricted".
    principal: Principal | None = None
    # The purpose of use in force (v3-ActReason codes, e.g. TREAT, BTG): granted by the token,
    # possibly narrowed by the X-Purpose-Of-Use header (fhir_server.access.purpose).
    purpose_of_use: tuple[str, ...] = ()
    # Prefer: handling=strict|lenient (search) and return=minimal|representation|OperationOutcome.
    prefer_handling: str = "lenient"
    prefer_return: str = "representation"
    remote_addr: str | None = None
    # Set only on SYSTEM contexts of the workflow engine (workflows.effects).
    automation: Automation | None = None
    # Free space for interceptors to pass state between their own hooks.
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def system(cls, base_url: str, interaction: str = "system",
               automation: Automation | None = None) -> RequestContext:
        """A context for the server's own work (loading, workflows): the SYSTEM principal."""
        return cls(base_url=base_url, interaction=interaction, principal=SYSTEM, automation=automation)

    @property
    def caller(self) -> Principal | None:
        """The authenticated client, or None for the server's own work and for dev mode
        (for the audit trail and Provenance: who to name as the agent)."""
        principal = self.principal
        return principal if principal is not None and principal.kind == "token" else None
