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
from typing import Any, Sequence

import torch

from .base import Plan, PolicyError, RunInfo, Seen, Step, as_bool, as_float, as_int
from .topi_select import minimal_mass_set

STRATEGIES = ("random", "residual", "attention", "saliency")


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


class SparseContextRun:
    def __init__(self, policy: "SparseContext", run: RunInfo) -> None:
        self.policy, self.run = policy, run
        self.sizes = [h * w for h, w in run.source_grids]
        self.generator = torch.Generator("cpu").manual_seed(run.seed * 1_000_003 + policy.seed)
        self.layers = tuple(range(run.num_layers)) if policy.layers is None else policy.layers
        too_deep = [layer for layer in self.layers if layer >= run.num_layers]
        if policy.strategy == "attention" and too_deep:
            raise PolicyError(f"layers {too_deep} do not exist in a {run.num_layers}-layer transformer")
        self.keep: torch.Tensor | None = None

    def _budget(self, reference: int) -> float:
        keep = self.policy.keep
        return keep[min(reference, len(keep) - 1)]

    def plan(self, step: Step) -> Plan:
        if self.keep is not None:
            return Plan(keep_source=self.keep)
        last_warmup = step.index == self.policy.warmup_steps - 1
        wants_attention = self.policy.strategy == "attention" and last_warmup
        return Plan(attention_layers=self.layers if wants_attention else ())

    def observe(self, step: Step, seen: Seen) -> None:
        if self.keep is not None or step.index < self.policy.warmup_steps - 1:
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
        return self.policy.params()

    def summary(self) -> dict[str, Any]:
        if self.keep is None:
            return {"kept_per_reference": None}
        out, start = [], 0
        for size in self.sizes:
            out.append(int(self.keep[start: start + size].sum()))
            start += size
        return {"kept_per_reference": out, "tokens_per_reference": self.sizes}


class SparseContext:
    name = "sparse_context"

    def __init__(self, strategy: str = "residual", keep: float | Sequence[float] = 0.5,
                 adaptive: bool = False, mass: float = 0.9, min_keep: float = 0.1, warmup_steps: int = 2,
                 layers: str | Sequence[int] | None = None, reg: bool = False, seed: int = 0) -> None:
        if strategy not in STRATEGIES:
            raise PolicyError(f"parameter 'strategy' must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        self.strategy = strategy
        values = keep if isinstance(keep, (list, tuple)) else [keep]
        if not values:
            raise PolicyError("parameter 'keep' needs at least one fraction")
        self.keep = [as_float("keep", v, lo=0.0, hi=1.0) for v in values]
        self.adaptive = as_bool("adaptive", adaptive)
        self.mass = as_float("mass", mass, lo=0.0, hi=1.0)
        self.min_keep = as_float("min_keep", min_keep, lo=0.0, hi=1.0)
        self.warmup_steps = as_int("warmup_steps", warmup_steps, lo=1)   # selection needs one observed step
        self.regularize = as_bool("reg", reg)
        self.seed = as_int("seed", seed, lo=0)
        if layers is None or layers == "all":
            self.layers = None
        else:
            parts = layers.split(",") if isinstance(layers, str) else layers
            try:
                self.layers = tuple(sorted({as_int("layers", p, lo=0) for p in parts}))
            except PolicyError:
                raise PolicyError(f"parameter 'layers' must be 'all' or layer numbers, got {layers!r}") from None

    def params(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "keep": self.keep if len(self.keep) > 1 else self.keep[0],
                "adaptive": self.adaptive, "mass": self.mass, "min_keep": self.min_keep,
                "warmup_steps": self.warmup_steps, "layers": "all" if self.layers is None else list(self.layers),
                "reg": self.regularize, "seed": self.seed}

    def start(self, run: RunInfo) -> SparseContextRun:
        return SparseContextRun(self, run)
