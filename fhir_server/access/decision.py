"""One request's access decision: SMART scopes and Consent, compiled once, three questions.

- `query_filter(type)`: the MongoDB filter every query of the read pipeline ANDs in (what
  this request may see of a type, as a query: never counted, paged or included otherwise);
- `may_release(resource)`: may this stored version leave the server (the last gate; a direct
  read of a denied resource is 403);
- `may_write(type, new_version)`: may this new version be written, judged by its COMPUTED
  patient compartments, the same `compartments.Patient` field reads are judged by. A
  patient-scoped write must land in the patient's own compartment and in no other patient's.
Around a write, Consent adds two checks: `may_change(previous)` before an update, patch or
delete (a withheld resource is 403, as a read is; so is one a `correct` provision covers), and
`may_store` inside the transaction (`collect` / `correct` provisions on the stored version).

Fails closed: a context without a principal is refused (401), an auth-disabled principal on
a server with auth on is refused (403); only the SYSTEM principal (the server's own work,
never a token) is unrestricted. Consent's reach (docs/consent.md): it governs what leaves
the server, for every requester; it governs writes only where a provision names `collect` or
`correct`; it never governs Consent resources (scopes do, and a patient manages her own).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fhir_server.access.compartments import patient_compartments
from fhir_server.auth.granular import matches_params
from fhir_server.auth.scopes import Access, Grant, Scope, decide, parse_scope_set
from fhir_server.consent.model import relative_reference
from fhir_server.context import Principal, RequestContext
from fhir_server.errors import Forbidden, Unauthorized
from fhir_server.hooks import DocumentCheck
from fhir_server.search import SearchEngine
from fhir_server.search.engine import BY_PARAMETER
from fhir_server.search.keyset import merge
from fhir_server.storage import seen
from fhir_server.storage.schema import version_key

if TYPE_CHECKING:
    from pymongo.asynchronous.client_session import AsyncClientSession

    from fhir_server.consent import ConsentEngine

Doc = dict[str, Any]
COMPARTMENT_FIELD = "compartments.Patient"


def in_patient_compartment(resource_type: str, patient: str) -> Doc:
    """The filter: documents of `resource_type` in Patient/`patient`'s compartment."""
    code = BY_PARAMETER.get(resource_type)
    return {f"sp.{code}": f"Patient/{patient}"} if code else {COMPARTMENT_FIELD: patient}


NOTHING: Doc = {"_id": {"$in": []}}
# Read-type interactions keep their own permission letter only for the resource they name;
# any other type they touch (_include, _revinclude) is searched.
_DIRECT = frozenset({"read", "vread", "history", "history-instance"})
# A write looks up what it changes with its own permission letter (c/u/d), not with read:
# write scopes do not imply read, and read scopes do not let a client change anything.
_WRITES = frozenset({"create", "update", "patch", "delete"})
# Records the server writes about changes and accesses: they leave only to an audit scope.
AUDIT_RECORDS = frozenset({"AuditEvent", "Provenance"})
_MEMO = "access.decision"
# Types that hold no patient's data and have no patient compartment, so a `patient/` scope on
# them cannot mean "within the patient's compartment" (which would grant nothing): a
# Subscription is confined to its owner instead (subscriptions' FILTER_QUERY), and what it
# delivers is read as that owner, through this same decision; the Questionnaire a patient
# answers is a definition, read as it is and written by no patient-context token. Nothing
# else widens: every other type stays compartment-bound.
PATIENT_SCOPE_UNCONFINED = frozenset({"Subscription"})
PATIENT_SCOPE_UNCONFINED_READS = frozenset({"Questionnaire"})

Matcher = Callable[[dict[str, Any], list[tuple[str, str]]], bool]


class NoPrincipal(Unauthorized):
    """A context reached the access decision without a principal: a bug upstream (every
    request gets one at INCOMING_REQUEST, the server's own work uses SYSTEM). Refused."""


def holds_audit_scope(principal: Principal, resource_type: str) -> bool:
    """A `user/` or `system/` scope naming `resource_type` itself (not `*`) with read or
    search: an auditor's scope. Only it releases AuditEvents and Provenance beyond the
    patient's own."""
    return any(s.context in ("user", "system") and s.resource_type == resource_type
               and s.permissions & {"r", "s"} for s in parse_scope_set(principal.scopes))


class AccessPolicy:
    """Built once at start-up (auth on): what every request's decision is compiled from."""

    def __init__(self, search: SearchEngine, consent: ConsentEngine | None = None, *,
                 matcher: Matcher = matches_params) -> None:
        self.search = search
        self.consent = consent
        self.matcher = matcher

    def decision(self, context: RequestContext) -> AccessDecision:
        """This request's decision, compiled on first use and kept in the context."""
        found = context.attributes.get(_MEMO)
        if isinstance(found, AccessDecision) and found.context is context:
            return found
        decision = AccessDecision(self, context)
        context.attributes[_MEMO] = decision
        return decision

    def compartments_of(self, resource_type: str, resource: dict[str, Any]) -> list[str]:
        return patient_compartments(self.search, resource_type, resource)


class AccessDecision:
    def __init__(self, policy: AccessPolicy, context: RequestContext) -> None:
        principal = context.principal
        if principal is None:
            raise NoPrincipal("The request has no authenticated principal",
                              headers={"WWW-Authenticate": 'Bearer realm="fhir"'})
        if principal.kind == "auth-disabled":
            raise Forbidden("A request made while auth was disabled cannot act with auth on")
        self.policy = policy
        self.context = context
        self.principal = principal
        self.unrestricted = principal.is_server
        self._scopes: tuple[Scope, ...] = parse_scope_set(principal.scopes)
        self._access: dict[tuple[str, str], Access] = {}
        self._user = relative_reference(principal.fhir_user or "", context.base_url)

    # ------------------------------------------------------------------ SMART scopes

    def access(self, resource_type: str, interaction: str) -> Access:
        key = (resource_type, interaction)
        if key not in self._access:
            access = decide(self._scopes, resource_type, interaction, self.principal.patient)
            if access.allowed and (resource_type in PATIENT_SCOPE_UNCONFINED or (
                    resource_type in PATIENT_SCOPE_UNCONFINED_READS and interaction not in _WRITES)):
                access = Access(tuple(dict.fromkeys(Grant(None, g.params) for g in access.grants)))
            self._access[key] = access
        return self._access[key]

    def _read_interaction(self, resource_type: str) -> str:
        context = self.context
        if context.interaction in _WRITES and resource_type == context.resource_type:
            return context.interaction
        if context.interaction in _DIRECT and resource_type == context.resource_type:
            if context.interaction == "history" and context.resource_id is None:
                return "history-type"  # a type's or the system's history is a search
            return context.interaction
        return "search"

    def _target(self, resource_type: str) -> bool:
        """The resource a read, vread or write names itself (checked one by one, so that a
        Consent-withheld one is answered 403 rather than 'not known')."""
        return resource_type == self.context.resource_type and self.context.interaction in (
            "read", "vread", *_WRITES)

    def _grant_holds(self, grant: Grant, resource: dict[str, Any], compartments: list[str] | None,
                     *, exclusive: bool) -> bool:
        if grant.patient is not None:
            found = compartments if compartments is not None else self.policy.compartments_of(
                str(resource.get("resourceType")), resource)
            if grant.patient not in found:
                return False
            if exclusive and any(p != grant.patient for p in found):
                return False  # a patient's write must not land in another patient's record
        return not grant.params or self.policy.matcher(resource, list(grant.params))

    def _holds(self, access: Access, resource: dict[str, Any], compartments: list[str] | None = None,
               *, exclusive: bool = False) -> bool:
        return access.unrestricted or any(
            self._grant_holds(g, resource, compartments, exclusive=exclusive) for g in access.grants)

    def _scope_filter(self, resource_type: str) -> Doc | None:
        interaction = self._read_interaction(resource_type)
        access = self.access(resource_type, interaction)
        if not access.allowed:
            if interaction not in ("search", "history-type"):
                # A direct read or write of a type the token may not touch that way at all:
                # say so. (A resource merely outside the compartment stays a silent 404.)
                raise Forbidden(f"The access token does not allow {interaction} on {resource_type}")
            return NOTHING
        if access.unrestricted:
            return None
        alternatives: list[Doc] = []
        for grant in access.grants:
            parts: list[Doc] = []
            if grant.patient is not None:
                parts.append(in_patient_compartment(resource_type, grant.patient))
            if grant.params:
                parts.append(self.policy.search.filter_for(resource_type, list(grant.params)))
            if not parts:
                return None
            alternatives.append(parts[0] if len(parts) == 1 else {"$and": parts})
        return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}

    def _audit_filter(self, resource_type: str) -> Doc | None:
        """AuditEvents and Provenance: an auditor's scope sees them, the patient her own."""
        if resource_type not in AUDIT_RECORDS or self.context.interaction in _WRITES:
            return None
        if holds_audit_scope(self.principal, resource_type):
            return None
        if self._user.startswith("Patient/"):
            return in_patient_compartment(resource_type, self._user[len("Patient/"):])
        return NOTHING

    # ------------------------------------------------------------------ Consent

    def _consent_governs(self, resource_type: str) -> bool:
        # Consents are governed by scopes, never by other Consents (a restrictive Consent
        # must not keep anyone from recording the next one).
        return self.policy.consent is not None and resource_type != "Consent"

    # ------------------------------------------------------------------ the three questions

    async def query_filter(self, resource_type: str) -> Doc | None:
        """What this request may see of `resource_type`, as a filter; None: everything."""
        if self.unrestricted:
            return None
        out: Doc = {}
        for part in (self._scope_filter(resource_type), self._audit_filter(resource_type)):
            if part:
                out = merge(out, part)
        return out or None

    def query_check(self, resource_type: str) -> DocumentCheck | None:
        """Consent's part of what this request may see of `resource_type`: a check of each
        candidate document (a bounded filter cannot say it at scale; docs/consent.md, Scale).
        A direct read of the target is checked on release instead (`may_release`)."""
        consent = self.policy.consent
        if self.unrestricted or consent is None or not self._consent_governs(resource_type) \
                or self._target(resource_type):
            return None
        return consent.check(self.context, resource_type)

    def judges_on_release(self, resource_type: str) -> bool:
        """Whether `may_release` asks Consent about a stored document of `resource_type`
        (the read's own target): the read then keeps the document's index fields for it."""
        return not self.unrestricted and self._consent_governs(resource_type) and self._target(resource_type)

    async def may_release(self, resource: dict[str, Any]) -> bool:
        """May this stored version leave the server now?"""
        if self.unrestricted:
            return True
        resource_type = str(resource.get("resourceType") or self.context.resource_type)
        access = self.access(resource_type, self._read_interaction(resource_type))
        if not (access.allowed and self._holds(access, resource)):
            return False
        if resource_type in AUDIT_RECORDS and self._audit_filter(resource_type) == NOTHING:
            return False
        if self._consent_governs(resource_type) and self._target(resource_type):
            return not await self._consent_denies(resource, action="access", history=True)
        return True

    def may_write(self, resource_type: str, interaction: str, new_version: dict[str, Any] | None,
                  previous: dict[str, Any] | None = None, *,
                  compartments: list[str] | None = None) -> None:
        """Raises Forbidden unless the scopes allow writing `new_version` (None: a delete) over
        `previous`. `compartments`: the new version's, when the write pipeline computed them."""
        if self.unrestricted:
            return
        if interaction == "create" and new_version is not None and resource_type == "Patient" \
                and self.context.interaction == "create":
            # POST assigns a new id: the body's id never names the stored Patient.
            new_version = {k: v for k, v in new_version.items() if k != "id"}
            compartments = None
        access = self.access(resource_type, interaction)
        if not access.allowed:
            raise Forbidden(f"The access token does not allow {interaction} on {resource_type}")
        if new_version is not None and not self._holds(access, new_version, compartments, exclusive=True):
            raise Forbidden(f"The access token does not allow {interaction} on this {resource_type} "
                            f"(outside the patient in context, into another patient's record, "
                            f"or outside the scope)")
        if previous is not None and not self._holds(access, previous):
            raise Forbidden(f"The access token does not allow {interaction} on this {resource_type} "
                            f"(outside the patient in context or the scope)")
        if resource_type == "Consent":
            self._may_administer_consent(new_version, previous)

    # ------------------------------------------------------------------ writes and Consent

    def _may_administer_consent(self, *resources: dict[str, Any] | None) -> None:
        """A patient changes her own Consents only; a RelatedPerson none (a family member must
        not widen their own access); everyone else as their scopes allow."""
        if self._user.startswith("RelatedPerson/"):
            raise Forbidden("A RelatedPerson cannot change a patient's Consent")
        if not self._user.startswith("Patient/"):
            return
        for resource in resources:
            if resource is None:
                continue
            patient = resource.get("patient") or {}
            ref = relative_reference(str(patient.get("reference", "")), self.context.base_url)
            if ref != self._user:
                raise Forbidden("A patient can change their own Consents only")

    async def may_change(self, resource_type: str, previous: dict[str, Any]) -> None:
        """Before an update, patch or delete of the stored `previous`: a Consent that withholds
        it from this requester makes it 403 (as a read is), and so does one whose provision
        names `correct` for it (the new version is checked again in the transaction)."""
        if self.unrestricted or not self._consent_governs(resource_type):
            return
        if await self._consent_denies(previous, action="access", history=False):
            raise Forbidden(f"access to {resource_type}/{previous.get('id')} is not permitted")
        if await self._consent_denies(previous, action="correct", history=False):
            raise Forbidden(f"A Consent of the patient does not permit this change to {resource_type}")

    async def may_store(self, resource_type: str, resource_id: str, interaction: str,
                        session: AsyncClientSession | None = None, *, stored: Doc | None = None) -> None:
        """Inside the write's transaction: the stored new version must not fall where a
        Consent denies this requester `collect` (a create) or `correct` (a change).
        `stored`: that version's current document as the write built it (else it is read)."""
        consent = self.policy.consent
        if self.unrestricted or consent is None or not self._consent_governs(resource_type) \
                or resource_type in AUDIT_RECORDS:
            return
        action = "collect" if interaction == "create" else "correct"
        if await consent.denies(self.context, resource_type, {"_id": resource_id}, history=False,
                                action=action, session=session, doc=stored):
            raise Forbidden(f"A Consent of the patient does not permit this change to {resource_type}")

    async def _consent_denies(self, resource: dict[str, Any], *, action: str, history: bool) -> bool:
        consent = self.policy.consent
        if consent is None:
            return False
        rtype = str(resource.get("resourceType"))
        if history:
            version = (resource.get("meta") or {}).get("versionId")
            # The document the read found (same version, same index fields), if it kept it.
            found = seen.recall(self.context, rtype, str(resource.get("id")), int(str(version))) \
                if str(version).isdigit() else None
            key: Doc = {"_id": version_key(rtype, str(resource.get("id")), str(version))}
        else:
            found = None
            key = {"_id": resource.get("id")}
        return await consent.denies(self.context, rtype, key, history=history, action=action, doc=found)
