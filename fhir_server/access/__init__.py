"""The access decision: who may see, search and change what (SMART scopes and Consent).

One `AccessDecision` per request (`AccessPolicy.decision`), failing closed: a context without
a principal is refused, never unrestricted. See docs/consent.md and docs/smart.md.
"""

from fhir_server.access.decision import AccessDecision, AccessPolicy, NoPrincipal
from fhir_server.access.purpose import PURPOSE_SCOPE, purpose_in_force

__all__ = ["PURPOSE_SCOPE", "AccessDecision", "AccessPolicy", "NoPrincipal", "purpose_in_force"]
