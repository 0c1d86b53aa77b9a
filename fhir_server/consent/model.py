"""R4 Consent resources read into rule trees: what the engine evaluates. Pure functions.

Only `patient-privacy` Consents govern access. A Consent's base decision comes from
`policyRule` (v3-ActCode OPTIN/OPTINR: deny unless permitted; OPTOUT/OPTOUTE: permit unless
denied; anything else: the server default). Its provisions are exceptions to that base:
- the root provision's `period` is the window in which the Consent applies at all;
- a root provision without `type` (R4 forbids one there) is the exception to the base, i.e.
  its opposite, when it states any condition; without conditions it only frames its nested
  provisions;
- a nested provision without `type` (invalid in R4) is taken as the opposite of its parent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.datetimes import DateFormatError, parse_range

PRIVACY_SCOPE = "patient-privacy"
OPT_IN = frozenset({"OPTIN", "OPTINR"})
OPT_OUT = frozenset({"OPTOUT", "OPTOUTE"})

Code = tuple[str, str]  # (system or "", code)


def opposite(decision: str) -> str:
    return "permit" if decision == "deny" else "deny"


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC; None is open."""

    start: datetime | None
    end: datetime | None

    def covers(self, at: datetime) -> bool:
        return (self.start is None or self.start <= at) and (self.end is None or at < self.end)


@dataclass(frozen=True)
class DataRef:
    meaning: str  # instance | related | dependents | authoredby
    reference: str  # "Type/id" (or an external URL, which matches nothing here)


@dataclass(frozen=True)
class Provision:
    type: str  # permit | deny
    period: Period | None
    actors: tuple[str, ...]  # actor.reference, as "Type/id"
    roles: tuple[Code, ...]  # actor.role, kept for the audit; not matched (see docs/consent.md)
    actions: tuple[Code, ...]
    labels: tuple[Code, ...]
    purposes: tuple[Code, ...]
    classes: tuple[Code, ...]
    codes: tuple[Code, ...]
    data_period: Period | None
    data: tuple[DataRef, ...]
    children: tuple[Provision, ...]

    @property
    def has_conditions(self) -> bool:
        return bool(self.actors or self.actions or self.labels or self.purposes or self.classes
                    or self.codes or self.data_period or self.data)


@dataclass(frozen=True)
class Consent:
    id: str
    patient: str  # the patient's id
    base: str  # permit | deny
    window: Period | None  # the root provision's period: outside it the Consent is silent
    rules: tuple[Provision, ...]  # exceptions to the base, each with a resolved type

    def applies_at(self, at: datetime) -> bool:
        return self.window is None or self.window.covers(at)

    def provisions(self) -> list[Provision]:
        """Every provision, nested ones included."""
        out: list[Provision] = []
        stack = list(self.rules)
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(node.children)
        return out

    def actor_references(self) -> set[str]:
        return {ref for node in self.provisions() for ref in node.actors}


def relative_reference(ref: str, base_url: str) -> str:
    """"Type/id" for our own absolute URLs; other values unchanged."""
    prefix = base_url.rstrip("/") + "/"
    return ref[len(prefix):] if ref.startswith(prefix) else ref


def _codings(value: Any) -> list[Code]:
    """Codings of a Coding, a CodeableConcept, or a list of either."""
    items = value if isinstance(value, list) else [value]
    out: list[Code] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if "coding" in item:
            out.extend(_codings(item["coding"]))
        elif isinstance(item.get("code"), str):
            out.append((str(item.get("system") or ""), item["code"]))
    return out


def period_of(value: Any) -> Period | None:
    if not isinstance(value, dict):
        return None
    try:
        start = parse_range(value["start"])[0] if isinstance(value.get("start"), str) else None
        end = parse_range(value["end"])[1] if isinstance(value.get("end"), str) else None
    except DateFormatError:
        return Period(None, None)
    return Period(start, end)


def _reference(value: Any, base_url: str) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return relative_reference(value["reference"], base_url)
    return None


def _provision(node: dict[str, Any], kind: str, base_url: str) -> Provision:
    actors: list[str] = []
    roles: list[Code] = []
    for actor in node.get("actor") or []:
        ref = _reference(actor.get("reference"), base_url) if isinstance(actor, dict) else None
        if ref:
            actors.append(ref)
            roles.extend(_codings(actor.get("role")))
    data = tuple(
        DataRef(str(d.get("meaning")), ref)
        for d in node.get("data") or []
        if isinstance(d, dict) and (ref := _reference(d.get("reference"), base_url))
    )
    return Provision(
        type=kind,
        period=period_of(node.get("period")),
        actors=tuple(actors),
        roles=tuple(roles),
        actions=tuple(_codings(node.get("action"))),
        labels=tuple(_codings(node.get("securityLabel"))),
        purposes=tuple(_codings(node.get("purpose"))),
        classes=tuple(_codings(node.get("class"))),
        codes=tuple(_codings(node.get("code"))),
        data_period=period_of(node.get("dataPeriod")),
        data=data,
        children=_children(node, kind, base_url),
    )


def _kind(node: dict[str, Any], implied: str) -> str:
    kind = node.get("type")
    return kind if kind in ("permit", "deny") else implied


def _children(node: dict[str, Any], parent: str, base_url: str) -> tuple[Provision, ...]:
    return tuple(
        _provision(child, _kind(child, opposite(parent)), base_url)
        for child in node.get("provision") or []
        if isinstance(child, dict)
    )


def parse_consent(resource: dict[str, Any], base_url: str, default_base: str) -> Consent | None:
    """The rule tree of an active patient-privacy Consent; None for any other Consent.

    `default_base` (permit | deny) stands in for a policyRule we do not know.
    """
    if resource.get("status") != "active":
        return None
    if not any(code == PRIVACY_SCOPE for _, code in _codings(resource.get("scope"))):
        return None
    patient = _reference(resource.get("patient"), base_url)
    if not patient or not patient.startswith("Patient/"):
        return None
    policy = {code for _, code in _codings(resource.get("policyRule"))}
    base = "deny" if policy & OPT_IN else "permit" if policy & OPT_OUT else default_base
    root = resource.get("provision")
    rules: tuple[Provision, ...] = ()
    window = None
    if isinstance(root, dict):
        window = period_of(root.get("period"))
        kind = _kind(root, opposite(base))
        framed = _provision(root, kind, base_url)
        if root.get("type") in ("permit", "deny") or framed.has_conditions:
            rules = (framed,)
        else:
            # A root that states nothing but a period only frames its nested provisions.
            rules = _children(root, base, base_url)
    return Consent(str(resource.get("id")), patient[len("Patient/"):], base, window, rules)
