"""The search engine's entry points (see package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import ASCENDING, IndexModel

from fhir_server.config import Settings
from fhir_server.errors import BadRequest, Issue
from fhir_server.resource_types import STORED_TYPES

Doc = dict[str, Any]

# Parameters that shape the result rather than select resources.
RESULT_PARAMETERS = frozenset(
    {"_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
     "_format", "_pretty", "_contained", "_containedType"}
)


@dataclass
class SearchQuery:
    resource_type: str
    filter: Doc = field(default_factory=dict)
    # MongoDB sort keys; the repository appends _id as the tie-breaker for stable paging.
    sort: list[tuple[str, int]] = field(default_factory=lambda: [("ts", -1)])
    count: int = 50
    cursor: str | None = None
    total: str = "accurate"  # none | estimate | accurate
    summary: str | None = None
    elements: tuple[str, ...] = ()
    warnings: list[Issue] = field(default_factory=list)
    # The parameters that took part, normalized, for the Bundle's self link.
    used: list[tuple[str, str]] = field(default_factory=list)


def _split_token(value: str) -> tuple[str | None, str]:
    if "|" in value:
        system, code = value.split("|", 1)
        return system, code
    return None, value


class SearchEngine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def capability_params(self) -> dict[str, list[dict[str, Any]]]:
        """Per type, the CapabilityStatement.rest.resource.searchParam entries."""
        common = [
            {"name": "_id", "type": "token",
             "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
            {"name": "identifier", "type": "token"},
        ]
        return {rtype: common for rtype in STORED_TYPES}

    def index_models(self) -> dict[str, list[IndexModel]]:
        return {
            rtype: [IndexModel([("sp.identifier.s", ASCENDING), ("sp.identifier.c", ASCENDING)],
                               name="sp_identifier")]
            for rtype in STORED_TYPES
        }

    def index_fields(self, resource_type: str, resource: dict[str, Any]) -> Doc:
        identifiers = resource.get("identifier")
        if isinstance(identifiers, dict):
            identifiers = [identifiers]
        tokens = [
            {"s": i.get("system"), "c": i.get("value")}
            for i in identifiers or []
            if isinstance(i, dict) and i.get("value")
        ]
        return {"identifier": tokens} if tokens else {}

    def parse(
        self, resource_type: str, params: list[tuple[str, str]], *, strict: bool = False
    ) -> SearchQuery:
        query = SearchQuery(resource_type, count=self.settings.default_page_size)
        clauses: list[Doc] = []
        for name, value in params:
            if name == "_cursor":
                query.cursor = value
                continue
            if name == "_count":
                query.count = self._count(value)
            elif name == "_id":
                clauses.append({"_id": {"$in": [str(v) for v in value.split(",")]}})
            elif name == "identifier":
                alternatives: list[Doc] = []
                for one in value.split(","):
                    system, code = _split_token(one)
                    match: Doc = {"c": str(code)}
                    if system is not None:
                        match["s"] = str(system) if system else None
                    alternatives.append({"sp.identifier": {"$elemMatch": match}})
                clauses.append({"$or": alternatives} if len(alternatives) > 1 else alternatives[0])
            elif name in RESULT_PARAMETERS:
                continue
            else:
                issue = Issue("warning", "not-supported", f"Unknown search parameter '{name}' ignored")
                if strict:
                    raise BadRequest(f"Unknown search parameter '{name}'", code="not-supported")
                query.warnings.append(issue)
                continue
            query.used.append((name, value))
        if clauses:
            query.filter = {"$and": clauses} if len(clauses) > 1 else clauses[0]
        return query

    def _count(self, value: str) -> int:
        try:
            count = int(value)
        except ValueError:
            raise BadRequest(f"_count must be a whole number, not '{value[:50]}'") from None
        if count < 0:
            raise BadRequest("_count must not be negative")
        return min(count, self.settings.max_page_size)
