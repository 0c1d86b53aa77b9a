"""The outcome of validating one resource, and how it maps to an HTTP error."""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.errors import InvalidResource, Issue, StructureInvalid


@dataclass
class ValidationResult:
    issues: list[Issue] = field(default_factory=list)
    # Any error that makes the content an invalid R4 structure (schema, cardinality, empty
    # or null values): HTTP 400. Other errors (required bindings, profiles, invariants): 422.
    structural: bool = False

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.is_error]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if not i.is_error]

    @property
    def valid(self) -> bool:
        return not any(i.is_error for i in self.issues)

    def raise_for_errors(self) -> None:
        """Raises StructureInvalid (400) or InvalidResource (422) carrying every issue."""
        errors = self.errors
        if not errors:
            return
        count = f"{len(errors)} error{'s' if len(errors) > 1 else ''}"
        if self.structural:
            raise StructureInvalid(f"The resource is not valid R4 ({count}): "
                                   f"{errors[0].diagnostics}", issues=list(self.issues))
        raise InvalidResource(f"The resource breaks a terminology or profile rule ({count}): "
                              f"{errors[0].diagnostics}", issues=list(self.issues))
