"""Whose data is a resource: the patients whose compartment holds it.

The same answer as the `compartments` the repository stores (search layer, Patient
CompartmentDefinition), computed from the resource alone by evaluating only the parameters
that define the compartment: a few microseconds, so the audit can name the patients of every
resource that leaves without another query.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search import SearchEngine


class PatientFinder:
    def __init__(self, search: SearchEngine) -> None:
        self.search = search
        codes = search.registry.compartments.get("Patient", {})
        self._params = {
            rtype: [p for p in (search.registry.get(rtype, c) for c in params) if p is not None]
            for rtype, params in codes.items()
        }

    def __call__(self, resource_type: str, resource: dict[str, Any]) -> list[str]:
        params = self._params.get(resource_type, [])
        if not params and resource_type != "Patient":
            return []
        sp = self.search.extractor.extract(params, resource)
        found: list[str] = self.search.compartments(resource_type, resource, sp).get("Patient", [])
        return found
