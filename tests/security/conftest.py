"""The SMART-enabled server fixtures (secure_server, mint, secure) live in tests/conftest.py,
so that every test folder can use them; `Mint` stays importable from here."""

from tests.conftest import Mint

__all__ = ["Mint"]
