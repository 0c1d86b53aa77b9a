"""Generates the validator's tables in fhir_server/data/ from the official R4 definitions.

    python tools/gen_fhir_data.py [SOURCE]      # SOURCE defaults to ../shared/fhir-r4

The server never reads SOURCE; it loads what this writes:
- fhir.schema.json: the official R4 JSON schema (draft-06) without its `description` texts
  (2.7 MB -> 0.7 MB). Nothing else is pruned: `contained` may hold any resource type, so
  ResourceList reaches 678 of the 680 definitions anyway (the other two are primitives).
- structure.json: what the schema does not say, from the StructureDefinitions:
  per schema definition (Task, Task_Restriction, Narrative, ...) its min>=1 elements, its
  choice elements ([x] -> JSON names) and its required bindings not already enforced by a
  schema `enum`; per resource type the top-level summary and mandatory elements; the
  expansions of every required-binding value set that can be expanded locally, and the list
  of those that cannot (with the reason).

SOURCE's profiles-resources.json is a subset of the R4 StructureDefinitions that lacks
Observation and DetectedIssue; tools/fhir-r4-supplement/ holds those two (narrative and
differential left out) and the ValueSet and CodeSystem observation-status their required
bindings need, all R4 4.0.1 as published. The redistribution they came from had rebound
DetectedIssue.status to R5's detectedissue-status; the supplement has R4's binding back
(observation-status|4.0.1). A stored type with no StructureDefinition stops the generator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server.resource_types import STORED_TYPES  # noqa: E402
from fhir_server.validation.terminology import Unexpandable, canonical, expand  # noqa: E402

BOUND_TYPES = {"code", "Coding", "CodeableConcept"}
SUPPLEMENT = ROOT / "tools" / "fhir-r4-supplement"


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: strip_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def prune_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # Only the descriptions go: reachability pruning would keep 678 of 680 definitions
    # (ResourceList, for `contained`, reaches every resource) and drop the inline-only
    # primitives oid and uuid that the validator needs.
    out: dict[str, Any] = strip_descriptions(schema)
    out["definitions"] = dict(sorted(out["definitions"].items()))
    return out


def prop_schema(definition: dict[str, Any], name: str) -> dict[str, Any] | None:
    prop: dict[str, Any] | None = definition.get("properties", {}).get(name)
    if prop is None:
        return None
    items: dict[str, Any] = prop.get("items", prop)
    return items


def cap(code: str) -> str:
    return code[:1].upper() + code[1:]


def structure_tables(
    schema: dict[str, Any], definitions: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(per-definition tables, per-resource summary tables, bound value set urls)."""
    defs = schema["definitions"]
    tables: dict[str, dict[str, Any]] = {}
    resources: dict[str, Any] = {}
    bound: set[str] = set()
    for sd in definitions:
        if sd.get("derivation") == "constraint" or sd["kind"] == "primitive-type":
            continue
        root = sd["type"]
        if root not in defs:
            continue
        path_def = {root: root}
        summary: list[str] = []
        mandatory: list[str] = []
        for el in sd["snapshot"]["element"]:
            path: str = el["path"]
            if "." not in path:
                continue
            parent, name = path.rsplit(".", 1)
            owner = path_def.get(parent)
            if owner is None:
                raise SystemExit(f"{path}: parent {parent} has no schema definition")
            base = name.removesuffix("[x]")
            table = tables.setdefault(owner, {"path": parent})
            types = [t["code"] for t in el.get("type", [])]
            if name.endswith("[x]"):
                keys = [base + cap(t) for t in types]
                missing = [k for k in keys if prop_schema(defs[owner], k) is None]
                if missing:
                    raise SystemExit(f"{path}: schema {owner} lacks {missing}")
                table.setdefault("choices", {})[base] = keys
            else:
                prop = prop_schema(defs[owner], name)
                if prop is None:
                    raise SystemExit(f"{path}: schema {owner} lacks {name}")
                if set(types) & {"BackboneElement", "Element"} and "contentReference" not in el:
                    path_def[path] = prop["$ref"].rsplit("/", 1)[-1]
                binding = el.get("binding", {})
                if (
                    binding.get("strength") == "required"
                    and set(types) <= BOUND_TYPES
                    and "enum" not in prop
                ):
                    url = canonical(binding["valueSet"])
                    table.setdefault("bindings", {})[name] = url
                    bound.add(url)
            if el.get("min", 0) >= 1 and base not in table.get("required", []):
                table.setdefault("required", []).append(base)
            if parent == root:
                if el.get("isSummary"):
                    summary.append(base)
                if el.get("min", 0) >= 1:
                    mandatory.append(base)
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resources[root] = {"mandatory": sorted(mandatory), "summary": sorted(summary)}
    for table in tables.values():
        if "required" in table:
            table["required"].sort()
    return dict(sorted(tables.items())), dict(sorted(resources.items())), bound


def value_set_tables(
    bundle: dict[str, Any], bound: set[str]
) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    code_systems: dict[str, dict[str, Any]] = {}
    value_sets: dict[str, dict[str, Any]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        target = code_systems if resource["resourceType"] == "CodeSystem" else value_sets
        target[resource["url"]] = resource
    expansions: dict[str, dict[str, list[str]]] = {}
    unexpandable: dict[str, str] = {}
    for url in sorted(set(value_sets) | bound):
        try:
            found = expand(value_sets.get(url, {"url": url}), code_systems, value_sets)
        except Unexpandable as exc:
            unexpandable[url] = str(exc)
            continue
        expansions[url] = {system: sorted(codes) for system, codes in sorted(found.items())}
    return expansions, unexpandable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", nargs="?", type=Path, default=ROOT.parent / "shared" / "fhir-r4")
    parser.add_argument("--out", type=Path, default=ROOT / "fhir_server" / "data")
    args = parser.parse_args(argv)
    src: Path = args.source
    schema = prune_schema(load(src / "fhir.schema.json"))
    definitions = [
        e["resource"]
        for path in (
            src / "profiles-types.json",
            src / "profiles-resources.json",
            SUPPLEMENT / "profiles-resources.json",
        )
        for e in load(path)["entry"]
        if e["resource"]["resourceType"] == "StructureDefinition"
    ]
    tables, resources, bound = structure_tables(schema, definitions)
    missing = sorted(set(STORED_TYPES) - set(resources))
    if missing:
        raise SystemExit(f"no StructureDefinition for the stored types {missing}")
    value_sets = load(src / "valuesets-required.json")
    value_sets["entry"] += load(SUPPLEMENT / "valuesets-required.json")["entry"]
    expansions, unexpandable = value_set_tables(value_sets, bound)
    structure = {
        "definitions": tables,
        "resources": {k: v for k, v in resources.items() if k in STORED_TYPES},
        "valueSets": expansions,
        "unexpandable": unexpandable,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in (("fhir.schema.json", schema), ("structure.json", structure)):
        text = json.dumps(data, sort_keys=True, indent=0, separators=(",", ":"), ensure_ascii=False)
        (args.out / name).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out / name} ({len(text) // 1024} KB)")
    print(f"{len(tables)} definitions, {len(expansions)} value sets, "
          f"{len(unexpandable)} unexpandable: {', '.join(sorted(unexpandable))}")


if __name__ == "__main__":
    main()
