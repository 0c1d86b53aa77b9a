"""Messaging benchmark: render cursor updates, message → alert → notification, the inbox.

Starts the embedded database and one server (uvicorn in a thread, SMART auth, Consent and
audit on: the default configuration) with a short grace period, then, over HTTP:

1. cursor updates: C clients move render cursors forward on distinct (thread, participant)
   pairs (each call writes a version + its Provenance); updates/s and p50/p99, beside the
   same-run baseline of a plain `PUT /Basic/<id>` by the same clients, in interleaved rounds;
2. message commit → alert decision → notification received at a rest-hook receiver
   (topic communication-unrendered, filter participant), p50/p99 beside the grace period
   (target p99 < grace + 250 ms) and beside the same-run baseline: commit → notification of
   an R4 criteria Subscription on the same messages (the delivery path without the timer);
3. the inbox, `GET Communication/$render-state?participant=` of a participant in 1,000
   threads: its first page (target p99 < 100 ms) and the same with `_total=accurate`, beside
   the baselines `GET Communication?participant=&_tag=thread&_elements=id` with `_count=50`
   (a page of the same threads as a search) and `_count=1000` (all of them); and the whole
   inbox walked page by page;
4. what a message costs (it also notes its participants' activity after the commit) beside a
   plain Communication, and 16 messages at once to one thread.

    .venv/bin/python bench/messaging.py --quick      # 200 threads, fewer samples
    .venv/bin/python bench/messaging.py              # 1,000 threads
    .venv/bin/python bench/messaging.py --only inbox # the inbox measures only
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fhir_server.app import create_app
from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import Settings, SubscriptionSettings
from fhir_server.embedded_db import EmbeddedDatabase
from fhir_server.messaging import inbox
from fhir_server.messaging.settings import GRACE_PERIOD
from fhir_server.services import auth_settings
from fhir_server.serving import Server

TAG = "http://fhir.care-coord.example/CodeSystem/messaging"
TOPIC = "http://fhir.care-coord.example/SubscriptionTopic/communication-unrendered"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
Doc = dict[str, Any]
AUDIT_SETTLE = 0.6  # seconds: AuditEvents are written in batches every 0.5 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def cpu_seconds(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms"


class Receiver:
    """A rest-hook endpoint: when each alerted message's (or message's) notification arrived."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                try:
                    bundle = json.loads(body) if body else {}
                except ValueError:
                    bundle = {}
                for entry in (bundle.get("entry") or [])[1:]:
                    resource = entry.get("resource") or {}
                    if resource.get("resourceType") == "Basic":
                        key = resource["subject"]["reference"].removeprefix("Communication/")
                    elif resource.get("resourceType") == "Communication":
                        key = "raw:" + resource["id"]
                    else:
                        continue
                    receiver.arrived.setdefault(key, at)
                if bundle.get("resourceType") == "Communication":  # an R4 criteria payload
                    receiver.arrived.setdefault("raw:" + bundle["id"], at)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def serve(settings: Settings) -> uvicorn.Server:
    # The server class `fhir-server serve` runs: its start-up also settles the collector
    # (fhir_server/heap.py), as in production.
    server = Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port,
                                   log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return server


async def token(settings: Settings, scope: str, client_id: str, fhir_user: str | None = None,
                patient: str | None = None) -> str:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongodb_uri)
    try:
        return await mint_dev_token(client[settings.database], auth_settings(settings), scope.split(),
                                    patient=patient, fhir_user=fhir_user, client_id=client_id)
    finally:
        await client.close()


def ref(value: str) -> Doc:
    return {"reference": value}


async def ok(reply: httpx.Response, *statuses: int) -> Doc:
    if reply.status_code not in (statuses or (200, 201)):
        raise RuntimeError(f"{reply.request.method} {reply.request.url}: {reply.status_code} {reply.text[:300]}")
    body: Doc = reply.json() if reply.content else {}
    return body


async def transaction(client: httpx.AsyncClient, resources: list[Doc]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(resources), 100):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in resources[start:start + 100]]}
        answer = await ok(await client.post("/", json=bundle))
        ids += [e["response"]["location"].split("/")[1] for e in answer["entry"]]
    return ids


async def subscribe(client: httpx.AsyncClient, sub: Doc) -> str:
    sub_id = str((await ok(await client.post("/Subscription", json=sub)))["id"])
    deadline = time.monotonic() + 30
    while (await ok(await client.get(f"/Subscription/{sub_id}")))["status"] != "active":
        if time.monotonic() > deadline:
            raise RuntimeError(f"Subscription/{sub_id} never became active")
        await asyncio.sleep(0.1)
    return sub_id


async def scheduled(settings: Settings, count: int) -> None:
    """Waits until `count` alert timers are scheduled (each message's event was handled)."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongodb_uri)
    try:
        timers = client[settings.database]["timers"]
        while await timers.count_documents({"workflow": "messaging-alerts"}) < count:
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def timed(calls: list[Callable[[], Any]], clients: int) -> tuple[list[float], float]:
    """Runs `calls` with `clients` in flight; latencies and the wall time."""
    queue = list(reversed(calls))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            call = queue.pop()
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, time.perf_counter() - start


async def phases(settings: Settings, admin: httpx.AsyncClient, committed: dict[str, float],
                 receiver: Receiver, grace: float) -> None:
    """Where an alert's time goes, per message: commit → timer due (the grace period) → timer
    fired (the runner's lag) → the alert committed (the decision) → notification received
    (the delivery). Wall clock times of this one machine."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongodb_uri)
    lags: dict[str, list[float]] = {"due": [], "fired": [], "alert": [], "delivered": []}
    try:
        timers = client[settings.database]["timers"]
        for m, at in committed.items():
            timer = await timers.find_one({"_id": f"messaging-alerts/unrendered/{m}"})
            found = (await ok(await admin.get("/Basic", params={
                "code": f"{TAG}|unrendered", "subject": f"Communication/{m}"}))).get("entry") or []
            if timer is None or not found or m not in receiver.arrived:
                continue
            due = timer["due"].replace(tzinfo=datetime.UTC).timestamp()
            ended = timer.get("ended")
            alert_at = datetime.datetime.fromisoformat(
                found[0]["resource"]["meta"]["lastUpdated"].replace("Z", "+00:00")).timestamp()
            lags["due"].append(due - at)
            if ended is not None:
                lags["fired"].append(ended.replace(tzinfo=datetime.UTC).timestamp() - due)
            lags["alert"].append(alert_at - due)
            lags["delivered"].append(receiver.arrived[m] - alert_at)
    finally:
        await client.close()
    names = {"due": "commit → timer due (grace)", "fired": "due → timer done (decision taken)",
             "alert": "due → alert committed", "delivered": "alert committed → notification received"}
    print("\n| phase | p50 | p99 |\n| --- | ---: | ---: |")
    for key, values in lags.items():
        if values:
            print(f"| {names[key]} | {statistics.median(values) * 1000:.0f} ms | {percentile(values, 0.99) * 1000:.0f} ms |")


async def run(uri: str, threads: int, samples: int, clients: int, rounds: int, grace: float,
              db_pid: int | None = None, only: str = "all", spread_days: float = 0.0) -> None:
    os.environ[GRACE_PERIOD] = "86400"  # read when a message arrives: see below
    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, base_url=f"http://127.0.0.1:{port}/fhir", mongodb_uri=uri,
                        database="bench_messaging", auth_enabled=True,
                        subscriptions=SubscriptionSettings(allowed_hosts=("127.0.0.1",)))
    server = serve(settings)
    u = uuid.uuid4().hex[:6]
    gp, anna = f"Practitioner/gp{u}", f"Patient/anna{u}"
    system_token = await token(settings, "system/*.cruds", "dashboard")
    gp_token = await token(settings, "user/*.cruds", "ehr", fhir_user=gp)
    anna_token = await token(settings, "patient/*.cruds", "portal", fhir_user=anna, patient=f"anna{u}")
    base = settings.base_url
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits,
                                 headers={"Authorization": f"Bearer {system_token}"}) as admin, \
            httpx.AsyncClient(base_url=base, timeout=600, limits=limits,
                              headers={"Authorization": f"Bearer {gp_token}"}) as gp_client, \
            httpx.AsyncClient(base_url=base, timeout=600, limits=limits,
                              headers={"Authorization": f"Bearer {anna_token}"}) as anna_client:
        await ok(await admin.put(f"/Practitioner/gp{u}", json={"resourceType": "Practitioner", "id": f"gp{u}"}))
        await ok(await admin.put(f"/Patient/anna{u}", json={"resourceType": "Patient", "id": f"anna{u}"}))

        # ------------------------------------------------------------ the inbox's threads
        print(f"storing {threads:,} threads ...", file=sys.stderr)
        header = {"resourceType": "Communication", "status": "in-progress", "subject": ref(anna),
                  "topic": {"text": "bench"}, "recipient": [ref(anna), ref(gp)], "sender": ref(gp)}
        thread_ids = await transaction(admin, [dict(header) for _ in range(threads)])
        # Two messages in every thread (the cursor updates move between them).
        first = await transaction(admin, [{"resourceType": "Communication", "status": "completed",
                                           "partOf": [ref(f"Communication/{t}")], "sender": ref(gp),
                                           "payload": [{"contentString": "one"}]} for t in thread_ids])
        second = await transaction(admin, [{"resourceType": "Communication", "status": "completed",
                                            "partOf": [ref(f"Communication/{t}")], "sender": ref(gp),
                                            "payload": [{"contentString": "two"}]} for t in thread_ids])

        # The setup's messages were stored with a day's grace period: their alert decisions
        # are not due while anything is timed. From here on the grace period is the bench's.
        await scheduled(settings, 2 * threads)
        os.environ[GRACE_PERIOD] = str(grace)

        if only == "all":
            # ------------------------------------------------------------ 1. cursor updates
            def cursor(client: httpx.AsyncClient, thread: str, message: str, who: str) -> Callable[[], Any]:
                body = {"resourceType": "Parameters", "parameter": [
                    {"name": "participant", "valueReference": ref(who)},
                    {"name": "message", "valueReference": ref(f"Communication/{message}")}]}

                async def call() -> None:
                    await ok(await client.post(f"/Communication/{thread}/$render-cursor", json=body))
                return call

            def plain_put(i: int, n: int) -> Callable[[], Any]:
                async def call() -> None:
                    await ok(await admin.put(f"/Basic/bench{u}-{i}", json={
                        "resourceType": "Basic", "id": f"bench{u}-{i}", "code": {"text": f"baseline {n}"}}))
                return call

            per_round = min(samples, threads)
            op_lat: list[float] = []
            base_lat: list[float] = []
            op_wall = base_wall = 0.0
            op_cpu = base_cpu = 0.0
            for r in range(rounds):
                # Each round moves distinct pairs: round r uses threads [r*per_round, ...) for the GP
                # (first then second message: two real moves) — wrapping around for small stores.
                picks = [(thread_ids[(r * per_round + i) % threads], first[(r * per_round + i) % threads],
                          second[(r * per_round + i) % threads]) for i in range(per_round)]
                who, client = (gp, gp_client) if r % 2 == 0 else (anna, anna_client)
                c0 = cpu_seconds()
                lat, wall = await timed([cursor(client, t, m, who) for t, m, _ in picks]
                                        + [cursor(client, t, m2, who) for t, _, m2 in picks], clients)
                op_cpu += cpu_seconds() - c0
                op_lat += lat
                op_wall += wall
                c0 = cpu_seconds()
                lat, wall = await timed([plain_put(i, r * 2 + k) for k in range(2) for i in range(per_round)], clients)
                base_cpu += cpu_seconds() - c0
                base_lat += lat
                base_wall += wall
            print(f"\nmessaging bench: {threads:,} threads, {clients} clients, {rounds} interleaved rounds, "
                  f"grace {grace:g} s (server in this process; CPU is server + client)")
            print("| measure | rate | latency | CPU per call |")
            print("| --- | ---: | ---: | ---: |")
            print(f"| $render-cursor (a forward move: version + Provenance) | {len(op_lat) / op_wall:.0f}/s | "
                  f"{ms(op_lat)} | {op_cpu / len(op_lat) * 1000:.1f} ms |")
            print(f"| baseline: PUT /Basic (a plain update) | {len(base_lat) / base_wall:.0f}/s | {ms(base_lat)} | "
                  f"{base_cpu / len(base_lat) * 1000:.1f} ms |")
            print(f"| ratio (cursor ÷ baseline), rate / p50 | {(len(op_lat) / op_wall) / (len(base_lat) / base_wall):.2f}× | "
                  f"{statistics.median(op_lat) / statistics.median(base_lat):.2f}× | "
                  f"{(op_cpu / len(op_lat)) / (base_cpu / len(base_lat)):.2f}× |")

            # ------------------------------------------------------------ 2. commit → alert → notification
            receiver = Receiver()
            alert_sub = await subscribe(admin, {
                "resourceType": "Subscription", "meta": {"profile": [BACKPORT + "backport-subscription"]},
                "status": "requested", "reason": "bench", "criteria": TOPIC,
                "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                             "valueString": f"participant={gp}"}]},
                "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json",
                            "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                        "valueCode": "full-resource"}]}}})
            raw_sub = await subscribe(admin, {
                "resourceType": "Subscription", "status": "requested", "reason": "bench baseline",
                "criteria": f"Communication?_tag={TAG}|message&sender={anna}",
                "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json"}})
            committed: dict[str, float] = {}
            thread = thread_ids[0]
            for _ in range(samples):
                reply = await anna_client.post("/Communication", json={
                    "resourceType": "Communication", "status": "completed", "subject": ref(anna),
                    "partOf": [ref(f"Communication/{thread}")], "payload": [{"contentString": "bench"}]})
                committed[(await ok(reply))["id"]] = time.time()
                await asyncio.sleep(0.2)
            deadline = time.monotonic() + grace + 60
            while time.monotonic() < deadline and not all(
                    m in receiver.arrived and "raw:" + m in receiver.arrived for m in committed):
                await asyncio.sleep(0.1)
            alerts = [receiver.arrived[m] - t for m, t in committed.items() if m in receiver.arrived] or [float("nan")]
            raws = [receiver.arrived["raw:" + m] - t for m, t in committed.items()
                    if "raw:" + m in receiver.arrived] or [float("nan")]
            print(f"\n| message commit → notification ({len(alerts)}/{len(committed)} alerts) | p50 | p99 | p99 − grace |")
            print("| --- | ---: | ---: | ---: |")
            print(f"| alert (communication-unrendered, after the {grace:g} s grace) | "
                  f"{statistics.median(alerts) * 1000:.0f} ms | {percentile(alerts, 0.99) * 1000:.0f} ms | "
                  f"{(percentile(alerts, 0.99) - grace) * 1000:.0f} ms (target < 250 ms) |")
            print(f"| baseline: R4 criteria Subscription on the same messages | {statistics.median(raws) * 1000:.0f} ms | "
                  f"{percentile(raws, 0.99) * 1000:.0f} ms | |")
            await phases(settings, admin, committed, receiver, grace)
            for sub in (alert_sub, raw_sub):
                await admin.delete(f"/Subscription/{sub}")

        # ------------------------------------------------------------ 3. the inbox
        # Interleaved per sample: the inbox's first page (the default _count of 50), the same
        # page with the totals (_total=accurate: every thread with messages beyond the cursor
        # judged), and the baselines: a page of the same threads as a search (_count=50), and
        # all of them as one search (_count=1000, what the inbox answered before it was paged).
        # Every 5th sample also walks the whole inbox page by page.
        async def measure_inbox(label: str) -> None:
            inbox_url = "/Communication/$render-state"
            kinds = {
                "page": lambda: anna_client.get(inbox_url, params={"participant": anna}),
                "page + total": lambda: anna_client.get(inbox_url, params={"participant": anna, "_total": "accurate"}),
                "search page": lambda: anna_client.get("/Communication", params={
                    "participant": anna, "_tag": f"{TAG}|thread", "_count": "50", "_elements": "id"}),
                "search all": lambda: anna_client.get("/Communication", params={
                    "participant": anna, "_tag": f"{TAG}|thread", "_count": "1000", "_elements": "id"}),
            }
            lat: dict[str, list[float]] = {k: [] for k in kinds}
            cpu: dict[str, list[float]] = {k: [0.0, 0.0] for k in kinds}
            walks: list[float] = []
            walked: set[str] = set()
            pages_walked = 0
            totals: tuple[int, int] = (0, 0)

            def both() -> tuple[float, float]:
                return cpu_seconds(), cpu_seconds(db_pid) if db_pid else 0.0

            for sample in range(samples):
                for kind, call in kinds.items():
                    # Let the last request's batched AuditEvents reach the database first: their
                    # insert would be charged to the next request's database CPU.
                    await asyncio.sleep(AUDIT_SETTLE)
                    c0, d0 = both()
                    start = time.perf_counter()
                    answer = await ok(await call())
                    lat[kind].append(time.perf_counter() - start)
                    c1, d1 = both()
                    cpu[kind][0] += c1 - c0
                    cpu[kind][1] += d1 - d0
                    if kind == "page + total":
                        values = {p["name"]: p.get("valueInteger") for p in answer["parameter"]}
                        totals = (int(values.get("threadsBeyond") or 0), int(values.get("beyond") or 0))
                if sample % 5 == 0:
                    start = time.perf_counter()
                    walked, pages_walked = set(), 0
                    params: dict[str, str] = {"participant": anna}
                    while True:
                        answer = await ok(await anna_client.get(inbox_url, params=params))
                        pages_walked += 1
                        walked |= {t["part"][0]["valueReference"]["reference"]
                                   for t in answer["parameter"] if t["name"] == "thread"}
                        link = next((p["valueUri"] for p in answer["parameter"] if p["name"] == "next"), None)
                        if link is None:
                            break
                        params = dict(httpx.URL(link).params)
                    walks.append(time.perf_counter() - start)
            n = max(1, samples)
            windows, rows_read = await first_page_reads(uri, settings.database, anna)
            print(f"\n| inbox of {threads:,} threads, {label} (patient token, Consent + audit on; "
              f"load {os.getloadavg()[0]:.1f}) "
                  "| p50 | p99 | CPU per request: server / database |")
            print("| --- | ---: | ---: | ---: |")
            names = {"page": "GET Communication/$render-state?participant= (first page, 50 threads)",
                     "page + total": "the same with _total=accurate (threads and messages beyond, all judged)",
                     "search page": "baseline: a page of the same threads as a search (_count=50)",
                     "search all": "baseline: all the threads as one search (_count=1000)"}
            for kind in kinds:
                target = " (target < 100 ms)" if kind == "page" else ""
                print(f"| {names[kind]} | {statistics.median(lat[kind]) * 1000:.0f} ms | "
                      f"{percentile(lat[kind], 0.99) * 1000:.0f} ms{target} | "
                      f"{cpu[kind][0] / n * 1000:.0f} / {cpu[kind][1] / n * 1000:.0f} ms |")
            print(f"| the whole inbox, page by page ({pages_walked} pages, {len(walked):,} threads) | "
                  f"{statistics.median(walks) * 1000:.0f} ms | {percentile(walks, 0.99) * 1000:.0f} ms | |")
            print(f"the first page's rows: {rows_read:,} read in {windows} window(s) holding rows (fhir_server.messaging.inbox)")
            print(f"page ÷ search page, p50: {statistics.median(lat['page']) / statistics.median(lat['search page']):.2f}×; "
                  f"totals: {totals[0]:,} threads, {totals[1]:,} messages beyond")

        await measure_inbox("as written: every thread active in the last minutes, a burst")
        if spread_days > 0:
            # The same rows as if the threads had been active over `spread_days` days, evenly:
            # the last activity the rows' windows are read by (the rows are the server's own
            # bookkeeping; the threads, messages and access decisions are unchanged).
            client: AsyncMongoClient[Doc] = AsyncMongoClient(uri)
            rows = client[settings.database]["messaging_inbox"]
            now = datetime.datetime.now(datetime.UTC)
            step = datetime.timedelta(days=spread_days) / threads
            for i, thread in enumerate(thread_ids):
                await rows.update_one({"participant": anna, "thread": thread}, {"$set": {"at": now - i * step}})
            # And the times noted of Anna's activity, as the server would have noted them
            # (fhir_server.messaging.activity; a server without it ignores the document).
            noted = [now - i * step for i in range(min(threads, 64))]
            await client[settings.database]["messaging_activity"].update_one(
                {"_id": anna}, {"$set": {"at": noted, "backfilled": True}}, upsert=True)
            await client.close()
            await measure_inbox(f"spread: the same threads last active over {spread_days:g} days")

        # ------------------------------------------------------------ 4. what a message costs
        # A message now also notes its participants' activity after the commit (one write per
        # message). Interleaved: a message to one of Anna's threads (each sample another
        # thread), and the baseline of a plain Communication (no thread: no bookkeeping).
        os.environ[GRACE_PERIOD] = "86400"  # no alert decision runs beside the measure
        await measure_messages(anna_client, anna, thread_ids, samples, db_pid)
    server.should_exit = True


async def measure_messages(client: httpx.AsyncClient, anna: str, thread_ids: list[str], samples: int,
                           db_pid: int | None) -> None:
    def body(thread: str | None) -> Doc:
        return {"resourceType": "Communication", "status": "completed", "subject": ref(anna),
                **({"partOf": [ref(f"Communication/{thread}")]} if thread else {}),
                "payload": [{"contentString": "bench"}]}

    lat: dict[str, list[float]] = {"message": [], "plain": []}
    cpu: dict[str, list[float]] = {"message": [0.0, 0.0], "plain": [0.0, 0.0]}
    for i in range(samples):
        for kind, thread in (("message", thread_ids[i % len(thread_ids)]), ("plain", None)):
            await asyncio.sleep(AUDIT_SETTLE)
            c0, d0 = cpu_seconds(), cpu_seconds(db_pid) if db_pid else 0.0
            start = time.perf_counter()
            await ok(await client.post("/Communication", json=body(thread)), 201)
            lat[kind].append(time.perf_counter() - start)
            cpu[kind][0] += cpu_seconds() - c0
            cpu[kind][1] += (cpu_seconds(db_pid) if db_pid else 0.0) - d0
    n = max(1, samples)
    print(f"\n| a message (load {os.getloadavg()[0]:.1f}) | p50 | p99 | CPU per request: server / database |")
    print("| --- | ---: | ---: | ---: |")
    for kind, name in (("message", "POST a message to a thread (2 participants)"),
                       ("plain", "baseline: POST a plain Communication")):
        print(f"| {name} | {statistics.median(lat[kind]) * 1000:.0f} ms | "
              f"{percentile(lat[kind], 0.99) * 1000:.0f} ms | "
              f"{cpu[kind][0] / n * 1000:.1f} / {cpu[kind][1] / n * 1000:.1f} ms |")
    # 16 messages at once to one thread (they meet on its number and on its participants'
    # noted activity): every one answered 201, numbered 1 apart.
    thread = thread_ids[-1]
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        replies = await asyncio.gather(*(client.post("/Communication", json=body(thread)) for _ in range(16)))
        walls.append(time.perf_counter() - start)
        statuses = sorted(r.status_code for r in replies)
        if statuses != [201] * 16:
            print(f"16 at once: statuses {statuses}")
    print(f"16 messages at once to one thread: all 201; wall {statistics.median(walls) * 1000:.0f} ms "
          f"(median of {len(walls)})")


async def first_page_reads(uri: str, database: str, participant: str) -> tuple[int, int]:
    """How many inbox rows the first page's windows read, in how many windows."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(uri)
    try:
        windows = rows = 0
        async for window in inbox.newest_rows(client[database], participant, None, inbox.DEFAULT_COUNT + 1):
            windows += 1
            rows += len(window)
            if rows > inbox.DEFAULT_COUNT:
                break
        return windows, rows
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 threads, 30 samples, 2 rounds")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--grace", type=float, default=1.0, help="the grace period in seconds (default 1)")
    parser.add_argument("--only", choices=("all", "inbox"), default="all",
                        help="inbox: only the inbox measures (skips cursor updates and alerts)")
    parser.add_argument("--spread-days", type=float, default=0.0,
                        help="measure the inbox again with its threads' last activity spread over this many days")
    args = parser.parse_args()
    threads = args.threads or (200 if args.quick else 1000)
    samples = args.samples or (30 if args.quick else 100)
    rounds = args.rounds or (2 if args.quick else 4)
    with EmbeddedDatabase(None) as db:
        process = getattr(db, "_process", None)  # the database's own CPU, from /proc
        asyncio.run(run(db.uri, threads, samples, args.clients, rounds, args.grace,
                        process.pid if process is not None else None, args.only, args.spread_days))


if __name__ == "__main__":
    main()
