"""Hook points (pointcuts), declared in one place, and the registry that dispatches them.

Dispatch follows the return kind of the hook point (as HAPI FHIR does):
- VOID: every hook runs, in order; a hook stops the interaction by raising a FhirError.
- BOOLEAN: hooks run in order until one returns False; the answer is False then, else True.
- VALUE: hooks run in order until one returns something other than None; that is the answer.

Hooks may be plain or async functions. Order is an explicit integer, lower first, equal
numbers in registration order; the numbers live in one table (`interceptors.registry.ORDER`),
never beside the hooks. This module is the vocabulary below storage: the repository calls
hook points, interceptors (above it) plug into them, and neither imports the other.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
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
    # session, `db` the database, `writer` the commit's SessionWriter: resources a hook records
    # about the changes (Provenance, AuditEvent) are stored through it, by the same commit.
    IN_TRANSACTION = ("in_transaction", HookKind.VOID, ("context", "changes", "session", "db", "writer"))
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
    # The stored current document's index fields (`_id`, `ts`, `sp`, `compartments`), as the
    # write computed them: a check inside the transaction judges these, not a re-read.
    stored: dict[str, Any] | None = None


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
    # A decision on release (CAN_SEE) judges the document's index fields: the read fetches
    # them with the resource rather than the decision reading the document a second time.
    index_wanted: bool = False

    def add(self, mongo_filter: dict[str, Any]) -> None:
        self.filters.append(mongo_filter)

    def add_check(self, check: DocumentCheck) -> None:
        self.checks.append(check)

    def want_index(self) -> None:
        self.index_wanted = True


def hook(pointcut: Pointcut, slot: str | None = None) -> Callable[[HookFn], HookFn]:
    """Marks a method of an interceptor object as a hook at `pointcut`.

    It runs at its interceptor's number in the order table (`interceptors.registry.ORDER`),
    or at the number of `slot`, another entry of that table, when one hook of an interceptor
    must run elsewhere (audit notes each request before anything can refuse it).
    """

    def mark(fn: HookFn) -> HookFn:
        marks: list[tuple[Pointcut, str | None]] = getattr(fn, "__fhir_hooks__", [])
        marks.append((pointcut, slot))
        fn.__fhir_hooks__ = marks  # type: ignore[attr-defined]
        return fn

    return mark


def marked_hooks(interceptor: object) -> list[tuple[Pointcut, str | None, HookFn]]:
    """(pointcut, slot, bound method) for every method of `interceptor` marked with @hook."""
    found: list[tuple[Pointcut, str | None, HookFn]] = []
    for name in dir(interceptor):
        fn = getattr(interceptor, name, None)
        for pointcut, slot in getattr(fn, "__fhir_hooks__", []):
            found.append((pointcut, slot, fn))  # type: ignore[arg-type]
    return found


class RegistryFrozen(RuntimeError):
    """A hook was added after the registry was frozen (the repository may be running)."""


@dataclass(order=True)
class _Registered:
    order: int
    seq: int
    fn: HookFn = field(compare=False)
    is_async: bool = field(compare=False)


class HookRegistry:
    """The hooks of one server, by hook point, in order. Filled once at start-up, then
    frozen before the repository is built on it: what runs never changes while it serves."""

    def __init__(self) -> None:
        self._hooks: dict[Pointcut, list[_Registered]] = {p: [] for p in Pointcut}
        self._seq = 0
        self._frozen = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        self._frozen = True

    def add(self, pointcut: Pointcut, fn: HookFn, order: int) -> None:
        if self._frozen:
            raise RegistryFrozen(f"cannot add a {pointcut.hook_name} hook: the registry is frozen")
        self._seq += 1
        entry = _Registered(order, self._seq, fn, inspect.iscoroutinefunction(fn))
        self._hooks[pointcut].append(entry)
        self._hooks[pointcut].sort()

    def register(self, interceptor: object, order: int, slots: Mapping[str, int] | None = None) -> None:
        """Adds every method of `interceptor` marked with @hook, at `order`, or at the number
        `slots` gives the slot a hook names."""
        for pointcut, slot, fn in marked_hooks(interceptor):
            if slot is None:
                self.add(pointcut, fn, order)
            elif slots is None or slot not in slots:
                raise KeyError(f"{getattr(fn, '__qualname__', fn)} names the slot '{slot}', "
                               "which the order table does not hold")
            else:
                self.add(pointcut, fn, slots[slot])

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
