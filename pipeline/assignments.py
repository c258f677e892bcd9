"""`--set key=value`: the one parser of command-line assignments, for policy parameters (`dropedit edit`,
`dropedit bench`) and dotted config keys (`dropedit run`, pipeline.config.apply_overrides).

Values are YAML, so numbers, booleans and lists keep their type; an empty value is null, as in YAML."""
from __future__ import annotations

import re
from typing import Any, Iterable

import yaml

# YAML 1.1 reads "1e-3" (no dot) as a string; whoever types it means a number.
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


class AssignmentError(ValueError):
    """A `--set` argument that is not `key=value` with a YAML value."""


def parse_assignment(item: str) -> tuple[str, Any]:
    """``"omega=0.4"`` -> ``("omega", 0.4)``; the key is returned as written (dots included)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise AssignmentError(f"--set {item!r}: expected key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise AssignmentError(f"--set {key}: value {text!r} is not valid YAML: {exc}") from None
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    return key, value


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["omega=0.4", "layers=[3, 7]"]`` -> ``{"omega": 0.4, "layers": [3, 7]}`` (a repeated key: the last wins)."""
    return dict(parse_assignment(item) for item in items)
