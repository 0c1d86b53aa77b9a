"""Hook points (pointcuts), declared in one place, and the registry that dispatches them.

Dispatch follows the return kind of the hook point (as HAPI FHIR does):
- VOID: every hook runs, in order; a hook stops the interaction by raising a FhirError.
- BOOLEAN: hooks run in order until one returns False; the answer is False then, else True.
- VALUE: hooks run in order until one returns something other than None; that is the answer.

Hooks may be plain or async functions. Order is an explicit integer: lower runs first.
Conventional bands: validation 10, SMART scopes 200, Consent 300, provenance 400,
audit 900 (last, so that it sees the decision of everything before it).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class HookKind(Enum):
    VOID = "void"
    BOOLEAN = "boolean"
    VALUE = "value"


class Pointcut(Enum):
    """Every hook point of the server: (name, kind, parameters passed as keywords)."""

    # A request arrived and its context is built; authentication happens here.
    INCOMING_REQUEST = ("incoming_request", HookKind.VOID, ("context",))
    # A resource is about to be created / updated (after parsing, before the transaction).
    BEFORE_CREATE = ("before_create", HookKind.VOID, ("context", "resource"))
    BEFORE_UPDATE = ("before_update", HookKind.VOID, ("context", "resource", "previous"))
    BEFORE_DELETE = ("before_delete", HookKind.VOID, ("context", "previous"))
    # Inside the write transaction: extra documents written atomically with the changes
    # (outbox events, Provenance). `changes` are all the changes of this transaction that are
    # written together (one for a single write, many for a transaction Bundle or a bulk load),
    # so that a hook can write its documents in one round trip. `session` is the pymongo
    # session, `db` the database.
    IN_TRANSACTION = ("in_transaction", HookKind.VOID, ("context", "changes", "session", "db"))
    # After the transaction committed.
    AFTER_COMMIT = ("after_commit", HookKind.VOID, ("context", "change"))
    # Every query the read pipeline runs (read, search, include, history, ...) asks these
    # hooks for MongoDB filter fragments, ANDed together: the access decision as a query.
    FILTER_QUERY = ("filter_query", HookKind.VOID, ("context", "resource_type", "query"))
    # May this resource leave the server? False drops it (403 on a direct read).
    CAN_SEE = ("can_see", HookKind.BOOLEAN, ("context", "resource"))
    # Last look at a resource leaving the server; a non-None answer replaces it (masking).
    WILL_SEE = ("will_see", HookKind.VALUE, ("context", "resource"))
    # The interaction finished (successfully or not): audit writes its AuditEvent here.
    INTERACTION_COMPLETE = ("interaction_complete", HookKind.VOID, ("context", "status"))

    @property
    def hook_name(self) -> str:
        return str(self.value[0])

    @property
    def kind(self) -> HookKind:
        kind: HookKind = self.value[1]
        return kind

    @property
    def params(self) -> tuple[str, ...]:
        params: tuple[str, ...] = self.value[2]
        return params


HookFn = Callable[..., Any]


@dataclass
class Change:
    """One committed (or committing) change to a resource: what subscribers and audit see."""

    resource_type: str
    id: str
    version_id: int
    interaction: str  # create | update | patch | delete
    last_updated: datetime
    resource: dict[str, Any] | None  # the new version; None for a delete
    previous: dict[str, Any] | None = None


# Decides, per stored document (its index fields: `_id`, `id`, `ts`, `sp`, `compartments`),
# whether it may be used; one verdict per document, in order.
DocumentCheck = Callable[[list[dict[str, Any]]], Awaitable[list[bool]]]


@dataclass
class AccessQuery:
    """Collects MongoDB filter fragments from FILTER_QUERY hooks; they are ANDed. A hook
    whose decision is not a bounded filter adds a `DocumentCheck` instead: the read pipeline
    applies it to every candidate document before paging, counting or joining, so that a
    document it refuses is never returned, counted or used to resolve a chain."""

    filters: list[dict[str, Any]] = field(default_factory=list)
    checks: list[DocumentCheck] = field(default_factory=list)

    def add(self, mongo_filter: dict[str, Any]) -> None:
        self.filters.append(mongo_filter)

    def add_check(self, check: DocumentCheck) -> None:
        self.checks.append(check)


def hook(pointcut: Pointcut, order: int) -> Callable[[HookFn], HookFn]:
    """Marks a method of an interceptor object as a hook at `pointcut`, run at `order`."""

    def mark(fn: HookFn) -> HookFn:
        marks: list[tuple[Pointcut, int]] = getattr(fn, "__fhir_hooks__", [])
        marks.append((pointcut, order))
        fn.__fhir_hooks__ = marks  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(order=True)
class _Registered:
    order: int
    seq: int
    fn: HookFn = field(compare=False)
    is_async: bool = field(compare=False)


class HookRegistry:
    def __init__(self) -> None:
        self._hooks: dict[Pointcut, list[_Registered]] = {p: [] for p in Pointcut}
        self._seq = 0

    def add(self, pointcut: Pointcut, fn: HookFn, order: int) -> None:
        self._seq += 1
        entry = _Registered(order, self._seq, fn, inspect.iscoroutinefunction(fn))
        self._hooks[pointcut].append(entry)
        self._hooks[pointcut].sort()

    def register(self, interceptor: object) -> None:
        """Adds every method of `interceptor` marked with @hook."""
        for name in dir(interceptor):
            fn = getattr(interceptor, name, None)
            for pointcut, order in getattr(fn, "__fhir_hooks__", []):
                self.add(pointcut, fn, order)  # type: ignore[arg-type]

    def has(self, pointcut: Pointcut) -> bool:
        return bool(self._hooks[pointcut])

    def names(self, pointcut: Pointcut) -> list[tuple[int, str]]:
        return [(r.order, getattr(r.fn, "__qualname__", repr(r.fn))) for r in self._hooks[pointcut]]

    async def _run(self, entry: _Registered, kwargs: dict[str, Any]) -> Any:
        result = entry.fn(**kwargs)
        if entry.is_async or inspect.isawaitable(result):
            return await result
        return result

    async def call(self, pointcut: Pointcut, **kwargs: Any) -> Any:
        missing = set(pointcut.params) - set(kwargs)
        if missing:
            raise TypeError(f"{pointcut.hook_name} needs {sorted(missing)}")
        entries = self._hooks[pointcut]
        kind = pointcut.kind
        if kind is HookKind.VOID:
            for entry in entries:
                await self._run(entry, kwargs)
            return None
        if kind is HookKind.BOOLEAN:
            for entry in entries:
                if (await self._run(entry, kwargs)) is False:
                    return False
            return True
        for entry in entries:
            value = await self._run(entry, kwargs)
            if value is not None:
                return value
        return None


AsyncHook = Callable[..., Awaitable[Any]]
