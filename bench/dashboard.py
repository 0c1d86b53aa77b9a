"""Coordinator dashboard benchmark, driven in Debian's Chromium (Playwright), against a real
`fhir-server serve` (default configuration: auth, Consent and audit on) on its embedded
database holding N Tasks (100,000 by default), seeded straight into the database as the
write pipeline stores them (bench/search.py's `document`: `stamp_meta`, the search values, the
compartments; ~0.7 ms of database CPU per Task) with `--seed fast` (the default), or through
the write pipeline with `fhir-server load` (`--seed load`: ~22 Tasks/s under load):

1. launch → first worklist painted: from the login form's submit (a fresh browser context,
   so a whole SMART launch: code, token, the app's start, who-am-I, counts, the worklist
   search) to the first row of "My tasks" in the page (target < 1.5 s); beside the same-run
   baseline: the same worklist search the page made, replayed with httpx and the same kind
   of token (what the server alone takes). Repetitions interleaved.
2. commit → row visible in an open worklist: another client POSTs a Task for the user; a
   MutationObserver in the page records when its row appears (the live websocket
   Subscription, then the worklist's search again), p50/p99 (target p99 < 1 s); beside the
   same-run baseline: the POST's own response time.
CPU of the server and its database (from /proc) per launch and per commit is printed beside
them, and the load average, since the machine is shared.

    .venv/bin/python bench/dashboard.py --quick        # 5,000 Tasks, fewer samples
    .venv/bin/python bench/dashboard.py                # 100,000 Tasks
    .venv/bin/python bench/dashboard.py --data-dir DIR # keep the seeded database in DIR; a
                                                       # second run on DIR seeds nothing
Needs `make apps` and `make test-deps` (Chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, Request, sync_playwright
from pymongo import MongoClient, UpdateOne

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.search import document, insert  # noqa: E402
from fhir_server.config import Settings  # noqa: E402
from fhir_server.embedded_db import running_uri  # noqa: E402
from fhir_server.search import SearchEngine  # noqa: E402
from fhir_server.search.seek import bucket_of, bucketed_fields  # noqa: E402
from fhir_server.storage import sort_buckets  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
ME = "Practitioner/bench-me"
OWNERS = 1000  # the Tasks are spread over this many owners; "me" is one of them
Doc = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def ms(values: list[float]) -> str:
    return (f"p50 {percentile(values, 0.5) * 1000:7.1f} ms  p99 {percentile(values, 0.99) * 1000:7.1f} ms  "
            f"mean {statistics.mean(values) * 1000:7.1f} ms  (n={len(values)})")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_of_tree(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants (the server and its database)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        todo += children.get(p, [])
    return total


PATIENTS = 5000


def bench_task(i: int, now: datetime) -> Doc:
    """Task number i: open, one owner of OWNERS (ME for every OWNERS-th), due around now."""
    owner = ME if i % OWNERS == 0 else f"Practitioner/bench-{i % OWNERS}"
    due = now + timedelta(hours=(i % 480) - 240)
    return {"resourceType": "Task", "id": f"bench-{i}", "status": "requested", "intent": "order",
            "priority": "routine", "description": f"Bench task {i}", "owner": {"reference": owner},
            "for": {"reference": f"Patient/bench-{i % PATIENTS}"},
            "authoredOn": (now - timedelta(days=i % 30)).isoformat(),
            "restriction": {"period": {"end": due.strftime("%Y-%m-%dT%H:%M:%SZ")}}}


def tasks_ndjson(path: Path, n: int, now: datetime) -> int:
    """N open Tasks over OWNERS owners, due around now; returns how many are mine."""
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps(bench_task(i, now)) + "\n")
    return len(range(0, n, OWNERS))


def seed_fast(server: Server, n: int, now: datetime) -> int:
    """Stores N Tasks (and their Patients) as the write pipeline would store their first
    versions, straight into the running server's database (bench/search.py's `document`);
    returns how many it stored (none when the database holds them from an earlier run).
    Only the current collections: nothing here reads history, and no Subscription is told
    (the load is the past; what the benchmark measures comes after it)."""
    uri = running_uri(server.data_dir)
    if uri is None:
        raise SystemExit(f"no database runs on {server.data_dir}")
    client: MongoClient[Doc] = MongoClient(uri, tz_aware=True)
    db = client[Settings.database]
    try:
        if db["Task"].count_documents({"_id": f"bench-{n - 1}"}):
            return 0
        engine = SearchEngine(Settings(base_url=server.base))
        epoch = now - timedelta(days=30)
        insert(db["Patient"], [document(engine, {
            "resourceType": "Patient", "name": [{"family": f"Family{i}", "given": ["Bench"]}]},
            f"bench-{i}", epoch) for i in range(PATIENTS)])
        hours: set[datetime] = set()
        batch: list[Doc] = []
        for i in range(n):
            ts = epoch + timedelta(seconds=i * 30 * 86400 // max(1, n))
            batch.append(document(engine, bench_task(i, now), f"bench-{i}", ts))
            hours.add(bucket_of(ts))
            if len(batch) == 5000:
                insert(db["Task"], batch)
                batch = []
        if batch:
            insert(db["Task"], batch)
        # The loader bypasses the write pipeline: note the sort-key buckets its writes would.
        assert bucketed_fields("Task") == ("ts",), "a new bucketed Task field: note it here"
        updates: list[UpdateOne] = [sort_buckets.bucket_update("Task", "ts", h) for h in sorted(hours)]
        updates += [sort_buckets.bucket_update("Patient", "ts", bucket_of(epoch))]
        db[sort_buckets.SORT_BUCKETS].bulk_write(updates, ordered=False)
        return n
    finally:
        client.close()


class Server:
    """`fhir-server serve` on a data directory, and the CLI against it."""

    def __init__(self, data_dir: Path, attach: str | None = None) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        if attach:  # a server already running on data_dir (e.g. with its Tasks loaded before)
            self.base = attach.rstrip("/")
            self.origin = self.base.rsplit("/fhir", 1)[0]
            self.pid = serve_pid(data_dir)
        else:
            port = free_port()
            self.origin = f"http://127.0.0.1:{port}"
            self.base = f"{self.origin}/fhir"
        self.env = {**os.environ, "FHIR_BASE_URL": self.base}
        if not attach:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fhir_server", "serve", "--port", str(port), "--data-dir", str(data_dir),
                 "--log-level", "warning"], env=self.env, cwd=ROOT)
            self.pid = self.process.pid
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.base}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or (self.process and self.process.poll() is not None):
                raise RuntimeError("the server did not start")
            time.sleep(0.2)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "fhir_server", *args, "--data-dir", str(self.data_dir)],
                              env={**self.env, **(env or {})}, capture_output=True, text=True, cwd=ROOT, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return done.stdout

    def cpu(self) -> float:
        return cpu_of_tree(self.pid)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


def serve_pid(data_dir: Path) -> int:
    """The `fhir-server serve` process holding data_dir (its CPU, and its database's, is measured)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in args and str(data_dir).encode() in args:
                return int(entry.name)
    raise SystemExit(f"no `fhir-server serve` runs on {data_dir}")


# In every document of a launch: when the first row of "My tasks" was attached (wall clock, ms).
FIRST_ROW = """(() => {
  const look = () => {
    if (!window.__firstRow && document.querySelector('main#view[data-view=mine] tbody tr')) window.__firstRow = Date.now();
  };
  new MutationObserver(look).observe(document, { childList: true, subtree: true, attributes: true });
})();"""
SUBMITTED: dict[Page, float] = {}  # when each page's login form was submitted (wall clock)


def sign_in(page: Page, server: Server, username: str, password: str) -> float:
    """A standalone launch through the login page; seconds from submit to the first row of
    the first worklist in the page (the time the page attached it, recorded in the page by a
    MutationObserver, as for the commits: Playwright's own wait returns later under load)."""
    page.add_init_script(FIRST_ROW)
    page.goto(f"{server.origin}/apps/coordinator/")
    page.wait_for_selector("input[name=username]")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    start = time.perf_counter()
    SUBMITTED[page] = time.time()
    page.click("button[type=submit]")
    page.wait_for_selector("main#view[data-view=mine] tbody tr", timeout=120_000)
    waited = time.perf_counter() - start
    attached = page.evaluate("() => window.__firstRow")
    return attached / 1000 - SUBMITTED[page] if attached else waited


@contextmanager
def context_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 Tasks, fewer samples")
    parser.add_argument("--tasks", type=int, help="Tasks in the database (default 100,000; --quick 5,000)")
    parser.add_argument("--launches", type=int, help="launches measured (default 10; --quick 4)")
    parser.add_argument("--commits", type=int, help="commits measured (default 100; --quick 20)")
    parser.add_argument("--attach", metavar="BASE_URL",
                        help="measure the server running at BASE_URL on --data-dir (its Tasks as they are; "
                             "none loaded) instead of starting one")
    parser.add_argument("--data-dir", type=Path,
                        help="with --attach: the running server's data directory; else where the server "
                             "keeps its database (kept after the run: a second run seeds nothing)")
    parser.add_argument("--seed", choices=("fast", "load"), default="fast",
                        help="fast: store the Tasks straight into the database as the write pipeline "
                             "would (default); load: through `fhir-server load` (the write pipeline)")
    args = parser.parse_args()
    n = args.tasks or (5000 if args.quick else 100_000)
    launches = args.launches or (4 if args.quick else 10)
    commits = args.commits or (20 if args.quick else 100)
    if not (ROOT / "apps" / "dist" / "coordinator" / "index.html").is_file():
        raise SystemExit("the apps are not built: run `make apps`")
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as folder:
        if args.attach and not args.data_dir:
            raise SystemExit("--attach needs the running server's --data-dir")
        server = Server(args.data_dir or Path(folder) / "data", args.attach)
        try:
            print(f"load average at start: {load_average()}")
            if not args.attach:
                started = time.perf_counter()
                cpu = server.cpu()
                if args.seed == "fast":
                    stored = seed_fast(server, n, now)
                else:
                    tasks_ndjson(Path(folder) / "tasks.ndjson", n, now)
                    server.cli("load", str(Path(folder) / "tasks.ndjson"))
                    stored = n
                print(f"seeded {stored:,} Tasks ({args.seed}; {len(range(0, n, OWNERS))} of the {n:,} mine) in "
                      f"{time.perf_counter() - started:.0f} s, server + database CPU "
                      f"{(server.cpu() - cpu) * 1000 / max(1, stored):.2f} ms per Task; load average {load_average()}")
            password = uuid.uuid4().hex
            username = f"bench-{uuid.uuid4().hex[:6]}"
            server.cli("user", "add", "--username", username, "--fhir-user", ME,
                       env={"FHIR_USER_PASSWORD": password})
            token = server.cli("token", "--client-id", "coordinator-dashboard", "--scope", "user/*.cruds",
                               "--fhir-user", ME).strip().splitlines()[-1]
            run(server, username, password, token, launches, commits)
        finally:
            server.stop()


def commit_phase(server: Server, api: httpx.Client, page: Page, commits: int) -> None:
    """Commit → row visible, after a first commit that waits for whatever the server still has
    to match from the load (the Subscription matcher works through the outbox in order)."""
    page.wait_for_selector("#live[data-state=live]", timeout=60_000)
    page.evaluate("""() => {
      window.__seen = {};
      new MutationObserver(() => {
        for (const row of document.querySelectorAll('#view tbody tr')) {
          const m = /Bench commit (\\w+)\\./.exec(row.textContent || '');
          if (m && !(m[1] in window.__seen)) window.__seen[m[1]] = Date.now();
        }
      }).observe(document.getElementById('view'), { childList: true, subtree: true, characterData: true });
    }""")

    # Each commit is due before everything in the worklist (sorted by due date), so its row is
    # on page 1: before the load's Tasks, and before the commits of earlier runs on a kept
    # database (a run's dates start 100 s earlier per second it starts later; commits are a
    # second apart).
    first_due = datetime(1970, 1, 1, tzinfo=UTC) - timedelta(seconds=100 * (int(time.time()) - 1_796_000_000))
    run_id = uuid.uuid4().hex[:6]

    def commit(name: str, n: int) -> tuple[float, float]:
        name = f"{run_id}x{name}"
        due = (first_due - timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        task = {"resourceType": "Task", "status": "requested", "intent": "order",
                "description": f"Bench commit {name}.", "owner": {"reference": ME},
                "restriction": {"period": {"end": due}}}
        wall = time.time()
        start = time.perf_counter()
        reply = api.post("/Task", json=task)
        took = time.perf_counter() - start
        assert reply.status_code == 201, reply.text
        page.wait_for_function(f"() => '{name}' in window.__seen",
                               timeout=1_800_000 if name.endswith("warmup") else 60_000)
        return page.evaluate(f"() => window.__seen['{name}']") / 1000 - wall, took

    drained = time.perf_counter()
    commit("warmup", 0)
    print(f"\nthe load's notifications drained in {time.perf_counter() - drained:.0f} s")
    visible: list[float] = []
    posted: list[float] = []
    before = server.cpu()
    for i in range(commits):
        shown, took = commit(str(i), i + 1)
        visible.append(shown)
        posted.append(took)
    cpu = server.cpu() - before
    print(f"\ncommit → row visible in the open worklist ({commits} commits; load average {load_average()})")
    print(f"  {'commit → row visible':<34} {ms(visible)}   target p99 < 1000 ms")
    print(f"  {'baseline: the POST itself':<34} {ms(posted)}")
    print(f"  server + database CPU per commit (POST, notification, the page's searches): {cpu / commits * 1000:.0f} ms")


def launch_phase(server: Server, api: httpx.Client, browser: Browser, username: str, password: str,
                 launches: int) -> None:
    """Launch → first worklist painted, interleaved with the same search replayed."""
    painted: list[float] = []
    app_part: list[float] = []
    replayed: list[float] = []
    cpu_launch = 0.0
    for k in range(launches + 1):  # launch 0 warms the browser up
        with context_page(browser) as page:
            searches: list[str] = []

            def seen(request: Request, into: list[str] = searches) -> None:
                if "/fhir/Task?" in request.url and "_summary=count" not in request.url:
                    into.append(request.url)

            page.on("request", seen)
            before = server.cpu()
            took = sign_in(page, server, username, password)
            cpu = server.cpu() - before
            # The app's own part: from its page's arrival (after the login POST and redirects).
            in_app = (page.evaluate("""() => window.__firstRow - performance.timeOrigin
                - performance.getEntriesByType('navigation')[0].responseEnd""") or 0) / 1000
            if k == launches:
                waterfall(page, took)
            # Wait for the page's live Subscription before closing (a closed tab mid-request
            # is the server's noise, not the launch's).
            page.wait_for_selector("#live[data-state=live]", timeout=60_000)
        start = time.perf_counter()
        reply = api.get(searches[0])  # the first worklist's search, as the page made it
        assert reply.status_code == 200, reply.text
        if k:
            painted.append(took)
            app_part.append(in_app)
            replayed.append(time.perf_counter() - start)
            cpu_launch += cpu
    print(f"\nlaunch → first worklist painted ({launches} launches; load average {load_average()})")
    print(f"  {'dashboard launch':<34} {ms(painted)}   target < 1500 ms")
    print(f"  {'  of it, app page arrived → row':<34} {ms(app_part)}   (before: the login POST, argon2, redirects)")
    print(f"  {'baseline: its worklist search':<34} {ms(replayed)}")
    print(f"  server + database CPU per launch (to the first row): {cpu_launch / max(1, len(painted)) * 1000:.0f} ms")


def waterfall(page: Page, took: float) -> None:
    """What the last launch's page waited on: each request of the app's page, from its
    navigation's start (the login's submit and redirects come before it), in ms."""
    entries = page.evaluate("""() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const out = [['(page) response', nav.requestStart, nav.responseEnd]];
      for (const r of performance.getEntriesByType('resource')) out.push([r.name, r.startTime, r.responseEnd]);
      return out;
    }""")
    started = page.evaluate("() => performance.timeOrigin") / 1000 - SUBMITTED.pop(page)
    print(f"\n  the last launch, request by request (ms from the app page's start, which was "
          f"{started * 1000:.0f} ms after the login's submit; its first row {took * 1000:.0f} ms after it):")
    for name, start, end in entries:
        short = name.split("/apps/", 1)[-1] if "/apps/" in name else name.split("/fhir/", 1)[-1]
        print(f"    {start:7.0f} → {end:7.0f}  {end - start:6.0f}  {short[:110]}")


def run(server: Server, username: str, password: str, token: str, launches: int, commits: int) -> None:
    api = httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        with context_page(browser) as page:
            sign_in(page, server, username, password)
            commit_phase(server, api, page, commits)
        launch_phase(server, api, browser, username, password, launches)
        browser.close()


if __name__ == "__main__":
    main()
