"""Random source-token drop: a fixed ratio, or per-step budgets taken from another run's trace
(TokenDrop's matched-budget baseline). Seeded per edit, so runs repeat exactly."""
from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from pydantic import Field

from .base import Plan, Policy, PolicyError, PolicyRun, RunInfo, Step
from .shares import StepsOrShare, steps_of
from .params import Count, Integer, Number


class RandomRun(PolicyRun):
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
        if step.index < steps_of(self.policy.full_steps, self.run.steps):
            return Plan()
        kept = self._kept(step.index)
        keep = torch.zeros(total, dtype=torch.bool)
        order = torch.randperm(total, generator=self.generator)
        keep[order[:kept]] = True
        rank = torch.empty(total)
        rank[order] = -torch.arange(total, dtype=torch.float32)   # its seeded order: the next drawn rank next
        return Plan(keep_source=keep.to(self.run.device), source_rank=rank.to(self.run.device))

    def applied(self) -> dict[str, Any]:
        return {**self.policy.params(), "full_steps": steps_of(self.policy.full_steps, self.run.steps)}


class RandomDrop(Policy, name="random"):
    ratio: Annotated[Number, Field(ge=0.0, lt=1.0)] = 0.5   # drops ceil(ratio * L) source tokens per step
    budget: tuple[Count, ...] | None = None   # kept source tokens per step (another run's trace), not ratio
    full_steps: StepsOrShare = 0              # steps, or a share of them ("25%")
    reg: bool = False
    seed: Integer = 0

    def start(self, run: RunInfo) -> RandomRun:
        if self.budget is not None and len(self.budget) != run.steps:
            raise PolicyError(f"'budget' has {len(self.budget)} entries but the edit has {run.steps} steps")
        return RandomRun(self, run)
