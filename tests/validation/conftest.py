"""One Validator for the whole session (compiling the tables takes ~80 ms), built from the
repository's own profiles/ folder."""

from __future__ import annotations

import pytest

from fhir_server.config import DEFAULT_PROFILES_DIR
from fhir_server.validation import Validator


@pytest.fixture(scope="session")
def validator() -> Validator:
    return Validator(DEFAULT_PROFILES_DIR)
