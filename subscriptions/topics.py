"""The SubscriptionTopics this server publishes, loaded from `profiles/SubscriptionTopic-*.json`.

Each file is an R4B SubscriptionTopic (the Backport IG's definition format). A trigger fires
for an interaction it supports when its `queryCriteria` (search syntax, run through the search
engine's own filter on the previous / current version) and its `fhirPathCriteria` (FHIRPath
over `%previous` and `%current`) both hold. `canFilterBy` names the search parameters a
Subscription may filter on (`filterDefinition` maps a filter name onto another parameter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fhirpathpy import compile as compile_fhirpath

from fhir_server.search import SearchEngine
from fhir_server.storage import schema
from subscriptions.filters import matches

log = logging.getLogger(__name__)

Doc = dict[str, Any]
Criteria = Callable[[Doc, dict[str, Any]], Any]


@dataclass(frozen=True)
class Trigger:
    resource_type: str
    interactions: frozenset[str]
    previous: Doc | None = None  # MongoDB filter over the previous version's index values
    current: Doc | None = None
    result_for_create: bool = False
    result_for_delete: bool = False
    require_both: bool = False
    fhirpath: Criteria | None = None

    def fires(self, interaction: str, previous: Doc | None, current: Doc | None,
              resources: Callable[[], tuple[Doc | None, Doc | None]]) -> bool:
        """`previous` / `current`: stored documents (`sp` ...); `resources` parses them lazily."""
        kind = "update" if interaction == "patch" else interaction
        if kind not in self.interactions:
            return False
        tests: list[bool] = []
        if self.previous is not None:
            tests.append(self.result_for_create if previous is None
                         else matches(self.previous, previous))
        if self.current is not None:
            tests.append(self.result_for_delete if current is None or current.get(schema.DELETED)
                         else matches(self.current, current))
        if tests and not (all(tests) if self.require_both else any(tests)):
            return False
        if self.fhirpath is not None:
            prev_res, cur_res = resources()
            result = self.fhirpath(cur_res or {}, {"previous": prev_res or [], "current": cur_res or []})
            return bool(result) and all(v is not False for v in result)
        return True


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    resource_type: str
    triggers: tuple[Trigger, ...]
    # filter name -> search parameter code on resource_type
    filters: dict[str, str] = field(default_factory=dict)
    definition: Doc = field(default_factory=dict, compare=False)


def _filter_of(search: SearchEngine, resource_type: str, query: str | None) -> Doc | None:
    if query is None:
        return None
    params = parse_qsl(query, keep_blank_values=True)
    return search.parse(resource_type, params, strict=True).filter


def _trigger(search: SearchEngine, resource_type: str, item: Doc) -> Trigger:
    criteria = item.get("queryCriteria") or {}
    expression = item.get("fhirPathCriteria")
    return Trigger(
        resource_type=resource_type,
        interactions=frozenset(item.get("supportedInteraction") or ("create", "update", "delete")),
        previous=_filter_of(search, resource_type, criteria.get("previous")),
        current=_filter_of(search, resource_type, criteria.get("current")),
        result_for_create=criteria.get("resultForCreate") == "test-passes",
        result_for_delete=criteria.get("resultForDelete") == "test-passes",
        require_both=bool(criteria.get("requireBoth")),
        fhirpath=compile_fhirpath(expression, None) if expression else None,
    )


def parse_topic(search: SearchEngine, definition: Doc) -> Topic:
    triggers: list[Trigger] = []
    types: set[str] = set()
    for item in definition.get("resourceTrigger", []):
        resource_type = str(item["resource"]).rsplit("/", 1)[-1]
        types.add(resource_type)
        triggers.append(_trigger(search, resource_type, item))
    if len(types) != 1:
        raise ValueError(f"topic {definition.get('url')}: one resource type per topic is supported")
    resource_type = types.pop()
    by_url = {p.url: code for code, p in search.registry.for_type(resource_type).items()}
    filters: dict[str, str] = {}
    for item in definition.get("canFilterBy", []):
        name = str(item["filterParameter"])
        target = by_url.get(item.get("filterDefinition", ""), name)
        if search.param(resource_type, target) is None:
            raise ValueError(f"topic {definition.get('url')}: {resource_type} has no search "
                             f"parameter '{target}' for filter '{name}'")
        filters[name] = target
    return Topic(str(definition["url"]), str(definition.get("title", "")), resource_type,
                 tuple(triggers), filters, definition)


def load_topics(profiles_dir: Path, search: SearchEngine) -> dict[str, Topic]:
    """Every SubscriptionTopic under `profiles_dir`, by canonical URL (a bad one stops start-up)."""
    topics: dict[str, Topic] = {}
    if not profiles_dir.is_dir():
        return topics
    for path in sorted(profiles_dir.glob("SubscriptionTopic-*.json")):
        definition = orjson.loads(path.read_bytes())
        try:
            topic = parse_topic(search, definition)
        except Exception as exc:
            raise ValueError(f"{path}: {exc}") from exc
        topics[topic.url] = topic
    log.info("subscription topics: %s", ", ".join(sorted(topics)))
    return topics
