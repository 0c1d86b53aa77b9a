"""Coordinator dashboard benchmark, driven in Debian's Chromium (Playwright), against a real
`fhir-server serve` (default configuration: auth, Consent and audit on) on its embedded
database holding N Tasks (100,000 by default), loaded by `fhir-server load`:

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

ROOT = Path(__file__).resolve().parent.parent
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


def tasks_ndjson(path: Path, n: int, now: datetime) -> int:
    """N open Tasks over OWNERS owners, due around now; returns how many are mine."""
    mine = 0
    with path.open("w") as out:
        for i in range(n):
            owner = ME if i % OWNERS == 0 else f"Practitioner/bench-{i % OWNERS}"
            mine += owner == ME
            due = now + timedelta(hours=(i % 480) - 240)
            out.write(json.dumps({
                "resourceType": "Task", "id": f"bench-{i}", "status": "requested", "intent": "order",
                "priority": "routine", "description": f"Bench task {i}", "owner": {"reference": owner},
                "for": {"reference": f"Patient/bench-{i % 5000}"}, "authoredOn": (now - timedelta(days=i % 30)).isoformat(),
                "restriction": {"period": {"end": due.strftime("%Y-%m-%dT%H:%M:%SZ")}}}) + "\n")
    return mine


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


def sign_in(page: Page, server: Server, username: str, password: str) -> float:
    """A standalone launch through the login page; seconds from submit to the first row of
    the first worklist in the page."""
    page.goto(f"{server.origin}/apps/coordinator/")
    page.wait_for_selector("input[name=username]")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    start = time.perf_counter()
    page.click("button[type=submit]")
    page.wait_for_selector("main#view[data-view=mine] tbody tr", timeout=120_000)
    return time.perf_counter() - start


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
    parser.add_argument("--data-dir", type=Path, help="with --attach: the running server's data directory")
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
                mine = tasks_ndjson(Path(folder) / "tasks.ndjson", n, now)
                server.cli("load", str(Path(folder) / "tasks.ndjson"))
                print(f"loaded {n:,} Tasks ({mine} of them mine) in {time.perf_counter() - started:.0f} s; "
                      f"load average {load_average()}")
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

    def commit(name: str, due_year: int) -> tuple[float, float]:
        # Due first of all: the worklist is sorted by due date, so the row is on page 1.
        task = {"resourceType": "Task", "status": "requested", "intent": "order",
                "description": f"Bench commit {name}.", "owner": {"reference": ME},
                "restriction": {"period": {"end": f"{due_year:04d}-01-01T00:00:00Z"}}}
        wall = time.time()
        start = time.perf_counter()
        reply = api.post("/Task", json=task)
        took = time.perf_counter() - start
        assert reply.status_code == 201, reply.text
        page.wait_for_function(f"() => '{name}' in window.__seen", timeout=1_800_000 if name == "warmup" else 60_000)
        return page.evaluate(f"() => window.__seen['{name}']") / 1000 - wall, took

    drained = time.perf_counter()
    commit("warmup", 2001)
    print(f"\nthe load's notifications drained in {time.perf_counter() - drained:.0f} s")
    visible: list[float] = []
    posted: list[float] = []
    before = server.cpu()
    for i in range(commits):
        shown, took = commit(str(i), 2000 - i)
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
            # Wait for the page's live Subscription before closing (a closed tab mid-request
            # is the server's noise, not the launch's).
            page.wait_for_selector("#live[data-state=live]", timeout=60_000)
        start = time.perf_counter()
        reply = api.get(searches[0])  # the first worklist's search, as the page made it
        assert reply.status_code == 200, reply.text
        if k:
            painted.append(took)
            replayed.append(time.perf_counter() - start)
            cpu_launch += cpu
    print(f"\nlaunch → first worklist painted ({launches} launches; load average {load_average()})")
    print(f"  {'dashboard launch':<34} {ms(painted)}   target < 1500 ms")
    print(f"  {'baseline: its worklist search':<34} {ms(replayed)}")
    print(f"  server + database CPU per launch (to the first row): {cpu_launch / max(1, len(painted)) * 1000:.0f} ms")


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
