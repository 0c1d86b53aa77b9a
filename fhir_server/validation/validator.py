"""The validator every write goes through, and `$validate` answers with."""

from __future__ import annotations

import pathlib
from typing import Any

from fhir_server.errors import Issue
from fhir_server.validation import structure
from fhir_server.validation.compiled import Compiled, compile_definitions
from fhir_server.validation.profiles import ProfileSet
from fhir_server.validation.result import ValidationResult
from fhir_server.validation.walker import STRUCTURAL_CODES, Walker


class Validator:
    """Checks resources against R4 and the profiles in `profiles_dir`; thread-safe once built.

    Loading compiles the generated tables (about 50 ms) and the profiles; a profile or value
    set that is itself not valid R4 stops start-up with a ValueError naming the file.
    """

    def __init__(self, profiles_dir: pathlib.Path) -> None:
        self.compiled: Compiled = compile_definitions(structure.schema(), structure.tables())
        self.profiles = ProfileSet(self.compiled.value_sets)
        self.profiles.load(profiles_dir)
        for file, definition in self.profiles.resources:
            errors = [i for i in self._walk(definition, None) if i.is_error]
            if errors:
                raise ValueError(f"{file}: not a valid {definition.get('resourceType')}: "
                                 f"{'; '.join(i.diagnostics for i in errors[:5])}")

    def _walk(self, resource: Any, resource_type: str | None) -> list[Issue]:
        walker = Walker(self.compiled)
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        root: str = resource_type or "Resource"
        if isinstance(rtype, str) and rtype in self.compiled.resources:
            root = rtype
        if resource_type is not None and rtype != resource_type:
            walker.error("invalid", f"resourceType must be '{resource_type}'", root)
        walker.resource(resource, root, 0)
        return walker.issues

    def validate(self, resource: dict[str, Any], *,
                 resource_type: str | None = None) -> ValidationResult:
        """All issues of `resource`; `resource_type` is the type the request expects."""
        issues = self._walk(resource, resource_type)
        structural = any(i.is_error and i.code in STRUCTURAL_CODES for i in issues)
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            root = resource["resourceType"]
            issues += self.profiles.check(resource, root)
            contained = resource.get("contained")
            if isinstance(contained, list):
                for index, item in enumerate(contained):
                    if isinstance(item, dict):
                        issues += self.profiles.check(item, f"{root}.contained[{index}]")
        return ValidationResult(issues, structural)
