"""`--set key=value` arguments: values are parsed as YAML, so numbers, booleans and lists keep their type."""
from __future__ import annotations

from typing import Any, Iterable

import yaml


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ValueError(f"--set {key}: cannot parse value {raw!r}: {err}") from None
    return out
