"""Patient Consent (R4, scope patient-privacy) enforced on every path data leaves by.

`model` reads Consent resources into rule trees, `region` compiles a tree for one requester
and one resource type into the MongoDB filter of what it denies, `requester` resolves who
is asking (fhirUser, roles, organizations, care teams), and `engine` ties them together per
request. The request's access decision (fhir_server.access, at interceptors/access.py) asks it.
See docs/consent.md.
"""

from fhir_server.consent.engine import ConsentEngine, Decision, consent_indexes, decisions, evaluated_consents
from fhir_server.consent.settings import ConsentSettings

__all__ = ["ConsentEngine", "ConsentSettings", "Decision", "consent_indexes", "decisions", "evaluated_consents"]
