"""Errors as exceptions that carry their OperationOutcome.

Each class knows its HTTP status and default issue type; `STATUS_TABLE` is the one place that
maps them. Routers never build error responses by hand: they raise, and the app's exception
handler serializes `to_outcome()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, issue type code, text and FHIRPath locations."""

    severity: str  # fatal | error | warning | information
    code: str  # an IssueType code: invalid, structure, required, value, not-found, ...
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out

    @property
    def is_error(self) -> bool:
        return self.severity in ("error", "fatal")


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    if not issues:
        issues = [Issue("information", "informational", "All OK")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


@dataclass
class FhirError(Exception):
    """Base of every error the server answers with an OperationOutcome."""

    diagnostics: str = "Error"
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    code: str = ""
    expression: tuple[str, ...] = ()

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "exception"

    def __post_init__(self) -> None:
        super().__init__(self.diagnostics)

    def all_issues(self) -> list[Issue]:
        if self.issues:
            return self.issues
        return [Issue("error", self.code or self.default_code, self.diagnostics, self.expression)]

    def to_outcome(self) -> dict[str, Any]:
        return operation_outcome(self.all_issues())


class BadRequest(FhirError):
    status = 400
    default_code = "invalid"


class InvalidResource(FhirError):
    """Content that parsed but breaks a profile or a terminology rule (422)."""

    status = 422
    default_code = "processing"


class StructureInvalid(BadRequest):
    """Content that is not a valid R4 structure (unknown element, wrong type, cardinality)."""

    default_code = "structure"


class Unauthorized(FhirError):
    status = 401
    default_code = "login"


class Forbidden(FhirError):
    status = 403
    default_code = "forbidden"


class NotFound(FhirError):
    status = 404
    default_code = "not-found"


class NotSupported(FhirError):
    """A resource type or interaction this server does not offer (404 per FHIR http)."""

    status = 404
    default_code = "not-supported"


class MethodNotAllowed(FhirError):
    status = 405
    default_code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    default_code = "not-supported"


class Conflict(FhirError):
    status = 409
    default_code = "conflict"


class Gone(FhirError):
    status = 410
    default_code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    default_code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    default_code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    default_code = "not-supported"


class TooManyRequests(FhirError):
    status = 429
    default_code = "throttled"


class ServiceUnavailable(FhirError):
    status = 503
    default_code = "transient"


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (down, restarting): retry after a while."""

    @classmethod
    def after(cls, seconds: int, message: str = "The database is unavailable; retry later") -> DatabaseUnavailable:
        return cls(message, headers={"Retry-After": str(seconds)})


class InternalError(FhirError):
    status = 500
    default_code = "exception"


# The one table: error class -> HTTP status (read by docs and tests; classes carry it too).
STATUS_TABLE: dict[type[FhirError], int] = {
    cls: cls.status
    for cls in (
        BadRequest, StructureInvalid, InvalidResource, Unauthorized, Forbidden, NotFound,
        NotSupported, MethodNotAllowed, NotAcceptable, Conflict, Gone, PreconditionFailed,
        PayloadTooLarge, UnsupportedMediaType, TooManyRequests, ServiceUnavailable, DatabaseUnavailable,
        InternalError,
    )
}
