"""Prometheus metrics: requests by interaction, type and status; latency histograms; MongoDB
command time (a pymongo command listener); and, read when scraped, the lags an operator
pages on: outbox (changes not yet matched to subscriptions), notification delivery
(pending, oldest age, failing channels), workflow timers (due and not fired), audit events
not yet stored. One registry per application, so two apps in one process stay apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pymongo import ASCENDING, monitoring

from fhir_server.resource_types import STORED

if TYPE_CHECKING:
    from fhir_server.services import Services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request latency: a read takes ~1-10 ms here, a broad search or a bundle seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMAND_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
# Subscriptions looked at per scrape for the delivery figures (bounded work per scrape).
MAX_SUBSCRIPTIONS = 1000


def type_label(resource_type: str | None) -> str:
    """A bounded label: a stored type, `-` for none, `other` for anything a client made up."""
    if not resource_type:
        return "-"
    return resource_type if resource_type in STORED else "other"


class CommandTimes(monitoring.CommandListener):
    """Time the database spent on each command, as the driver measured it."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self._by_name: dict[str, Any] = {}

    def _observe(self, name: str, micros: int) -> None:
        child = self._by_name.get(name)
        if child is None:
            child = self._by_name[name] = self.histogram.labels(name)
        child.observe(micros / 1e6)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._observe(event.command_name, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._observe(event.command_name, event.duration_micros)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("fhir_requests", "HTTP requests answered, by FHIR interaction, "
                                "resource type and status", ["interaction", "type", "status"], registry=r)
        self.latency = Histogram("fhir_request_duration_seconds", "Time from request to response end, by "
                                 "FHIR interaction", ["interaction"], buckets=LATENCY_BUCKETS, registry=r)
        self.database = Histogram("fhir_database_command_duration_seconds", "MongoDB command time as the "
                                  "driver measured it, by command", ["command"], buckets=COMMAND_BUCKETS,
                                  registry=r)
        self.outbox_lag = Gauge("fhir_outbox_lag_seconds", "Age of the oldest change not yet matched to "
                                "subscriptions (0: none waiting)", registry=r)
        self.outbox_waiting = Gauge("fhir_outbox_unmatched", "Changes not yet matched (at most 1000 counted)",
                                    registry=r)
        self.delivery_pending = Gauge("fhir_notifications_pending", "Notifications numbered but not yet "
                                      "acknowledged by their channel", registry=r)
        self.delivery_lag = Gauge("fhir_notification_delivery_lag_seconds", "Age of the oldest notification "
                                  "not yet delivered", registry=r)
        self.delivery_failing = Gauge("fhir_subscriptions_failing", "Subscriptions whose channel is failing now",
                                      registry=r)
        self.delivery_failures = Gauge("fhir_notification_delivery_failures", "Failed delivery attempts in the "
                                       "current failure streaks", registry=r)
        self.timer_lag = Gauge("fhir_workflow_timer_lag_seconds", "How overdue the most overdue pending workflow "
                               "timer is (0: none due)", registry=r)
        self.timers_due = Gauge("fhir_workflow_timers_due", "Pending workflow timers past their time (at most "
                                "1000 counted)", registry=r)
        self.audit_pending = Gauge("fhir_audit_events_pending", "AuditEvents recorded (write-ahead logged) and "
                                   "not yet stored", registry=r)
        self.commands = CommandTimes(self.database)
        self._children: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    def observe(self, interaction: str, resource_type: str, status: int, seconds: float) -> None:
        key = (interaction, resource_type, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(interaction, resource_type, str(status))
        child.inc()
        latency = self._latency.get(interaction)
        if latency is None:
            latency = self._latency[interaction] = self.latency.labels(interaction)
        latency.observe(seconds)

    async def render(self, services: Services) -> bytes:
        await self.refresh(services)
        # Typed `bytes` here: prometheus_client's own annotation varies between releases.
        body: bytes = generate_latest(self.registry)
        return body

    async def refresh(self, services: Services) -> None:
        """The scrape-time figures: a few bounded, indexed queries."""
        from fhir_server.storage.outbox import OUTBOX
        from subscriptions.store import DELIVERY, NOTIFICATIONS, STATE
        from workflows.timers import COLLECTION as TIMERS
        from workflows.timers import PENDING

        db = services.database.db
        now = datetime.now(UTC)
        oldest = await db[OUTBOX].find_one({"m": False}, {"ts": 1}, sort=[("m", ASCENDING), ("_id", ASCENDING)])
        self.outbox_lag.set(_age(now, oldest["ts"]) if oldest else 0.0)
        self.outbox_waiting.set(len(await db[OUTBOX].find({"m": False}, {"_id": 1}).limit(1000).to_list()))
        state = {d["_id"]: int(d.get("n", 0)) for d in
                 await db[STATE].find({}, {"n": 1}).limit(MAX_SUBSCRIPTIONS).to_list()}
        delivery = {d["_id"]: d for d in await db[DELIVERY].find({"_id": {"$in": list(state)}}).to_list()}
        pending, first_waiting = 0, []
        for sub, n in state.items():
            acked = int(delivery.get(sub, {}).get("acked", 0))
            if n > acked:
                pending += n - acked
                first_waiting.append(f"{sub}:{acked + 1}")
        self.delivery_pending.set(pending)
        waiting = await db[NOTIFICATIONS].find({"_id": {"$in": first_waiting}}, {"at": 1}).to_list() \
            if first_waiting else []
        self.delivery_lag.set(max((_age(now, d["at"]) for d in waiting if d.get("at")), default=0.0))
        self.delivery_failing.set(sum(1 for d in delivery.values() if d.get("failing_since")))
        self.delivery_failures.set(sum(int(d.get("attempts", 0)) for d in delivery.values()))
        due = {"status": PENDING, "ready": {"$lte": now}}
        overdue = await db[TIMERS].find_one(due, {"ready": 1}, sort=[("status", ASCENDING), ("ready", ASCENDING)])
        self.timer_lag.set(_age(now, overdue["ready"]) if overdue else 0.0)
        self.timers_due.set(len(await db[TIMERS].find(due, {"_id": 1}).limit(1000).to_list()))
        self.audit_pending.set(services.audit.waiting() if services.audit is not None else 0)


def _age(now: datetime, then: object) -> float:
    if not isinstance(then, datetime):
        return 0.0
    at: datetime = then if then.tzinfo else then.replace(tzinfo=UTC)
    return max(0.0, float((now - at).total_seconds()))
