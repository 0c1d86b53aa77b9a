"""The Consent tests' world (Anna, her people, the auditor) for the request-id tests."""

from tests.consent.conftest import tokens, world

__all__ = ["tokens", "world"]
