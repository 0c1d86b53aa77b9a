"""Wired once: every interceptor is built by `build_interceptors`, registered at its number
in the one order table (`interceptors.registry.ORDER`), and the registry is frozen before
the repository is built on it; the services hold one token validator."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_server.hooks import HookRegistry, Pointcut, RegistryFrozen
from fhir_server.services import Services, assemble, auth_settings
from fhir_server.storage.database import Database
from fhir_server.storage.repository import Repository
from interceptors.registry import ORDER
from interceptors.smart import SmartInterceptor
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("fhir_server", "interceptors", "subscriptions") for p in (ROOT / d).rglob("*.py")]

# Which entry of the order table each built-in interceptor runs at.
TABLE_NAME = {
    "ValidationInterceptor": "validation",
    "SmartInterceptor": "smart",
    "AccessInterceptor": "access",
    "SubscriptionGuard": "subscription-guard",
    "HandoffRules": "handoff-rules",
    "SchedulingRules": "scheduling-rules",
    "ProvenanceInterceptor": "provenance",
    "OutboxInterceptor": "outbox",
    "SortBucketInterceptor": "sort-buckets",
    "AuditInterceptor": "audit",
    "ReferralRules": "referral-rules",
    "MessagingRules": "messaging-rules",
}


@pytest.fixture
def services(mongodb_uri: str, tmp_path: Path) -> Iterator[Services]:
    # Auth on: every built-in interceptor is built (nothing is started, nothing is written).
    settings = make_settings(mongodb_uri, database="fhir_wiring", auth_enabled=True, data_dir=tmp_path)
    built = assemble(settings)
    yield built
    asyncio.run(built.client.close())


def _registered(hooks: HookRegistry) -> list[tuple[Pointcut, int, object]]:
    return [(p, entry.order, entry.fn) for p in Pointcut for entry in hooks._hooks[p]]


def test_every_hook_runs_at_its_interceptors_number_in_the_table(services: Services) -> None:
    seen = set()
    for pointcut, order, fn in _registered(services.hooks):
        owner = type(getattr(fn, "__self__", None)).__name__
        name = TABLE_NAME[owner]
        if owner == "AuditInterceptor" and pointcut is Pointcut.INCOMING_REQUEST:
            name = "audit-track"  # audit notes each request before anything can refuse it
        if owner == "AccessInterceptor" and pointcut is Pointcut.IN_TRANSACTION:
            name = "access-store"  # Consent's collect/correct provisions, inside the transaction
        assert order == ORDER[name], (pointcut, fn)
        seen.add(owner)
    assert seen == set(TABLE_NAME)  # all of them were built, with auth on


def test_the_registry_is_frozen_before_the_repository(services: Services) -> None:
    assert services.hooks.frozen
    assert services.repository.hooks is services.hooks
    with pytest.raises(RegistryFrozen):
        services.hooks.add(Pointcut.CAN_SEE, lambda context, resource: False, 1)
    # A repository cannot be built on a registry still being filled.
    database = Database(services.client, "fhir_wiring")
    with pytest.raises(ValueError, match="frozen"):
        Repository(database, HookRegistry(), services.settings, services.search)


def test_one_token_validator_and_auth_settings_built_once(services: Services) -> None:
    smart = {getattr(fn, "__self__", None) for _, _, fn in _registered(services.hooks)
             if isinstance(getattr(fn, "__self__", None), SmartInterceptor)}
    [interceptor] = smart
    assert isinstance(interceptor, SmartInterceptor)
    assert interceptor.validator is services.auth_runtime.validator
    assert services.auth_runtime.settings is services.auth
    # The application builds its auth settings once and hands them to its services.
    auth = auth_settings(services.settings)
    again = assemble(services.settings, auth)
    try:
        assert again.auth is auth and again.auth_runtime.settings is auth
    finally:
        asyncio.run(again.client.close())


def _numbers_beside_hooks(path: Path) -> list[str]:
    """`@hook(...)` / `.add(Pointcut.X, fn, N)` / `.register(x, N)` with a number literal."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name not in ("hook", "add", "register"):
            continue
        args = [*node.args, *(k.value for k in node.keywords)]
        if name == "add" and not (args and isinstance(args[0], ast.Attribute)
                                  and isinstance(args[0].value, ast.Name) and args[0].value.id == "Pointcut"):
            continue  # some other add()
        if any(isinstance(a, ast.Constant) and isinstance(a.value, int) for a in args):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_the_order_table_is_the_only_place_numbers_live() -> None:
    assert [hit for path in SOURCES for hit in _numbers_beside_hooks(path)] == []
    # Modules of interceptors keep no order constants of their own either.
    interceptor_modules = [p for p in SOURCES if "@hook(" in p.read_text()]
    assert len(interceptor_modules) >= 7
    for path in interceptor_modules:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                assert not any("ORDER" in n for n in names), path
    # Every slot a hook names is an entry of the table.
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hook":
                for keyword in node.keywords:
                    if keyword.arg == "slot":
                        assert isinstance(keyword.value, ast.Constant) and keyword.value.value in ORDER
