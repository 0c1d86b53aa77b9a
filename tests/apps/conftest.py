"""The apps run against the SMART server of tests/clients (auth on, our login page)."""

from tests.clients.conftest import smart, smart_server  # noqa: F401 (fixtures used here too)
