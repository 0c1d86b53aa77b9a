"""FHIR search: values extracted at write time, query strings turned into MongoDB filters.

The repository calls two things: `SearchEngine.index_fields()` when it writes a version (the
values are stored beside the resource under `sp`), and `SearchEngine.parse()` to turn a
query into a `SearchQuery` it runs through its read pipeline (which adds access filters).
"""

from fhir_server.search.engine import SearchEngine, SearchQuery

__all__ = ["SearchEngine", "SearchQuery"]
