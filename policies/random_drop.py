"""Random source-token drop: a fixed ratio, or per-step budgets taken from another run's trace
(TokenDrop's matched-budget baseline). Seeded per edit, so runs repeat exactly."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .base import Plan, PolicyError, RunInfo, Seen, Step, as_bool, as_float, as_int


class RandomRun:
    def __init__(self, policy: "RandomDrop", run: RunInfo) -> None:
        self.policy, self.run = policy, run
        self.generator = torch.Generator("cpu").manual_seed(run.seed * 1_000_003 + policy.seed)

    def _kept(self, index: int) -> int:
        total = self.run.num_source
        if self.policy.budget is not None:
            return max(0, min(total, self.policy.budget[index]))
        return total - math.ceil(self.policy.ratio * total)   # TokenDrop drops N = ceil(λL)

    def plan(self, step: Step) -> Plan:
        total = self.run.num_source
        if step.index < self.policy.full_steps:
            return Plan()
        kept = self._kept(step.index)
        keep = torch.zeros(total, dtype=torch.bool)
        keep[torch.randperm(total, generator=self.generator)[:kept]] = True
        return Plan(keep_source=keep.to(self.run.device))

    def observe(self, step: Step, seen: Seen) -> None:
        pass

    def applied(self) -> dict[str, Any]:
        return self.policy.params()


class RandomDrop:
    name = "random"

    def __init__(self, ratio: float = 0.5, budget: Sequence[int] | None = None, full_steps: int = 0,
                 reg: bool = False, seed: int = 0) -> None:
        self.ratio = as_float("ratio", ratio, 0.0, 1.0, hi_open=True)
        if budget is not None:
            if isinstance(budget, (str, bytes)) or not isinstance(budget, Sequence):
                raise PolicyError(f"parameter 'budget' must be a list of kept-token counts, one per step, got {budget!r}")
            budget = [as_int("budget[]", b, lo=0) for b in budget]
        self.budget = budget
        self.full_steps = as_int("full_steps", full_steps, lo=0)
        self.regularize = as_bool("reg", reg)
        self.seed = as_int("seed", seed)

    def params(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "budget": self.budget, "full_steps": self.full_steps,
                "reg": self.regularize, "seed": self.seed}

    def start(self, run: RunInfo) -> RandomRun:
        if self.budget is not None and len(self.budget) != run.steps:
            raise PolicyError(f"'budget' has {len(self.budget)} entries but the edit has {run.steps} steps")
        return RandomRun(self, run)
