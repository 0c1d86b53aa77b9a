"""The interceptors every server runs, in one list; the app factory registers them in order
(their hooks carry their own order numbers). A deployment adds its own after these."""

from __future__ import annotations

from pymongo import IndexModel

from fhir_server.audit.patients import PatientFinder
from fhir_server.audit.settings import AuditSettings
from fhir_server.audit.writer import AuditWriter
from fhir_server.config import Settings
from fhir_server.consent import ConsentEngine, ConsentSettings, consent_indexes
from fhir_server.search import SearchEngine
from fhir_server.storage.database import Database
from fhir_server.storage.repository import Repository
from fhir_server.validation import Validator
from interceptors.audit import AuditInterceptor, audit_indexes
from interceptors.consent import ConsentInterceptor
from interceptors.outbox import OutboxInterceptor
from interceptors.provenance import ProvenanceInterceptor
from interceptors.validation import ValidationInterceptor


def default_interceptors(settings: Settings, validator: Validator | None = None) -> list[object]:
    """Built-in interceptors; `validator` is shared with `$validate` when the app passes it."""
    if validator is None:
        validator = Validator(settings.profiles_dir)
    return [ValidationInterceptor(validator)]


def change_interceptors() -> list[object]:
    """Interceptors every write path runs inside its transaction: the outbox of change events
    (one per committed change; read by the subscription dispatcher)."""
    return [OutboxInterceptor()]


def privacy_indexes() -> dict[str, list[IndexModel]]:
    """Indexes the Consent and audit interceptors query by (declared before start-up)."""
    return {**consent_indexes(), **audit_indexes()}


def consent_engine(settings: Settings, auth_enabled: bool, database: Database,
                   search: SearchEngine) -> ConsentEngine | None:
    """The one Consent engine (the access decision and the label bookkeeping share it); None
    when Consent is off."""
    consent = ConsentSettings.from_settings(settings, auth_enabled)
    if not consent.enabled:
        return None
    return ConsentEngine(database, search, consent, settings.base_url)


def audit_writer(settings: Settings, auth_enabled: bool, repository: Repository) -> AuditWriter | None:
    """The background AuditEvent writer the app starts and stops; None when audit is off."""
    audit = AuditSettings.from_settings(settings, auth_enabled)
    return AuditWriter(repository, audit) if audit.enabled else None


def privacy_interceptors(settings: Settings, auth_enabled: bool, repository: Repository,
                         writer: AuditWriter | None, engine: ConsentEngine | None = None) -> list[object]:
    """Consent's label bookkeeping (300), provenance (400) and audit (900), each on unless
    configured off (all three are off by default in dev mode, where no one is authenticated).
    Consent's decisions are the access decision's (interceptors/access.py)."""
    out: list[object] = []
    if engine is None:
        engine = consent_engine(settings, auth_enabled, repository.database, repository.search_engine)
    if engine is not None:
        out.append(ConsentInterceptor(engine))
    if AuditSettings.from_settings(settings, auth_enabled).provenance:
        out.append(ProvenanceInterceptor(repository))
    if writer is not None:
        out.append(AuditInterceptor(writer, PatientFinder(repository.search_engine), settings.base_url))
    return out
