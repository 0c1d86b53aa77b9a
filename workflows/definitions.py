"""The definitions file: per-organization durations and targets of the workflows, as data.

    defaults:                       # every organization, unless it says otherwise
      handoff:
        timeout: PT4H               # ISO 8601 durations (docs/workflows.md, key by key)
    organizations:
      Organization/north:
        handoff:
          timeout: PT2S
          escalateTo: [PractitionerRole/coordinator]

YAML (so JSON too). Validated at start-up against `SCHEMA`: a wrong key or value stops the
server with an error naming the file, the line and the key path. `defaults` ships in
profiles/workflows.yaml; a deployment points FHIR_WORKFLOW_DEFINITIONS at its own copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from workflows.durations import parse_duration

Doc = dict[str, Any]
DURATION_PATTERN = r"^P(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?(T(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?$"
_REFERENCE = {"type": "string", "pattern": r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$"}
_NAME = r"^[a-z][a-z0-9-]*$"

# One workflow's settings: durations (keys ending in a verb of waiting), targets (references
# to whom an escalation or notification goes), switches. A workflow may add its own keys.
_WORKFLOW = {
    "type": "object",
    "propertyNames": {"pattern": r"^[a-z][A-Za-z0-9]*$"},
    "patternProperties": {
        r"(^timeout|Timeout|After|Within|Every)$": {"type": "string", "pattern": DURATION_PATTERN},
        r"(^targets|To|Targets)$": {"type": "array", "items": _REFERENCE},
    },
    "additionalProperties": {"type": ["string", "boolean", "number", "array"]},
}
_WORKFLOWS = {"type": "object", "propertyNames": {"pattern": _NAME}, "additionalProperties": _WORKFLOW}
SCHEMA: Doc = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "defaults": _WORKFLOWS,
        "organizations": {"type": "object", "propertyNames": _REFERENCE | {"pattern": r"^Organization/"},
                          "additionalProperties": _WORKFLOWS},
    },
}
_VALIDATOR = Draft202012Validator(SCHEMA)


class DefinitionsError(ValueError):
    """The definitions file is wrong; the message names the file, line and key."""


def _line(node: yaml.Node | None, path: Iterable[Any]) -> int | None:
    """The 1-based line of the value at `path` in the composed YAML."""
    line = node.start_mark.line + 1 if node is not None else None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _message(error: Any) -> str:
    pattern = error.schema.get("pattern") if error.validator == "pattern" else None
    if pattern == DURATION_PATTERN:
        return f"{error.instance!r} is not an ISO 8601 duration such as PT2S, PT15M or P3D (no years or months)"
    if pattern == _REFERENCE["pattern"]:
        return f"{error.instance!r} is not a reference such as PractitionerRole/123"
    if pattern == _NAME:
        return f"workflow name {error.instance!r}: lower-case letters, digits and '-'"
    if pattern == "^Organization/":
        return f"{error.instance!r}: organizations are keyed by Organization/<id>"
    message: str = error.message
    return message


def _key(path: Iterable[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(top level)"


class Definitions:
    def __init__(self, data: Doc | None = None) -> None:
        self.data: Doc = data or {}

    @classmethod
    def parse(cls, text: str, source: str = "<definitions>") -> Definitions:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            raise DefinitionsError(f"{source}: {where}not valid YAML/JSON: {getattr(exc, 'problem', exc)}") from None
        data = {} if data is None else data
        errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            error = errors[0]
            path = list(error.absolute_path)
            if "propertyNames" in error.schema_path and isinstance(error.instance, str):
                path = [*path, error.instance]  # the bad key itself, not its parent
            line = _line(node, path)
            raise DefinitionsError(f"{source}: line {line}: {_key(path)}: {_message(error)}")
        return cls(data)

    @classmethod
    def load(cls, path: Path) -> Definitions:
        try:
            text = path.read_text()
        except OSError as exc:
            raise DefinitionsError(f"{path}: cannot read the workflow definitions: {exc.strerror}") from None
        return cls.parse(text, str(path))

    def get(self, workflow: str, key: str, organization: str | None = None, default: Any = None) -> Any:
        """The organization's setting, else the default's, else `default`."""
        if organization:
            own = ((self.data.get("organizations") or {}).get(organization) or {}).get(workflow) or {}
            if key in own:
                return own[key]
        return ((self.data.get("defaults") or {}).get(workflow) or {}).get(key, default)

    def duration(self, workflow: str, key: str, organization: str | None = None,
                 default: timedelta | None = None) -> timedelta | None:
        value = self.get(workflow, key, organization)
        return parse_duration(value) if isinstance(value, str) else default
