"""Rewriting references inside a transaction: fullUrls (urn:uuid:, urn:oid:, absolute URLs)
of entries that get a server id are replaced by `Type/id` wherever they appear as a whole
string value (references and uri/url elements), and inside narrative `div` links."""

from __future__ import annotations

from typing import Any


def rewrite(value: Any, mapping: dict[str, str]) -> Any:
    """Returns `value` with every string equal to a key of `mapping` replaced. Iterative-safe
    depth: bodies were already capped in depth by the HTTP layer."""
    if not mapping:
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "div" and isinstance(item, str):
                for old, new in mapping.items():
                    if old in item:
                        item = item.replace(f'"{old}"', f'"{new}"')
                out[key] = item
            else:
                out[key] = rewrite(item, mapping)
        return out
    if isinstance(value, list):
        return [rewrite(item, mapping) for item in value]
    if isinstance(value, str):
        return mapping.get(value, value)
    return value


def references(value: Any) -> list[str]:
    """Every `reference` string in a resource, in document order (without repeats)."""
    found: dict[str, None] = {}
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if key == "reference" and isinstance(item, str):
                    found[item] = None
                elif isinstance(item, dict | list):
                    stack.append(item)
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return list(found)


def conditional_references(value: Any) -> list[str]:
    """The `reference` values that are search URLs (`Patient?identifier=...`)."""
    return [r for r in references(value) if "?" in r and not r.startswith(("#", "urn:"))]
