"""FHIR search: values extracted at write time, query strings turned into MongoDB filters.

The repository calls `SearchEngine.index_fields()` when it writes a version (the values are
stored beside the resource under `sp`, see `extract`), and `SearchEngine.parse()` to turn a
query into a `SearchQuery` (`query`) that it runs through its read pipeline, which adds the
access filters and resolves chains, `_has`, includes and paging (`keyset`).
"""

from fhir_server.search.engine import SearchEngine
from fhir_server.search.query import Include, Join, SearchQuery

__all__ = ["Include", "Join", "SearchEngine", "SearchQuery"]
