"""What observability costs a read: GET /Task/{id} (auth off, so nothing else differs) on
three servers over one embedded database, in one run, interleaved: metrics off
(`FHIR_METRICS=off`); metrics on (the default: request counters, latency histograms, a
MongoDB command listener); metrics and OpenTelemetry on (`FHIR_OTEL=on`: a span per
request, per repository call and per MongoDB command, exported by OTLP/HTTP to a local sink
that answers 200 to everything, in this process); and OpenTelemetry with 1 % of requests
sampled (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.01`). CPU per request from /proc (server +
database), as bench/rest.py measures it. JSON logs cost nothing per request (a read logs
nothing unless uvicorn's access log is on).

    .venv/bin/python bench/observability.py [--clients 16] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rest import Meter, Server, free_port, idle_rates, wait_up, wrk
from fhir_server.embedded_db import EmbeddedDatabase


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
    sink = ThreadingHTTPServer(("127.0.0.1", free_port()), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.server_address[1]}"}
    off = {"FHIR_AUTH_DISABLED": "1"}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as db:
        assert db._process is not None
        servers = {
            "metrics off": Server("metrics off", db.uri, "obs_off", Path(tmp) / "a", {**off, "FHIR_METRICS": "off"}),
            "metrics on": Server("metrics on", db.uri, "obs_metrics", Path(tmp) / "b", off),
            "metrics + OTel": Server("metrics + OTel", db.uri, "obs_otel", Path(tmp) / "c",
                                     {**off, "FHIR_OTEL": "on", **otlp}),
            "OTel, 1% sampled": Server("OTel, 1% sampled", db.uri, "obs_otel_1", Path(tmp) / "d", {
                **off, "FHIR_OTEL": "on", **otlp, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.01"}),
        }
        try:
            for s in servers.values():
                wait_up(s.base, s.process)
                s.seed()
            meter = Meter(db._process.pid, idle_rates([db._process.pid, *(s.process.pid for s in servers.values())]))
            results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for turn in range(args.rounds):
                print(f"-- round {turn + 1}")
                for name, s in servers.items():
                    results[name].append(meter.measure(s.process.pid, lambda n=name, s=s: wrk(  # type: ignore[misc]
                        n, f"{s.base}/Task/{s.task_id}", args.clients, args.seconds)))
        finally:
            for s in servers.values():
                s.stop()
            sink.shutdown()
    base = results["metrics off"]
    print("\nGET /Task/{id}, auth off: medians over interleaved rounds")
    for name, rows in results.items():
        cpu = statistics.median(r["server_ms"] + r["db_ms"] for r in rows)
        rate = statistics.median(r["rate"] for r in rows)
        time_ratio = statistics.median(b["rate"] / r["rate"] for b, r in zip(base, rows, strict=True))
        cpu_ratio = statistics.median((r["server_ms"] + r["db_ms"]) / max(1e-9, b["server_ms"] + b["db_ms"])
                                      for b, r in zip(base, rows, strict=True))
        print(f"  {name:<16} {rate:>7.0f} req/s  CPU {cpu:5.2f} ms/req   vs metrics off: time "
              f"{(time_ratio - 1) * 100:+5.1f}%, CPU {(cpu_ratio - 1) * 100:+5.1f}%")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
