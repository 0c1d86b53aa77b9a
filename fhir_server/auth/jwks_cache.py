"""Fetches and caches remote JWKS documents (trusted issuers, clients' jwks_uri) over httpx."""

from __future__ import annotations

import time
from typing import Any

import httpx
from joserfc.jwk import KeySet

# Never refetch a JWKS more often than this, even for an unknown kid (an attacker could
# otherwise make us hammer the issuer by sending made-up kids).
MIN_REFETCH_SECONDS = 10.0


class JwksCache:
    def __init__(self, ttl_seconds: float = 300.0, timeout: float = 5.0) -> None:
        self._ttl = ttl_seconds
        self._timeout = timeout
        self._entries: dict[str, tuple[KeySet, float]] = {}

    async def _fetch(self, url: str) -> KeySet:
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
            response = await http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        # Keys we cannot use (unknown kty, encryption keys) are skipped, not fatal.
        usable = [k for k in document.get("keys", []) if k.get("use", "sig") == "sig"]
        key_set = KeySet.import_key_set({"keys": usable})
        self._entries[url] = (key_set, time.monotonic())
        return key_set

    async def get(self, url: str, kid: str | None = None) -> KeySet:
        """The key set at `url`; refetched when stale or when it lacks `kid`."""
        entry = self._entries.get(url)
        now = time.monotonic()
        if entry is None or now - entry[1] > self._ttl:
            return await self._fetch(url)
        key_set, fetched_at = entry
        stale_for_kid = kid is not None and not _has_kid(key_set, kid)
        if stale_for_kid and now - fetched_at > MIN_REFETCH_SECONDS:
            return await self._fetch(url)
        return key_set


def _has_kid(key_set: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in key_set.keys)
