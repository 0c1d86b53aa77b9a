"""The interceptors every server runs, in one list; the app factory registers them in order
(their hooks carry their own order numbers). A deployment adds its own after these."""

from __future__ import annotations

from fhir_server.config import Settings
from fhir_server.validation import Validator
from interceptors.validation import ValidationInterceptor


def default_interceptors(settings: Settings, validator: Validator | None = None) -> list[object]:
    """Built-in interceptors; `validator` is shared with `$validate` when the app passes it."""
    if validator is None:
        validator = Validator(settings.profiles_dir)
    return [ValidationInterceptor(validator)]
