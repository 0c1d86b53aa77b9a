"""A rest-hook receiver for trying Subscriptions from a terminal (docs/subscriptions.md).

    python3 tools/hook_receiver.py [PORT]      # default 9000, listens on 127.0.0.1

Answers every POST with 200 and prints one line per request: the time, the path, the
Content-Type, the body's size and, for a FHIR Bundle, its type and the event numbers of its
SubscriptionStatus. Standard library only, so any Python 3 runs it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _describe(body: bytes) -> str:
    if not body:
        return "empty body"
    try:
        value: Any = json.loads(body)
    except ValueError:
        return f"{len(body)} bytes"
    kind = value.get("resourceType") if isinstance(value, dict) else None
    if kind != "Bundle":
        return f"{len(body)} bytes: {kind} {value.get('id', '') if isinstance(value, dict) else ''}".rstrip()
    entries = value.get("entry") or [{}]
    status = entries[0].get("resource") or {}
    parameters = {p.get("name"): p for p in status.get("parameter", [])}
    kind = parameters.get("type", {}).get("valueCode", value.get("type"))
    events = [part.get("valueString") for p in status.get("parameter", []) if p.get("name") == "notification-event"
              for part in p.get("part", []) if part.get("name") == "event-number"]
    return f"{len(body)} bytes: Bundle {kind}, events {','.join(events) or '-'}, {len(entries) - 1} more entries"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # http.server's name for it
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        kind = self.headers.get("Content-Type") or "-"
        print(f"{time.strftime('%H:%M:%S')} POST {self.path} ({kind}) {_describe(body)}", flush=True)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is printed by do_POST


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"receiving on http://127.0.0.1:{port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly
        server.serve_forever()


if __name__ == "__main__":
    main()
