"""What observability adds to one read, in CPU time, measured in-process (robust on a loaded
machine, where the end-to-end bench/observability.py's differences drown in noise).

Per request a read pays: the Observe middleware (request id, metrics, and with tracing the
server span), one repository call (its span, with tracing) and, for an auth-off read, one
MongoDB command (the metrics histogram, and its span with tracing). Each piece is timed
with `time.process_time` over many iterations (the tracing exporter's thread included:
spans are exported by OTLP/HTTP to a local sink), the bare piece subtracted; the sum is set
beside the CPU of a whole read, which bench/rest.py measures (`--read-ms`).

    .venv/bin/python bench/observability_micro.py [--n 20000] [--read-ms 1.17]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.observability import Sink
from bench.rest import free_port
from fhir_server.api.route import SCOPE_KEY, routed
from fhir_server.api.routes import ROUTES
from fhir_server.observability.metrics import Metrics
from fhir_server.observability.middleware import Observe

READ = next(r for r in ROUTES if r.interaction == "read")
SCOPE = {"type": "http", "method": "GET", "path": "/fhir/Task/1", "headers": [(b"host", b"x")]}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope[SCOPE_KEY] = READ
    scope["path_params"] = {"type": "Task", "id": "1"}
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def send(message: dict[str, Any]) -> None:
    pass


def cpu_per_call(n: int, run: Any) -> float:
    """µs of process CPU per call of the coroutine factory `run`."""
    async def loop() -> None:
        for _ in range(n):
            await run()
    t0 = time.process_time()
    asyncio.run(loop())
    return (time.process_time() - t0) / n * 1e6


def command_events(i: int) -> tuple[Any, Any]:
    started = SimpleNamespace(command_name="find", command={"find": "Task"}, database_name="fhir",
                              request_id=i, connection_id=("127.0.0.1", 1))
    done = SimpleNamespace(command_name="find", duration_micros=300, request_id=i, connection_id=("127.0.0.1", 1))
    return started, done


def measure(n: int, metrics: Metrics | None, tracing: Any) -> float:
    """µs of CPU per read added by the middleware, one repository call and one command."""
    bare = cpu_per_call(n, lambda: app(dict(SCOPE), receive, send))
    middleware = Observe(app, routed=routed, metrics=metrics, tracing=tracing, prefix="/fhir")
    listeners = [x.commands for x in (metrics, tracing) if x is not None]

    class Repo:
        async def read(self) -> None:
            for listener in listeners:
                started, done = command_events(id(self))
                listener.started(started)
                listener.succeeded(done)

    repo = Repo()
    if tracing is not None:
        tracing.instrument(repo)

    async def inner(scope: dict[str, Any], rcv: Any, snd: Any) -> None:
        await repo.read()
        await app(scope, rcv, snd)

    middleware.app = inner
    observed = cpu_per_call(n, lambda: middleware(dict(SCOPE), receive, send))
    if tracing is not None:
        t0 = time.process_time()
        tracing.shutdown()  # export what is left: its CPU belongs to these requests
        observed += (time.process_time() - t0) / n * 1e6
    return observed - bare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--read-ms", type=float, default=1.17,
                        help="CPU of one auth-off read, server + database (bench/rest.py)")
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", free_port()), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.server_address[1]}"
    from fhir_server.observability.tracing import Tracing

    print(f"load average: {os.getloadavg()[0]:.1f}; per read (middleware + 1 repository call + 1 command), "
          f"CPU added, vs {args.read_ms} ms for a whole read:")
    rows = [("request id only (metrics off)", lambda: (None, None)),
            ("metrics on (the default)", lambda: (Metrics(), None)),
            ("metrics + OTel, every request", lambda: (Metrics(), Tracing()))]
    for name, build in rows:
        metrics, tracing = build()
        added = measure(args.n, metrics, tracing)
        print(f"  {name:<34} {added:7.1f} µs   {added / (args.read_ms * 1000) * 100:5.1f} % of a read")
    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
    os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0.01"
    added = measure(args.n, Metrics(), Tracing())
    print(f"  {'metrics + OTel, 1 % sampled':<34} {added:7.1f} µs   {added / (args.read_ms * 1000) * 100:5.1f} % of a read")
    sink.shutdown()


if __name__ == "__main__":
    main()
