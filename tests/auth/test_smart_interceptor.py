"""interceptors/smart.py (authentication) and interceptors/access.py (the access decision)
through the hook registry: 401 with WWW-Authenticate, 403 on writes, query filters and the
per-resource check; a context without a principal is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.access import AccessPolicy, NoPrincipal
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.tokens import TokenValidator, mint_access_token
from fhir_server.config import Settings
from fhir_server.context import AUTH_DISABLED, Principal, RequestContext
from fhir_server.errors import FhirError, Forbidden, Unauthorized
from fhir_server.hooks import AccessQuery, HookRegistry, Pointcut
from fhir_server.search import SearchEngine
from interceptors.access import AccessInterceptor
from interceptors.registry import ORDER
from interceptors.smart import SmartInterceptor, build_smart_interceptor
from tests.auth.conftest import AuthServer

Db = AsyncDatabase[dict[str, Any]]
SEARCH = SearchEngine(Settings(base_url="http://x/fhir"))


def _context(interaction: str, resource_type: str = "Task",
             scopes: tuple[str, ...] = (), patient: str | None = None) -> RequestContext:
    context = RequestContext(base_url="http://x/fhir", interaction=interaction,
                             resource_type=resource_type)
    context.principal = Principal(client_id="c", scopes=frozenset(scopes), patient=patient)
    return context


def _task(patient: str, status: str = "requested", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "for": {"reference": f"Patient/{patient}"}, **extra}


def _registry(auth: AuthServer, db: Db) -> HookRegistry:
    hooks = HookRegistry()
    hooks.register(SmartInterceptor(TokenValidator(auth.settings, db)), ORDER["smart"])
    hooks.register(AccessInterceptor(AccessPolicy(SEARCH)), ORDER["access"], ORDER)
    return hooks


def test_registered_at_its_order(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        hooks = _registry(auth, db)
        assert [order for order, _ in hooks.names(Pointcut.INCOMING_REQUEST)] == [ORDER["smart"], ORDER["access"]]
        for pointcut in (Pointcut.BEFORE_CREATE, Pointcut.BEFORE_UPDATE, Pointcut.BEFORE_DELETE,
                         Pointcut.FILTER_QUERY, Pointcut.CAN_SEE):
            assert [order for order, _ in hooks.names(pointcut)] == [ORDER["access"]]

    auth.run(work)


def test_not_registered_in_dev_mode(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        assert build_smart_interceptor(auth.settings.with_(enabled=False), db) is None
        assert build_smart_interceptor(auth.settings, db) is not None

    auth.run(work)


@pytest.mark.parametrize(("header", "error"), [
    (None, None),
    ("Basic dXNlcjpwdw==", "invalid_request"),
    ("Bearer not-a-token", "invalid_token"),
])
def test_missing_or_bad_token_is_401_with_challenge(auth: AuthServer, header: str | None,
                                                    error: str | None) -> None:
    async def work(db: Db) -> FhirError:
        context = RequestContext(base_url="http://x/fhir", interaction="read")
        if header:
            context.attributes["authorization"] = header
        with pytest.raises(Unauthorized) as info:
            await _registry(auth, db).call(Pointcut.INCOMING_REQUEST, context=context)
        return info.value

    exc = auth.run(work)
    assert exc.status == 401
    challenge = exc.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    if error:
        assert f'error="{error}"' in challenge
    assert exc.to_outcome()["resourceType"] == "OperationOutcome"


def test_valid_token_sets_principal_and_discovery_is_public(auth: AuthServer) -> None:
    async def work(db: Db) -> Principal | None:
        token, _ = await mint_access_token(KeyStore(db), auth.settings, client_id="c",
                                           scopes=["patient/*.rs"], patient="p1")
        hooks = _registry(auth, db)
        public = RequestContext(base_url="http://x/fhir", interaction="capabilities")
        await hooks.call(Pointcut.INCOMING_REQUEST, context=public)
        assert public.principal is None
        context = RequestContext(base_url="http://x/fhir", interaction="read")
        context.attributes["authorization"] = f"Bearer {token}"
        await hooks.call(Pointcut.INCOMING_REQUEST, context=context)
        return context.principal

    principal = auth.run(work)
    assert principal is not None and principal.patient == "p1"


def test_writes_need_write_scopes_and_the_patients_compartment(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        hooks = _registry(auth, db)
        reader = _context("create", scopes=("patient/Task.rs",), patient="p1")
        with pytest.raises(Forbidden):
            await hooks.call(Pointcut.BEFORE_CREATE, context=reader, resource=_task("p1"))
        writer = _context("create", scopes=("patient/Task.c",), patient="p1")
        await hooks.call(Pointcut.BEFORE_CREATE, context=writer, resource=_task("p1"))
        with pytest.raises(Forbidden):
            await hooks.call(Pointcut.BEFORE_CREATE, context=writer, resource=_task("p2"))
        # Judged by the computed compartments: a mere reference to p1 elsewhere is not enough,
        # and landing in p2's record as well is refused.
        with pytest.raises(Forbidden):
            await hooks.call(Pointcut.BEFORE_CREATE, context=writer,
                             resource=_task("p2", requester={"reference": "Patient/p1"}))
        with pytest.raises(Forbidden):
            await hooks.call(Pointcut.BEFORE_CREATE, context=writer,
                             resource={"resourceType": "Task", "status": "requested", "intent": "order",
                                       "note": [{"authorReference": {"reference": "Patient/p1"}}]})
        updater = _context("update", scopes=("patient/Task.u",), patient="p1")
        await hooks.call(Pointcut.BEFORE_UPDATE, context=updater, resource=_task("p1"),
                         previous=_task("p1"))
        with pytest.raises(Forbidden):  # moving a resource out of reach is also a write there
            await hooks.call(Pointcut.BEFORE_UPDATE, context=updater, resource=_task("p1"),
                             previous=_task("p2"))
        with pytest.raises(Forbidden):  # update-as-create needs c
            await hooks.call(Pointcut.BEFORE_UPDATE, context=updater, resource=_task("p1"),
                             previous=None)
        deleter = _context("delete", scopes=("user/Task.d",))
        await hooks.call(Pointcut.BEFORE_DELETE, context=deleter, previous=_task("p2"))
        with pytest.raises(Forbidden):
            await hooks.call(Pointcut.BEFORE_DELETE,
                             context=_context("delete", scopes=("user/Task.cu",)),
                             previous=_task("p2"))
        # The server's own work (the SYSTEM principal) is not checked.
        system = RequestContext.system("http://x/fhir")
        await hooks.call(Pointcut.BEFORE_CREATE, context=system, resource=_task("p2"))

    auth.run(work)


def test_a_context_without_a_principal_is_refused_never_unrestricted(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        hooks = _registry(auth, db)
        for interaction, call in (
            ("search-type", lambda c: _filters(hooks, c, "Task")),
            ("read", lambda c: hooks.call(Pointcut.CAN_SEE, context=c, resource=_task("p1"))),
            ("create", lambda c: hooks.call(Pointcut.BEFORE_CREATE, context=c, resource=_task("p1"))),
            ("delete", lambda c: hooks.call(Pointcut.BEFORE_DELETE, context=c, previous=_task("p1"))),
        ):
            bare = RequestContext(base_url="http://x/fhir", interaction=interaction, resource_type="Task")
            with pytest.raises(NoPrincipal) as info:
                await call(bare)
            assert info.value.status == 401
            # A dev-mode principal that reaches a server with auth on is refused as well.
            dev = RequestContext(base_url="http://x/fhir", interaction=interaction, resource_type="Task",
                                 principal=AUTH_DISABLED)
            with pytest.raises(Forbidden):
                await call(dev)

    auth.run(work)


async def _filters(hooks: HookRegistry, context: RequestContext,
                   resource_type: str) -> list[dict[str, Any]]:
    query = AccessQuery()
    await hooks.call(Pointcut.FILTER_QUERY, context=context, resource_type=resource_type,
                     query=query)
    return query.filters


def test_filter_query(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        hooks = _registry(auth, db)
        search = _context("search-type", scopes=("patient/Task.rs",), patient="p1")
        assert await _filters(hooks, search, "Task") == [{"compartments.Patient": "p1"}]
        # A type the token cannot read at all matches nothing (e.g. an _include target).
        assert await _filters(hooks, search, "CarePlan") == [{"_id": {"$in": []}}]
        user = _context("search-type", scopes=("user/*.rs",))
        assert await _filters(hooks, user, "CarePlan") == []
        # Write-only scopes do not let a read through: a direct read is 403, a search empty.
        writer = _context("read", scopes=("user/Task.cud",))
        with pytest.raises(Forbidden):
            await _filters(hooks, writer, "Task")
        writer.interaction = "search-type"
        assert await _filters(hooks, writer, "Task") == [{"_id": {"$in": []}}]
        # A direct read outside the compartment is filtered (the repository answers 404).
        other = _context("read", scopes=("patient/Task.rs",), patient="p1")
        assert await _filters(hooks, other, "Task") == [{"compartments.Patient": "p1"}]

    auth.run(work)


def test_filter_query_uses_the_search_layers_builder_for_granular_scopes(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        hooks = _registry(auth, db)
        context = _context("search-type", patient="p1", scopes=(
            "patient/Task.rs?status=requested", "patient/Task.rs?status=accepted"))
        assert await _filters(hooks, context, "Task") == [{"$or": [
            {"$and": [{"compartments.Patient": "p1"}, SEARCH.filter_for("Task", [("status", "accepted")])]},
            {"$and": [{"compartments.Patient": "p1"}, SEARCH.filter_for("Task", [("status", "requested")])]},
        ]}]

    auth.run(work)


def test_can_see(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        hooks = _registry(auth, db)

        async def sees(context: RequestContext, resource: dict[str, Any]) -> bool:
            return bool(await hooks.call(Pointcut.CAN_SEE, context=context, resource=resource))

        granular = _context("search-type", patient="p1", scopes=("patient/Task.rs?status=requested",))
        assert await sees(granular, _task("p1"))
        assert not await sees(granular, _task("p1", "accepted"))
        assert not await sees(granular, _task("p2"))
        assert not await sees(granular, {"resourceType": "CarePlan", "subject": {"reference": "Patient/p1"}})
        no_patient = _context("read", scopes=("patient/Task.rs",))
        assert not await sees(no_patient, _task("p1"))
        assert await sees(RequestContext.system("http://x/fhir"), _task("p2"))

    auth.run(work)


def test_history_of_one_resource_is_read_and_of_a_type_is_search(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        hooks = _registry(auth, db)
        read_only = _context("history", scopes=("user/Task.r",))
        read_only.resource_id = "o1"
        assert await _filters(hooks, read_only, "Task") == []
        read_only.resource_id = None
        assert await _filters(hooks, read_only, "Task") == [{"_id": {"$in": []}}]
        search_only = _context("history", scopes=("user/Task.s",))
        assert await _filters(hooks, search_only, "Task") == []

    auth.run(work)
