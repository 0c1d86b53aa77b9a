"""A local stand-in of a Jitsi Meet deployment with token authentication: `GET /<room>?jwt=`
admits (200, JSON naming who entered and whether as moderator) exactly when prosody's
token check would — HS256 with the app secret, `iss` = app id, `aud`, `sub` = the domain,
`room` = this room (or `*`), within `nbf`/`exp` — and answers 403 otherwise. The real
service cannot be reached from here; this checks the tokens with PyJWT, an implementation
independent of the server's own (joserfc)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

APP_ID = "care-coord"
APP_SECRET = "a-long-shared-secret-for-hs256-tokens-0123456789"
DOMAIN = "meet.standin.test"


class _Jitsi(BaseHTTPRequestHandler):
    entered: list[dict[str, Any]]

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        room = url.path.strip("/")
        token = (parse_qs(url.query).get("jwt") or [""])[0]
        try:
            claims = jwt.decode(token, APP_SECRET, algorithms=["HS256"], audience="jitsi", issuer=APP_ID,
                                options={"require": ["exp", "room", "sub", "iss", "aud"]})
            if claims["sub"] != DOMAIN or claims["room"] not in (room, "*"):
                raise jwt.InvalidTokenError("not for this room")
        except jwt.InvalidTokenError as exc:
            self._answer(403, {"error": str(exc)})
            return
        user = claims.get("context", {}).get("user", {})
        entry = {"room": room, "user": user.get("id"), "name": user.get("name"),
                 "moderator": claims.get("moderator") is True}
        self.entered.append(entry)
        self._answer(200, entry)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def jitsi_standin() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(its URL, the list of who entered)."""
    entered: list[dict[str, Any]] = []
    handler = type("Handler", (_Jitsi,), {"entered": entered})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", entered
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
