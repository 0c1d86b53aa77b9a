"""The patient compartments of a resource as the write pipeline will store them.

Computed with the search layer's own code (the compartment definition's parameters, extracted
as at write time, then `SearchEngine.compartments`), so a write is judged by exactly the
`compartments.Patient` field its reads will be judged by. Only the compartment parameters
are extracted: cheaper than the full index.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search import SearchEngine


def patient_compartments(search: SearchEngine, resource_type: str, resource: dict[str, Any]) -> list[str]:
    """Ids of the Patients whose compartment `resource` (a new version) belongs to."""
    codes = search.compartment_param("Patient", resource_type)
    params = [p for p in (search.registry.get(resource_type, c) for c in codes) if p is not None]
    sp = search.extractor.extract(params, resource)
    found: list[str] = search.compartments(resource_type, resource, sp).get("Patient", [])
    return found
