"""Notes, after each commit, the buckets of the sort keys a change's version holds, and (for
a sample of the resources) its string, token and number sort-key values (layout and why both
are only hints: fhir_server.storage.sort_buckets, storage.sort_values, search.seek,
search.valueseek)."""

from __future__ import annotations

import logging
from functools import cached_property

from pymongo.errors import PyMongoError

from fhir_server.context import RequestContext
from fhir_server.hooks import Change, Pointcut, hook
from fhir_server.search import SearchEngine, seek, valueseek
from fhir_server.storage.sort_buckets import SortBuckets
from fhir_server.storage.sort_values import SortValues, sampled

__all__ = ["SortBucketInterceptor"]
log = logging.getLogger(__name__)


class SortBucketInterceptor:
    def __init__(self, buckets: SortBuckets, search: SearchEngine,
                 values: SortValues | None = None) -> None:
        self.buckets = buckets
        self.search = search
        self.values = values

    @cached_property
    def value_fields(self) -> dict[str, tuple[str, ...]]:
        """The string, token and number keys an index can seek (search.valueseek), by type."""
        return valueseek.index_fields({
            t: [list(m.document["key"].items()) for m in models]
            for t, models in self.search.index_models().items()})

    @hook(Pointcut.AFTER_COMMIT)
    async def note(self, context: RequestContext, change: Change) -> None:
        values = seek.bucket_values(self.search, change.resource_type, change.resource,
                                    change.last_updated)
        try:
            for field, found in values.items():
                await self.buckets.note(change.resource_type, field, found)
            fields = self.value_fields.get(change.resource_type)
            if (self.values is not None and fields and change.resource is not None
                    and sampled(change.id)):
                # The write's own index fields when it kept them, else extracted again.
                stored = change.stored if change.stored and "sp" in change.stored else {
                    "sp": self.search.index_fields(change.resource_type, change.resource)}
                await self.values.note(change.resource_type, change.id, {
                    f: valueseek.values_at(stored, f) for f in fields})
        except PyMongoError as exc:
            # A hint lost costs later pages a few windows, never a match: the write stands.
            log.warning("sort-key buckets of %s/%s not noted: %s", change.resource_type,
                        change.id, exc)
