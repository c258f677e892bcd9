"""Sparse Context: after `warmup_steps` full steps, one fixed subset of reference tokens for the rest of
the edit, chosen per reference with a fixed or an adaptive budget by one of four strategies:

- `random`: uniform, as in the fine-tuning with random drop (the training distribution);
- `residual`: edit-relevant tokens, |x̂0 − z_src| per token at the end of warm-up (needs the reference
  aligned with the output: the first one; further references fall back to `saliency`);
- `attention`: attention mass Σ_heads Σ_noisy queries A on each reference token at the last warm-up step,
  summed over `layers`;
- `saliency`: the norm of each reference token's latent after removing that reference's mean token.

Budget: `keep` is the fraction of each reference's tokens kept (a list gives one per reference, the last
repeated); with `adaptive`, each reference keeps the smallest set holding `mass` of its score total
(never fewer than `min_keep` of its tokens), so the budget follows the input.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

import torch
from pydantic import BeforeValidator, field_serializer

from .base import Needs, Plan, Policy, PolicyError, PolicyRun, RunInfo, Seen, Step
from .shares import PositiveStepsOrShare, steps_of
from .params import Fraction, Seed, layer_numbers
from .topi_select import minimal_mass_set

Strategy = Literal["random", "residual", "attention", "saliency"]
STRATEGIES = get_args(Strategy)


def saliency(source: torch.Tensor) -> torch.Tensor:
    """‖z_j − mean z‖ per token of one reference ([tokens, C] packed latents)."""
    z = source.float()
    return (z - z.mean(dim=0, keepdim=True)).norm(dim=-1)


def top_fraction(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ⌈fraction·n⌉ highest-scoring tokens (ties broken by position, so runs repeat)."""
    n = scores.numel()
    count = min(n, math.ceil(fraction * n))
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    keep[torch.argsort(scores.double(), descending=True, stable=True)[:count]] = True
    return keep


class SparseContextRun(PolicyRun):
    def __init__(self, policy: "SparseContext", run: RunInfo) -> None:
        self.policy, self.run = policy, run
        self.sizes = [h * w for h, w in run.source_grids]
        self.generator = torch.Generator("cpu").manual_seed(run.seed * 1_000_003 + policy.seed)
        self.layers = tuple(range(run.num_layers)) if policy.layers is None else policy.layers
        too_deep = [layer for layer in self.layers if layer >= run.num_layers]
        if policy.strategy == "attention" and too_deep:
            raise PolicyError(f"layers {too_deep} do not exist in a {run.num_layers}-layer transformer")
        self.keep: torch.Tensor | None = None
        self.warmup = steps_of(policy.warmup_steps, run.steps, minimum=1)   # selection needs one observed step

    def _budget(self, reference: int) -> float:
        keep = self.policy.keep
        return keep[min(reference, len(keep) - 1)]

    def plan(self, step: Step) -> Plan:
        if self.keep is not None:
            return Plan(keep_source=self.keep)
        last_warmup = step.index == self.warmup - 1
        wants_attention = self.policy.strategy == "attention" and last_warmup
        return Plan(attention_layers=self.layers if wants_attention else ())

    def observe(self, step: Step, seen: Seen) -> None:
        if self.keep is not None or step.index < self.warmup - 1:
            return
        attention = None
        if self.policy.strategy == "attention":
            attention = sum(seen.attention[layer].mass.double().sum(0) for layer in self.layers)
        parts, start = [], 0
        for ref, size in enumerate(self.sizes):
            parts.append(self._select(ref, seen, slice(start, start + size), attention))
            start += size
        self.keep = torch.cat(parts).to(self.run.device)

    def _select(self, ref: int, seen: Seen, rows: slice, attention: torch.Tensor | None) -> torch.Tensor:
        strategy, size = self.policy.strategy, rows.stop - rows.start
        if strategy == "random":
            scores = torch.rand(size, generator=self.generator).to(seen.source.device)
        elif strategy == "residual" and ref == 0:
            scores = (seen.x0.float() - seen.source[rows].float()).abs().mean(dim=-1)
        elif strategy == "attention":
            scores = attention[rows]
        else:   # saliency, and residual on references that are not aligned with the output
            scores = saliency(seen.source[rows])
        if not self.policy.adaptive:
            return top_fraction(scores, self._budget(ref))
        # adaptive: the input decides how many tokens hold `mass` of this reference's score
        keep = minimal_mass_set(scores.clamp_min(0), self.policy.mass)
        floor = top_fraction(scores, self.policy.min_keep)
        return keep | floor

    def applied(self) -> dict[str, Any]:
        return {**self.policy.params(), "warmup_steps": self.warmup}

    def summary(self) -> dict[str, Any]:
        if self.keep is None:
            return {"kept_per_reference": None}
        out, start = [], 0
        for size in self.sizes:
            out.append(int(self.keep[start: start + size].sum()))
            start += size
        return {"kept_per_reference": out, "tokens_per_reference": self.sizes}


def _fractions(value: Any) -> list[Any]:
    """One fraction for every reference, or a list of them (one per reference, the last repeated)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise PolicyError("parameter 'keep' needs at least one fraction")
    return values


def _layers(value: Any) -> tuple[int, ...] | None:
    """"all" (or None) is every layer: None; else layer numbers, as a list or "1,3"."""
    if value is None or value == "all":
        return None
    numbers = layer_numbers(value)
    if numbers is None:
        raise PolicyError(f"parameter 'layers' must be 'all' or layer numbers, got {value!r}")
    return numbers


class SparseContext(Policy, name="sparse_context"):
    strategy: Strategy = "residual"
    keep: Annotated[tuple[Fraction, ...], BeforeValidator(_fractions)] = (0.5,)
    adaptive: bool = False           # budget from the score: the smallest set holding `mass` of it
    mass: Fraction = 0.9
    min_keep: Fraction = 0.1         # adaptive never keeps fewer than this share
    warmup_steps: PositiveStepsOrShare = 2   # steps, or a share of them ("25%"); at least 1 (selection observes a step)
    layers: Annotated[tuple[int, ...] | None, BeforeValidator(_layers)] = None   # for attention; None: all
    reg: bool = False
    seed: Seed = 0

    @property
    def needs(self) -> Needs:  # type: ignore[override]
        return Needs(attention_stats=self.strategy == "attention")   # only attention reads statistics

    @field_serializer("keep")
    def _keep_out(self, keep: tuple[float, ...]) -> float | list[float]:
        return keep[0] if len(keep) == 1 else list(keep)

    @field_serializer("layers")
    def _layers_out(self, layers: tuple[int, ...] | None) -> str | list[int]:
        return "all" if layers is None else list(layers)

    def start(self, run: RunInfo) -> SparseContextRun:
        return SparseContextRun(self, run)
