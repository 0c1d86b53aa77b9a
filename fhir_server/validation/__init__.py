"""Resource validation: R4 structure, required bindings, and the profiles in profiles/.

`Validator.validate(resource)` returns a `ValidationResult`; `raise_for_errors()` turns it
into StructureInvalid (400) or InvalidResource (422). `structure` answers the HTTP layer's
questions for `_summary` / `_elements` from the same generated tables.
"""

from fhir_server.validation import structure
from fhir_server.validation.result import ValidationResult
from fhir_server.validation.validator import Validator

__all__ = ["ValidationResult", "Validator", "structure"]
