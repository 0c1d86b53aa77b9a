"""`make bench`: every benchmark, one after the other; `make bench QUICK=1` (or --quick) runs
each in its quick mode where it has one (a smoke run that checks the figures still come
out, minutes instead of an hour), and says which ran at full length.

    .venv/bin/python bench/run_all.py [--quick] [--only search,workers]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# In the order of docs/performance.md; scripts another branch adds run too when present.
ORDER = ("rest", "creates", "bundles", "search", "workers", "auth", "consent", "subscriptions",
         "validation", "workflows", "scheduling", "messaging")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated script names")
    args = parser.parse_args()
    wanted = args.only.split(",") if args.only else list(ORDER)
    failed: list[str] = []
    summary: list[str] = []
    for name in wanted:
        script = HERE / f"{name}.py"
        if not script.exists():
            continue
        quick = args.quick and "--quick" in script.read_text()
        print(f"\n######## bench/{name}.py{' --quick' if quick else ''}", flush=True)
        began = time.monotonic()
        code = subprocess.call([sys.executable, str(script), *(["--quick"] if quick else [])])
        mode = "quick" if quick else "full" + (" (no quick mode)" if args.quick else "")
        summary.append(f"  {name:<14} {mode:<22} exit {code}  {time.monotonic() - began:6.0f} s")
        if code:
            failed.append(name)
    print("\n######## summary\n" + "\n".join(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
