"""Notes, after each commit, the buckets of the sort keys a change's version holds
(layout and why it is only a hint: fhir_server.storage.sort_buckets, search.seek)."""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from fhir_server.context import RequestContext
from fhir_server.hooks import Change, Pointcut, hook
from fhir_server.search import SearchEngine, seek
from fhir_server.storage.sort_buckets import SortBuckets

__all__ = ["SortBucketInterceptor"]
log = logging.getLogger(__name__)


class SortBucketInterceptor:
    def __init__(self, buckets: SortBuckets, search: SearchEngine) -> None:
        self.buckets = buckets
        self.search = search

    @hook(Pointcut.AFTER_COMMIT)
    async def note(self, context: RequestContext, change: Change) -> None:
        values = seek.bucket_values(self.search, change.resource_type, change.resource,
                                    change.last_updated)
        try:
            for field, found in values.items():
                await self.buckets.note(change.resource_type, field, found)
        except PyMongoError as exc:
            # A hint lost costs later pages a few windows, never a match: the write stands.
            log.warning("sort-key buckets of %s/%s not noted: %s", change.resource_type,
                        change.id, exc)
