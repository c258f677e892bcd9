"""The reference: every source token at every step."""
from __future__ import annotations

from typing import Any

from .base import Plan, RunInfo, Seen, Step


class FullRun:
    def plan(self, step: Step) -> Plan:
        return Plan()

    def observe(self, step: Step, seen: Seen) -> None:
        pass

    def applied(self) -> dict[str, Any]:
        return {}


class Full:
    name = "full"
    regularize = False

    def __init__(self) -> None:
        pass

    def params(self) -> dict[str, Any]:
        return {}

    def start(self, run: RunInfo) -> FullRun:
        return FullRun()
