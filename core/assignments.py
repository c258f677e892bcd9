"""`key=value` assignments: the one parser of every `--set` (run, edit, bench, train, the toy's training) and of
the inline `name:key=value,...` forms (`--cache`, `--policy`).

Rules:
- An assignment is `key=value`; the key is stripped and must not be empty, else AssignmentError naming it.
- A value is YAML, so `8` is an int, `0.5` a float, `true`/`false` bools, `[3, 7]` a list, `{a: 1}` a mapping;
  an empty value and `null` are None. YAML 1.1 reads `1e-3` (no dot) as a string: it is a float here.
- A bracketed list may separate its items with `;` instead of `,` (`ratios=[1.0;1.1;0.9]`), so that it fits
  inside a comma-separated inline form.
- A value that is not valid YAML raises AssignmentError naming the assignment.
- Dotted keys (`actors.max_size=4`) address nested mappings, for the callers that assign into a tree
  (`assign`, `apply_assignments`): a missing or null section becomes a new mapping, a numeric part indexes an
  existing list, and setting a key inside a scalar is an error naming the key.
- In a list of assignments a repeated key: the last wins.

Depends on nothing of the project (core/)."""
from __future__ import annotations

import copy
import re
from typing import Any, Iterable, Mapping

import yaml

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


class AssignmentError(ValueError):
    """An assignment that is not `key=value` with a YAML value, or a dotted key that cannot be set."""


def _top_level(text: str, sep: str) -> list[int]:
    """Positions of `sep` outside brackets and braces."""
    depth, found = 0, []
    for i, ch in enumerate(text):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == sep and depth == 0:
            found.append(i)
    return found


def split_items(text: str, sep: str = ",") -> list[str]:
    """``"a=1,b=[1,2]"`` -> ``["a=1", "b=[1,2]"]``: split on `sep` outside brackets; empty items dropped."""
    cuts = [-1, *_top_level(text, sep), len(text)]
    return [p for p in (text[a + 1:b].strip() for a, b in zip(cuts, cuts[1:])) if p]


def parse_value(text: str) -> Any:
    """One value by the rules above (YAML; empty is None; `1e-3` a float; `[a;b]` a list)."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("[") and text.endswith("]") and _top_level(text[1:-1], ";"):
        return [parse_value(item) for item in split_items(text[1:-1], ";")]
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AssignmentError(f"value {text!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    return value


def parse_assignment(item: str) -> tuple[str, Any]:
    """``"omega=0.4"`` -> ``("omega", 0.4)``; the key is returned as written (dots included)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise AssignmentError(f"--set {item!r}: expected key=value")
    try:
        return key, parse_value(text)
    except AssignmentError as exc:
        raise AssignmentError(f"--set {key}: {exc}") from None


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["omega=0.4", "layers=[3, 7]"]`` -> ``{"omega": 0.4, "layers": [3, 7]}`` (a repeated key: the last wins)."""
    return dict(parse_assignment(item) for item in items)


def parse_inline(text: str) -> dict[str, Any]:
    """``"threshold=0.1,ratios=[1;2]"`` (the part after `name:` of `--cache` / `--policy`) -> a dict."""
    return parse_assignments(split_items(text))


def assign(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted `key` in `tree` in place (sections created, list items indexed; see the module's rules)."""
    parts = key.split(".")
    if not all(parts):
        raise AssignmentError(f"--set {key}: bad dotted key {key!r}")
    node: Any = tree
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        index: Any = part
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise AssignmentError(f"--set {where}: no list item {part!r} (length {len(node)})")
            index = int(part)
        elif not isinstance(node, dict):
            raise AssignmentError(f"--set {key}: {'.'.join(parts[:depth])} is a scalar, cannot set a key in it")
        if depth == len(parts) - 1:
            node[index] = value
            return
        if isinstance(node, dict) and node.get(index) is None:
            node[index] = {}   # a new (or null) section
        node = node[index]


def apply_assignments(tree: Mapping[str, Any], items: Iterable[str]) -> dict[str, Any]:
    """A deep copy of `tree` with each dotted `key=value` of `items` assigned, in order."""
    out = copy.deepcopy(dict(tree))
    for item in items:
        assign(out, *parse_assignment(item))
    return out
