"""The accessibility check both apps' browser tests use: axe-core (the npm package, installed
by `make test-deps` into tests/clients/js/node_modules, never fetched from a CDN) run in the
page as it is, after the view has painted.

    from tests.apps.axe import assert_accessible
    assert_accessible(page, "portal visits (phone)")

axe-core is evaluated through the DevTools protocol, which the page's Content-Security-Policy
(`default-src 'self'`) does not govern, so the page is checked under its real CSP. A
violation of impact `serious` or `critical` fails the test, named with its rule, help text and
the first elements it found; `moderate` and `minor` ones are returned, not failed on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page

AXE = Path(__file__).resolve().parents[1] / "clients" / "js" / "node_modules" / "axe-core" / "axe.min.js"
FAILING = ("serious", "critical")
# WCAG 2.1 A and AA, and axe's best practices (landmarks, headings, ...).
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]

_RUN = """async (tags) => {
  const result = await window.axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => `${n.target.join(" ")}: ${n.failureSummary ?? ""}`)}));
}"""


def violations(page: Page) -> list[dict[str, Any]]:
    """Every axe-core violation on the page as it is now."""
    assert AXE.is_file(), "axe-core is missing: run `make test-deps`"
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = page.evaluate(_RUN, TAGS)
    return found


def assert_accessible(page: Page, what: str) -> list[dict[str, Any]]:
    """Fails on any serious or critical violation; returns the lesser ones."""
    found = violations(page)
    serious = [v for v in found if v["impact"] in FAILING]
    assert not serious, f"{what}: accessibility violations {serious}"
    return found
