"""A Subscription resource read into what the dispatcher acts on (`Spec`), or refused.

Two kinds share the R4 Subscription resource:
- R4 criteria: `criteria` is a search (`Task?owner=Practitioner/x&status=requested`);
- R5 Backport (STU 1.1): `criteria` is a topic's canonical URL, filters in
  `_criteria.extension[backport-filter-criteria]`, payload content in
  `channel._payload.extension[backport-payload-content]`, heartbeat / timeout / max count as
  channel extensions.
Anything this server cannot honour (unknown topic, filter, channel, payload) is refused with
an OperationOutcome (422) when the Subscription is written, never discovered later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import FhirError, InvalidResource
from fhir_server.resource_types import STORED
from fhir_server.search import SearchEngine, SearchQuery
from fhir_server.search.values import date_range
from subscriptions.topics import Topic

Doc = dict[str, Any]
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
BACKPORT_PROFILE = BACKPORT + "backport-subscription"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
CHANNEL_TYPE = BACKPORT + "backport-channel-type"
# Our own channel for in-process subscribers (subscriptions.inprocess); only the server
# itself may create Subscriptions on it.
IN_PROCESS_SYSTEM = "http://fhir.care-coord.example/CodeSystem/subscription-channel-type"
IN_PROCESS = "in-process"
IN_PROCESS_ENDPOINT = "urn:in-process:"

CONTENTS = ("empty", "id-only", "full-resource")
MEDIA_TYPES = ("application/fhir+json", "application/json")
# Search parameters that shape results, not matches: meaningless in criteria.
RESULT_PARAMS = frozenset({"_sort", "_count", "_include", "_revinclude", "_summary", "_elements",
                           "_total", "_contained", "_containedType", "_format", "_pretty"})
DEFAULT_MAX_COUNT = 20
_HEADER = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*)$")


@dataclass(frozen=True)
class Channel:
    type: str  # rest-hook | websocket | in-process
    endpoint: str | None
    headers: tuple[tuple[str, str], ...]
    payload: str | None  # MIME type; None: no body (R4)
    content: str  # empty | id-only | full-resource
    heartbeat: int | None  # seconds
    timeout: int | None  # seconds
    max_count: int


@dataclass(frozen=True)
class Spec:
    id: str
    version: int
    status: str
    kind: str  # criteria | topic
    resource_type: str
    criteria: str
    channel: Channel
    topic: Topic | None = None
    query: SearchQuery | None = None  # R4 criteria
    params: tuple[tuple[str, str], ...] = ()  # R4 criteria, for the database fallback
    filters: tuple[Doc, ...] = ()  # topic filters, ANDed
    end: datetime | None = None

    @property
    def topic_url(self) -> str | None:
        return self.topic.url if self.topic else None

    @property
    def handler(self) -> str | None:
        """The in-process handler's name."""
        endpoint = self.channel.endpoint or ""
        return endpoint[len(IN_PROCESS_ENDPOINT):] if endpoint.startswith(IN_PROCESS_ENDPOINT) else None


def refuse(message: str, where: str = "Subscription") -> InvalidResource:
    return InvalidResource(message, code="not-supported", expression=(where,))


def extensions(element: Any, url: str) -> list[Doc]:
    if not isinstance(element, dict):
        return []
    return [e for e in element.get("extension", []) if isinstance(e, dict) and e.get("url") == url]


def extension_value(element: Any, url: str) -> Any:
    for ext in extensions(element, url):
        for key, value in ext.items():
            if key.startswith("value"):
                return value
    return None


def is_topic_based(resource: Doc) -> bool:
    criteria = str(resource.get("criteria", ""))
    profiles = (resource.get("meta") or {}).get("profile") or []
    return BACKPORT_PROFILE in profiles or criteria.startswith(("http://", "https://", "urn:"))


class SpecParser:
    def __init__(self, search: SearchEngine, topics: dict[str, Topic]) -> None:
        self.search = search
        self.topics = topics

    def parse(self, resource: Doc, *, internal: bool = False) -> Spec:
        """Reads a Subscription; raises InvalidResource (422) for what is not supported."""
        channel = self._channel(resource, internal)
        end = self._end(resource.get("end"))
        common: Doc = {
            "id": str(resource.get("id", "")),
            "version": int((resource.get("meta") or {}).get("versionId", 0) or 0),
            "status": str(resource.get("status", "requested")),
            "criteria": str(resource.get("criteria", "")),
            "end": end,
        }
        if is_topic_based(resource):
            return self._topic(resource, channel, common)
        return self._criteria(resource, channel, common)

    # ------------------------------------------------------------------ criteria

    def _criteria(self, resource: Doc, channel: Channel, common: Doc) -> Spec:
        criteria = common["criteria"]
        resource_type, _, query = criteria.partition("?")
        if resource_type not in STORED:
            raise refuse(f"criteria must be a search on a type this server stores "
                         f"(e.g. Task?status=requested), not '{criteria[:80]}'", "Subscription.criteria")
        params = parse_qsl(query, keep_blank_values=True)
        if any(name.split(":")[0] in RESULT_PARAMS for name, _ in params):
            raise refuse("criteria may not use result parameters (_sort, _include, ...)",
                         "Subscription.criteria")
        parsed = self._search(resource_type, params, "Subscription.criteria")
        return Spec(kind="criteria", resource_type=resource_type, channel=channel, query=parsed,
                    params=tuple(params), **common)

    def _search(self, resource_type: str, params: list[tuple[str, str]], where: str) -> SearchQuery:
        try:
            return self.search.parse(resource_type, params, strict=True)
        except FhirError as exc:
            raise refuse(f"{where} is not a search this server supports: {exc.diagnostics}",
                         where) from None

    # ------------------------------------------------------------------ topics

    def _topic(self, resource: Doc, channel: Channel, common: Doc) -> Spec:
        topic = self.topics.get(common["criteria"])
        if topic is None:
            raise refuse(f"unknown SubscriptionTopic '{common['criteria'][:200]}'; this server "
                         f"publishes: {', '.join(sorted(self.topics))}", "Subscription.criteria")
        filters: list[Doc] = []
        for ext in extensions(resource.get("_criteria"), FILTER_CRITERIA):
            filters.append(self._topic_filter(topic, str(ext.get("valueString", ""))))
        return Spec(kind="topic", resource_type=topic.resource_type, channel=channel, topic=topic,
                    filters=tuple(filters), **common)

    def _topic_filter(self, topic: Topic, text: str) -> Doc:
        where = "Subscription.criteria.extension"
        resource_type, sep, query = text.partition("?")
        if not sep:
            resource_type, query = topic.resource_type, text
        if resource_type != topic.resource_type:
            raise refuse(f"filter '{text[:80]}' is not on {topic.resource_type}, the resource of "
                         f"topic {topic.url}", where)
        params: list[tuple[str, str]] = []
        for name, value in parse_qsl(query, keep_blank_values=True):
            code, colon, modifier = name.partition(":")
            if "." in code or code not in topic.filters:
                raise refuse(f"topic {topic.url} cannot be filtered by '{name[:40]}'; it takes: "
                             f"{', '.join(sorted(topic.filters))}", where)
            params.append((topic.filters[code] + colon + modifier, value))
        if not params:
            raise refuse(f"filter '{text[:80]}' has no criteria", where)
        parsed = self._search(resource_type, params, where)
        if parsed.joins:
            raise refuse("topic filters cannot chain", where)
        return parsed.filter

    # ------------------------------------------------------------------ channel

    def _channel(self, resource: Doc, internal: bool) -> Channel:
        channel = resource.get("channel") or {}
        kind = str(channel.get("type", ""))
        coding = extension_value(channel.get("_type"), CHANNEL_TYPE)
        if isinstance(coding, dict) and coding.get("code") == IN_PROCESS \
                and coding.get("system") == IN_PROCESS_SYSTEM:
            if not internal:
                raise refuse("the in-process channel is for the server's own subscribers",
                             "Subscription.channel.type")
            kind = IN_PROCESS
        elif coding is not None:
            raise refuse("channel type extension not supported", "Subscription.channel.type")
        if kind not in ("rest-hook", "websocket", IN_PROCESS):
            raise refuse(f"channel type '{kind[:40]}' is not supported (rest-hook, websocket)",
                         "Subscription.channel.type")
        endpoint = channel.get("endpoint")
        if kind == "rest-hook" and not endpoint:
            raise refuse("a rest-hook channel needs an endpoint", "Subscription.channel.endpoint")
        if kind == IN_PROCESS and not str(endpoint or "").startswith(IN_PROCESS_ENDPOINT):
            raise refuse("an in-process channel needs an urn:in-process: endpoint",
                         "Subscription.channel.endpoint")
        payload = channel.get("payload")
        if payload is not None and str(payload).split(";")[0].strip() not in MEDIA_TYPES:
            raise refuse(f"payload '{str(payload)[:60]}' is not supported ({', '.join(MEDIA_TYPES)})",
                         "Subscription.channel.payload")
        content = extension_value(channel.get("_payload"), PAYLOAD_CONTENT)
        if content is None:
            content = "full-resource" if payload else "empty"
        if content not in CONTENTS:
            raise refuse(f"payload content '{str(content)[:40]}' is not supported ({', '.join(CONTENTS)})",
                         "Subscription.channel.payload")
        return Channel(
            type=kind,
            endpoint=str(endpoint) if endpoint else None,
            headers=self._headers(channel.get("header") or []),
            payload=str(payload) if payload else None,
            content=str(content),
            heartbeat=self._positive(channel, HEARTBEAT_PERIOD, "heartbeat period"),
            timeout=self._positive(channel, TIMEOUT, "timeout"),
            max_count=self._positive(channel, MAX_COUNT, "max count") or DEFAULT_MAX_COUNT,
        )

    @staticmethod
    def _headers(values: list[Any]) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for value in values:
            match = _HEADER.match(str(value))
            if match is None:
                raise refuse(f"channel header '{str(value)[:60]}' is not 'Name: value'",
                             "Subscription.channel.header")
            out.append((match[1], match[2]))
        return tuple(out)

    @staticmethod
    def _positive(channel: Doc, url: str, name: str) -> int | None:
        value = extension_value(channel, url)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise refuse(f"channel {name} must be a positive whole number of seconds",
                         "Subscription.channel.extension")
        return value

    @staticmethod
    def _end(value: Any) -> datetime | None:
        if not isinstance(value, str):
            return None
        return date_range(value)[0]
