"""A transaction Bundle: all entries succeed together in one MongoDB transaction, or none do.

One unit of work of the write pipeline (fhir_server.storage.pipeline), run by its retry
helper: ids are assigned to creates and fullUrls mapped to them; conditional creates/updates/
deletes are resolved (under the criteria's lock where they may create) and conditional
references too; overlapping entries are refused; references rewritten; then every write
entry is planned in FHIR's order (DELETE, POST, PUT/PATCH) by the same planner a single
write uses, and all are committed together (one bulk write per type). After the commit,
AFTER_COMMIT hooks run, then the reads (GET/HEAD) through the normal routes.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server import fhirjson
from fhir_server.batch.dispatch import Dispatcher, _patch_body, entry_response, status_line
from fhir_server.batch.entries import ORDER, Entry, parse_url
from fhir_server.batch.references import conditional_references, rewrite
from fhir_server.context import RequestContext
from fhir_server.errors import BadRequest, FhirError, NotFound, PreconditionFailed
from fhir_server.hooks import Change
from fhir_server.storage.documents import StoredResource, format_instant, http_date
from fhir_server.storage.pipeline import Planned, run_unit
from fhir_server.storage.repository import Repository

WRITES = ("POST", "PUT", "PATCH", "DELETE")
INTERACTION = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# The status a planned entry answers with.
_STATUS = {"created": 201, "updated": 200, "unchanged": 200, "deleted": 204, "absent": 204}


@dataclass
class Written:
    entry: Entry
    stored: StoredResource | None
    status: int


def _criteria(entry: Entry) -> list[tuple[str, str]]:
    if entry.if_none_exist is not None:
        return parse_qsl(entry.if_none_exist.split("?", 1)[-1], keep_blank_values=True)
    return entry.params


def _if_match(entry: Entry) -> int | None:
    if entry.if_match is None:
        return None
    value = entry.if_match.removeprefix("W/").strip('"')
    return int(value) if value.isdigit() else -1  # not a version of ours: never matches


class Transaction:
    def __init__(self, repository: Repository, context: RequestContext, entries: list[Entry]) -> None:
        self.repository = repository
        self.planner = repository.planner
        self.context = context
        self.entries = entries

    def _assign_ids(self) -> dict[str, str]:
        """Fresh targets for this attempt (a retried unit resolves everything again)."""
        mapping: dict[str, str] = {}
        for entry in self.entries:
            entry.skip_write = False
            if entry.method == "POST":
                entry.target_id = str(uuid.uuid4())
            elif entry.method in WRITES:
                entry.target_id = entry.resource_id
            if entry.method in ("POST", "PUT") and entry.full_url and entry.target_id:
                mapping[entry.full_url] = f"{entry.resource_type}/{entry.target_id}"
        return mapping

    def _entry_context(self, entry: Entry) -> RequestContext:
        """The context an entry's hooks see: the entry's own interaction, type and id, so that
        scopes are checked per entry exactly as for the same request made alone."""
        return replace(self.context, interaction=INTERACTION[entry.method],
                       resource_type=entry.resource_type, resource_id=entry.target_id)

    @staticmethod
    def _fail(entry: Entry, error: FhirError) -> FhirError:
        """Names the entry that failed the transaction in the error's OperationOutcome."""
        error.diagnostics = f"{entry.where} ({entry.method} {entry.url[:120]}): {error.diagnostics}"
        error.issues = [replace(i, diagnostics=f"{entry.where}: {i.diagnostics}") for i in error.issues]
        return error

    async def _resolve(self, session: AsyncClientSession, entry: Entry, mapping: dict[str, str]) -> None:
        context = self._entry_context(entry)
        assert entry.resource_type is not None
        if entry.method == "POST" and entry.if_none_exist is not None:
            matches = await self.planner.resolve(session, context, entry.resource_type,
                                                 _criteria(entry), lock=True)
            if len(matches) > 1:
                raise PreconditionFailed("ifNoneExist matches more than one resource", code="multiple-matches")
            if matches:
                entry.skip_write = True
                entry.target_id = str(matches[0]["_id"])
                if entry.full_url:
                    mapping[entry.full_url] = f"{entry.resource_type}/{entry.target_id}"
        elif entry.method in ("PUT", "PATCH", "DELETE") and entry.resource_id is None:
            # A conditional update may create: it takes the criteria's lock, as in REST.
            matches = await self.planner.resolve(session, context, entry.resource_type,
                                                 entry.params, lock=entry.method == "PUT")
            if len(matches) > 1:
                raise PreconditionFailed("the conditional URL matches more than one resource", code="multiple-matches")
            if matches:
                entry.target_id = str(matches[0]["_id"])
            elif entry.method == "PUT":
                body_id = (entry.resource or {}).get("id")
                entry.target_id = body_id if isinstance(body_id, str) else str(uuid.uuid4())
            elif entry.method == "PATCH":
                raise NotFound("the conditional URL matches no resource")
            else:
                entry.skip_write = True  # conditional delete of nothing
            if entry.method == "PUT" and entry.full_url:
                mapping[entry.full_url] = f"{entry.resource_type}/{entry.target_id}"

    async def _references(self, session: AsyncClientSession, entry: Entry, mapping: dict[str, str]) -> None:
        for reference in conditional_references(entry.resource):
            if reference in mapping:
                continue
            rtype, _, _, params = parse_url(reference, self.context.base_url, entry.where)
            if rtype is None or not params:
                raise BadRequest(f"conditional reference '{reference[:120]}' is not a search")
            matches = await self.repository.find_matches(self.context, rtype, params, session=session)
            if len(matches) != 1:
                found = "no" if not matches else "more than one"
                raise PreconditionFailed(f"conditional reference '{reference[:120]}' matches {found} resource")
            mapping[reference] = f"{rtype}/{matches[0]['_id']}"

    async def _plan(self, session: AsyncClientSession, entry: Entry,
                    resource: dict[str, Any] | None) -> tuple[Written, Planned | None]:
        """Plans one write entry with the planner a single write uses; nothing is written yet."""
        planner, context = self.planner, self._entry_context(entry)
        rtype, rid = entry.resource_type, entry.target_id
        assert rtype is not None
        if entry.skip_write:
            if entry.method == "DELETE":
                return Written(entry, None, 204), None
            doc = await planner.current(session, context, rtype, rid or "")
            match = StoredResource.from_current(rtype, doc) if doc else None
            return Written(entry, match, 200), None
        assert rid is not None
        if entry.method == "POST":
            # A fresh server-assigned id: there is no previous version to look up.
            assert resource is not None
            planned = await planner.create(session, context, resource, resource_id=rid)
        elif entry.method == "DELETE":
            planned = await planner.delete(session, context, rtype, rid, if_match=_if_match(entry))
        elif entry.method == "PATCH":
            operations = fhirjson.loads(_patch_body(entry))
            planned = await planner.patch(session, context, rtype, rid, operations, if_match=_if_match(entry))
        else:
            assert resource is not None
            body_id = resource.get("id")
            if body_id is not None and body_id != rid:
                raise BadRequest(f"the resource id '{str(body_id)[:64]}' differs from the URL's '{rid}'")
            planned = await planner.update(session, context, rtype, rid, resource, if_match=_if_match(entry))
        if planned.version is not None:
            stored: StoredResource | None = planned.version.stored
        elif planned.previous is not None and planned.outcome == "unchanged":
            stored = StoredResource.from_current(rtype, planned.previous)
        else:
            stored = None
        return Written(entry, stored, _STATUS[planned.outcome]), planned

    async def _work(self, session: AsyncClientSession) -> tuple[list[Written], list[Change]]:
        mapping = self._assign_ids()
        writes = [e for e in self.entries if e.method in WRITES]
        for entry in writes:
            try:
                await self._resolve(session, entry, mapping)
            except FhirError as error:
                raise self._fail(entry, error) from None
        seen: dict[tuple[str | None, str | None], Entry] = {}
        for entry in writes:
            if entry.skip_write and entry.method == "DELETE":
                continue
            key = (entry.resource_type, entry.target_id)
            if key in seen:
                raise BadRequest(f"{entry.where} and {seen[key].where} both change "
                                 f"{entry.resource_type}/{entry.target_id}", code="duplicate")
            seen[key] = entry
        resources: dict[int, dict[str, Any] | None] = {}
        for entry in writes:
            try:
                await self._references(session, entry, mapping)
            except FhirError as error:
                raise self._fail(entry, error) from None
        for entry in writes:
            resources[entry.index] = rewrite(copy.deepcopy(entry.resource), mapping) if entry.resource else None
        written: list[Written] = []
        planned: list[Planned] = []
        for entry in sorted(writes, key=lambda e: (ORDER[e.method], e.index)):
            try:
                result, plan = await self._plan(session, entry, resources[entry.index])
            except FhirError as error:
                raise self._fail(entry, error) from None
            written.append(result)
            if plan is not None:
                planned.append(plan)
        # Every entry touches a different resource, so the versions can be written together
        # (one bulk write per type) in FHIR's order without one seeing another.
        changes = await self.repository.committer.commit(session, self.context, planned)
        return written, changes

    async def run(self, dispatcher: Dispatcher | None) -> list[dict[str, Any]]:
        """Commits the writes, then answers every entry in request order. Reads (GET/HEAD)
        go through `dispatcher`; without one (the loader) there must be none."""
        written, changes = await run_unit(self.repository.database, self._work, "a resource of the transaction")
        await self.repository.committer.after_commit(self.context, changes)
        by_index = {w.entry.index: w for w in written}
        responses: list[dict[str, Any]] = []
        for entry in self.entries:
            if entry.index in by_index:
                responses.append(self._response(by_index[entry.index]))
            else:
                assert dispatcher is not None, "a transaction with reads needs a dispatcher"
                responses.append(await dispatcher.run(entry))
        return responses

    def _response(self, written: Written) -> dict[str, Any]:
        stored = written.stored
        if stored is None:
            return {"response": {"status": status_line(written.status)}}
        headers = {"etag": stored.etag, "last-modified": http_date(stored.last_updated)}
        if written.status in (200, 201) and stored.raw is not None:
            headers["location"] = stored.location
        body = stored.raw if self.context.prefer_return == "representation" else None
        out = entry_response(written.status, headers, None)
        out["response"]["lastModified"] = format_instant(stored.last_updated)
        if body is not None:
            out["resource"] = fhirjson.loads(body)
        return out
