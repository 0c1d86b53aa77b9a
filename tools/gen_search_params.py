"""Generates fhir_server/data/search_parameters*.json from the official R4 definitions.

    python tools/gen_search_params.py [/work/shared/fhir-r4]

Writes two compact tables the server loads at start-up (it never reads the source folder):
- search_parameters.json: per stored type, every SearchParameter whose base is that type (or
  Resource / DomainResource): type, canonical, documentation, FHIRPath expression split into
  the union branches that apply to the type, targets, composite components; plus the Patient
  compartment (which parameters put a resource of each type in a patient's compartment).
- search_parameters_valuesets.json: the required-binding ValueSets expanded to
  "system|code" lists, for the token modifiers :in and :not-in.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server.resource_types import STORED_TYPES  # noqa: E402

OUT = ROOT / "fhir_server" / "data"
RESOLVE_IS = re.compile(r"^(?P<path>.*)\.where\(resolve\(\) is (?P<type>[A-Za-z]+)\)$")


def split_union(expression: str) -> list[str]:
    """Top-level `|` branches of a FHIRPath expression (parentheses and quotes respected)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current = ""
    for ch in expression:
        if ch == "'" and not current.endswith("\\"):
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == "|":
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def strip_parens(branch: str) -> str:
    while branch.startswith("(") and branch.endswith(")"):
        inner = branch[1:-1]
        depth = 0
        balanced = True
        for ch in inner:
            depth += ch == "("
            depth -= ch == ")"
            if depth < 0:
                balanced = False
                break
        if not balanced:
            break
        branch = inner.strip()
    return branch


def branches_for(expression: str, rtype: str, generic: bool) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for raw in split_union(expression):
        branch = strip_parens(raw)
        head = branch.split(".", 1)[0].lstrip("(")
        if not generic and head != rtype:
            continue
        if generic and head in ("Resource", "DomainResource"):
            branch = rtype + branch[len(head):]
        entry: dict[str, str] = {}
        match = RESOLVE_IS.match(branch)
        if match:
            branch = match.group("path")
            entry["is"] = match.group("type")
        entry["path"] = branch
        out.append(entry)
    return out


def documentation(description: str, rtype: str) -> str:
    for line in description.splitlines():
        if f"[{rtype}]" in line:
            return line.split(":", 1)[-1].strip()
    return description.strip().splitlines()[0] if description.strip() else ""


def build_params(source: Path) -> dict[str, Any]:
    bundle = json.loads((source / "search-parameters.json").read_text())
    definitions = [e["resource"] for e in bundle["entry"]]
    by_url = {d["url"]: d for d in definitions}
    types: dict[str, dict[str, Any]] = {t: {} for t in STORED_TYPES}
    for d in definitions:
        bases = set(d.get("base", []))
        generic = bool(bases & {"Resource", "DomainResource"})
        expression = d.get("expression")
        for rtype in STORED_TYPES:
            if rtype not in bases and not generic:
                continue
            if "DomainResource" in bases and rtype == "Binary":
                continue
            entry: dict[str, Any] = {
                "type": d["type"],
                "url": d["url"],
                "doc": documentation(d.get("description", ""), rtype),
            }
            if expression:
                entry["branches"] = branches_for(expression, rtype, generic)
                if not entry["branches"]:
                    continue
            if d.get("target"):
                entry["target"] = sorted(d["target"])
            if d.get("component"):
                entry["components"] = [
                    component(by_url, rtype, c["definition"], c["expression"])
                    for c in d["component"]
                ]
            types[rtype][d["code"]] = entry
    return types


def component(by_url: dict[str, Any], rtype: str, url: str, expression: str) -> dict[str, str]:
    # R4 publishes DocumentReference.relationship with its two component definitions swapped;
    # the type that fits is that of the parameter whose expression ends in the component's.
    for d in by_url.values():
        if rtype in d.get("base", []) and (d.get("expression") or "").endswith("." + expression):
            return {"type": d["type"], "path": expression}
    return {"type": by_url[url]["type"], "path": expression}


def build_compartments(source: Path) -> dict[str, list[str]]:
    definition = json.loads((source / "compartmentdefinition-patient.json").read_text())
    return {r["code"]: r["param"] for r in definition["resource"] if r["code"] in STORED_TYPES
            and r.get("param")}


def build_valuesets(source: Path) -> dict[str, list[str]]:
    # tools/fhir-r4-supplement/ adds the value sets of the types SOURCE has no definition of.
    resources = [
        e["resource"]
        for path in (source, ROOT / "tools" / "fhir-r4-supplement")
        for e in json.loads((path / "valuesets-required.json").read_text())["entry"]
    ]
    code_systems = {r["url"]: r for r in resources if r["resourceType"] == "CodeSystem"}

    def all_codes(concepts: list[dict[str, Any]]) -> list[str]:
        codes: list[str] = []
        for c in concepts:
            codes.append(c["code"])
            codes.extend(all_codes(c.get("concept", [])))
        return codes

    out: dict[str, list[str]] = {}
    for vs in resources:
        if vs["resourceType"] != "ValueSet":
            continue
        members: list[str] = []
        for include in vs.get("compose", {}).get("include", []):
            system = include.get("system")
            if not system or include.get("filter") or include.get("valueSet"):
                continue
            if include.get("concept"):
                members.extend(f"{system}|{c['code']}" for c in include["concept"])
            elif system in code_systems:
                members.extend(f"{system}|{c}" for c in all_codes(
                    code_systems[system].get("concept", [])))
        if members:
            out[vs["url"]] = sorted(set(members))
    return out


def main() -> None:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fhir-r4")
    table = {"types": build_params(source), "compartments": {"Patient": build_compartments(source)}}
    (OUT / "search_parameters.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    (OUT / "search_parameters_valuesets.json").write_text(
        json.dumps(build_valuesets(source), indent=0, sort_keys=True) + "\n"
    )
    count = sum(len(v) for v in table["types"].values())
    print(f"wrote {count} type/parameter pairs for {len(table['types'])} types")


if __name__ == "__main__":
    main()
