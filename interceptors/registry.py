"""The interceptors of the server, built once, and the one table of the order they run in.

`build_interceptors` builds every interceptor, registers each at its number in `ORDER` and
freezes the registry; the composition root (`fhir_server.services`) calls it before it
builds the repository on that registry, so the hooks that run never change while the server
serves. Interceptor modules carry no numbers: `@hook(Pointcut.X)` marks a method, this table
says when it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pymongo import IndexModel

from fhir_server.access import AccessPolicy
from fhir_server.audit.patients import PatientFinder
from fhir_server.audit.settings import AuditSettings
from fhir_server.audit.writer import AuditWriter
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.tokens import TokenValidator
from fhir_server.config import Settings
from fhir_server.consent import ConsentEngine, ConsentSettings, consent_indexes
from fhir_server.hooks import HookRegistry
from fhir_server.messaging.store import messaging_indexes
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database
from fhir_server.storage.pipeline import Versions
from fhir_server.storage.sort_buckets import SortBuckets, sort_bucket_indexes
from fhir_server.storage.sort_values import SortValues, sort_value_indexes
from fhir_server.validation import Validator
from interceptors.access import AccessInterceptor
from interceptors.audit import AuditInterceptor, audit_indexes
from interceptors.handoff_rules import HandoffRules
from interceptors.messaging_rules import MessagingRules
from interceptors.outbox import OutboxInterceptor
from interceptors.provenance import ProvenanceInterceptor
from interceptors.referral_rules import ReferralRules
from interceptors.scheduling_rules import SchedulingRules
from interceptors.smart import SmartInterceptor
from interceptors.sort_buckets import SortBucketInterceptor
from interceptors.validation import ValidationInterceptor
from subscriptions.endpoints import EndpointPolicy
from subscriptions.guard import SubscriptionGuard
from subscriptions.model import SpecParser
from subscriptions.topics import load_topics

# Interceptor (or slot) -> its number: lower runs first at every hook point. The only place
# these numbers live.
ORDER: dict[str, int] = {
    # Audit notes each request before anything can refuse it, so that a refusal is recorded.
    "audit-track": 1,
    # A malformed body is refused as such, whoever sends it.
    "validation": 10,
    # Authentication: sets the request's principal.
    "smart": 200,
    # The one access decision (SMART scopes + Consent), after authentication.
    "access": 210,
    # After SMART has authorized a Subscription write, before Consent.
    "subscription-guard": 250,
    # The coordination and scheduling rules: who may set which status, which transitions the
    # state machines allow (after access has decided the caller may write at all).
    "handoff-rules": 260,
    "referral-rules": 270,
    "scheduling-rules": 280,
    "messaging-rules": 290,
    # Consent's collect/correct provisions, checked inside the write's transaction.
    "access-store": 300,
    "provenance": 400,
    # The change event is the last write of a transaction.
    "outbox": 500,
    # After the commit: the sort-key buckets search pages are placed by (search.seek).
    "sort-buckets": 600,
    # A deployment's own interceptors: after every built-in decision, before audit notes
    # what leaves.
    "deployment": 800,
    # Last: audit sees the decision of everything before it.
    "audit": 900,
}


@dataclass
class Interceptors:
    """What `build_interceptors` built: the frozen registry and the parts others run."""

    hooks: HookRegistry
    guard: SubscriptionGuard  # the subscription service shares its parser and policy
    audit: AuditWriter | None  # started and stopped with the app; None when audit is off
    # Collections and indexes the interceptors query by (declared before start-up).
    indexes: dict[str, list[IndexModel]] = field(default_factory=dict)


def _registry(interceptors: Sequence[tuple[str, object]]) -> HookRegistry:
    hooks = HookRegistry()
    for name, interceptor in interceptors:
        hooks.register(interceptor, ORDER[name], ORDER)
    hooks.freeze()
    return hooks


def build_interceptors(
    settings: Settings,
    auth: AuthSettings,
    tokens: TokenValidator,
    database: Database,
    search: SearchEngine,
    validator: Validator,
    extra: Sequence[object] = (),
) -> Interceptors:
    """Every interceptor, once, in one frozen registry. SMART only with auth on; Consent,
    provenance and audit each on unless configured off (all three off by default in dev
    mode, where no one is authenticated). `extra`: a deployment's own, at "deployment"."""
    outbox = OutboxInterceptor()
    guard = SubscriptionGuard(SpecParser(search, load_topics(settings.profiles_dir, search)),
                              EndpointPolicy(settings.subscriptions.allowed_hosts))
    built: list[tuple[str, object]] = [("validation", ValidationInterceptor(validator))]
    consent = ConsentSettings.from_settings(settings, auth.enabled)
    engine = ConsentEngine(database, search, consent, settings.base_url) if consent.enabled else None
    if auth.enabled:
        built.append(("smart", SmartInterceptor(tokens)))
        # With auth on, every path data leaves or enters by asks one access decision.
        built.append(("access", AccessInterceptor(AccessPolicy(search, engine))))
    built += [("subscription-guard", guard), ("outbox", outbox)]
    built.append(("referral-rules", ReferralRules(database.db, settings.base_url)))
    built.append(("handoff-rules", HandoffRules(database.db)))
    built.append(("scheduling-rules", SchedulingRules()))  # the Appointment state machine
    built.append(("messaging-rules", MessagingRules(database, settings.base_url)))
    built.append(("sort-buckets", SortBucketInterceptor(SortBuckets(database.db), search,
                                                        SortValues(database.db))))
    audit = AuditSettings.from_settings(settings, auth.enabled)
    writer: AuditWriter | None = None
    # Provenance and AuditEvents are the server's own records of a change: the change's
    # commit stores them (its SessionWriter), so no interceptor calls back into the repository.
    if audit.provenance:
        built.append(("provenance", ProvenanceInterceptor(settings.base_url)))
    if audit.enabled:
        # Reads' AuditEvents are stored in batches from a write-ahead log, outside any write.
        writer = AuditWriter(database, Versions(search), audit)
        built.append(("audit", AuditInterceptor(writer, PatientFinder(search), settings.base_url)))
    built += [("deployment", interceptor) for interceptor in extra]
    return Interceptors(_registry(built), guard, writer, {**consent_indexes(), **audit_indexes(),
                                                          **messaging_indexes(), **sort_bucket_indexes(),
                                                          **sort_value_indexes()})
