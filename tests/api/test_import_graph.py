"""Layers call down only: no import cycle among the HTTP layer's modules, the hook
vocabulary below storage, and `interceptors` known to one module of `fhir_server` (the
composition root). Read from the source (every import, also those inside functions and
under TYPE_CHECKING), so a cycle cannot hide behind a lazy import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fhir_server"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; `from a import b` counts a and a.b)."""
    found: set[str] = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph(paths: list[Path]) -> dict[str, set[str]]:
    modules = {_module(p): p for p in paths}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_the_http_layer() -> None:
    api = sorted((PACKAGE / "api").glob("*.py"))
    assert len(api) > 10
    graph = _graph(api)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    # Nor through the rest of the package and back: the HTTP layer is the top but for the
    # application factory, and nothing below it imports it.
    everything = _graph(sorted(PACKAGE.rglob("*.py")))
    importers = {m for m, deps in everything.items() if any(d.startswith("fhir_server.api") for d in deps)}
    assert {m for m in importers if not m.startswith("fhir_server.api")} == {"fhir_server.app"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_interceptors_are_known_to_the_composition_root_only() -> None:
    importers = sorted(_module(p) for p in PACKAGE.rglob("*.py")
                       if any(m == "interceptors" or m.startswith("interceptors.") for m in _imports(p)))
    assert importers == ["fhir_server.services"]


def test_the_hook_vocabulary_imports_nothing_of_the_server() -> None:
    assert {m for m in _imports(PACKAGE / "hooks.py") if m.split(".")[0] in ("fhir_server", "interceptors")} == set()
