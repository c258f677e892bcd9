"""SpotEdit (Section 4, Algorithms S1–S2): skip the noisy tokens of regions that do not change.

After `initial_steps` full steps, each step scores every noisy token's clean estimate x̂0 against the
source (SpotSelector, `run.token_scores`); tokens with score ≤ τ are non-edited: they get no queries, and
the edited tokens attend to them through cached keys/values (SpotFusion), blended toward the source's
K/V with α(t) = cos²(πt/2) at every step (`alpha=paper`; `alpha=official`: as the official code runs it, t
divided by 1000 twice, so α ≈ 1 and the blend, from the cache each time, is the static cache). τ unset is
0.2 for Kontext (the paper) and 0.15 for Qwen-Image-Edit (the official code). The source tokens' K/V come from the cache too
(`condition_cache`). At `reset_steps` the step runs fully and refreshes the caches. The non-edited tokens
of the last step that skipped any are overwritten with the source latent before decoding.

Between steps a non-edited token keeps its last velocity (as the official code does): its x̂0 stays what
it was when last computed, and its latent moves on the straight line toward it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import AfterValidator

from .base import CachedContext, Needs, Plan, Policy, PolicyError, PolicyRun, RunInfo, Seen, Step
from .shares import PositiveStepsOrShare, steps_of
from .params import Count, Number, sorted_unique

Fusion = Literal["spotfusion", "static", "none"]   # blend toward the source / cache as is / naive skip
# spotfusion's α: `paper` = cos²(πt/2) with t the flow time, written back to the cache at every partial step
# (Eq. 8–9, Algorithm S1); `official` = as github.com/Biangbiang0321/SpotEdit runs it: t divided by 1000
# twice (t = σ/1000, so α ≈ 1 - 2.5e-6 at most: the static cache), blended from the cache at each call
Alpha = Literal["paper", "official"]
ALPHAS = get_args(Alpha)
Selector = Literal["lpips_vae", "l2", "cosine"]     # distances of x̂0 to the source (actors.spot_selector)
FUSIONS, SELECTORS = get_args(Fusion), get_args(Selector)
PAPER_STEPS = 50
OFFICIAL_RESETS = (13, 22, 31)        # the official code's reset steps for 50 steps (both families)


def fusion_alpha(t: float) -> float:
    """α(t) = cos²(πt/2), t the flow time (1 = noise, 0 = clean)."""
    return math.cos(math.pi * t / 2.0) ** 2


def official_alpha(sigma: float) -> float:
    """α as the official code computes it: the loop passes t.item()/1000 (= σ) and the processor divides
    by 1000 again, so α = cos²(π·σ/2000) ≥ 0.9999975."""
    return fusion_alpha(sigma / 1000.0)


def default_resets(steps: int) -> tuple[int, ...]:
    """The official schedule (13, 22, 31 of 50) at the same fractions of `steps`."""
    return tuple(sorted({round(s * steps / PAPER_STEPS) for s in OFFICIAL_RESETS}))


def dilate_edited(unchanged: torch.Tensor, grid: tuple[int, int], radius: int) -> torch.Tensor:
    """Grow the edited region (the complement of `unchanged`) by `radius` tokens (square neighbourhood)."""
    if radius <= 0:
        return unchanged
    edited = (~unchanged).float().reshape(1, 1, *grid)
    grown = F.max_pool2d(edited, kernel_size=2 * radius + 1, stride=1, padding=radius) > 0
    return ~grown.flatten()


class SpotEditRun(PolicyRun):
    def __init__(self, policy: "SpotEdit", run: RunInfo) -> None:
        if run.token_scores is None:
            raise PolicyError("policy 'spotedit' needs the editor's token scorer (RunInfo.token_scores)")
        self.policy, self.run = policy, run
        self.resets = frozenset(default_resets(run.steps) if policy.reset_steps is None else policy.reset_steps)
        # unset: the family's values (actors.families; Kontext τ 0.2 and dilation 0, Qwen 0.15 and 1)
        self.dilate = run.paper_default("spotedit", "dilate") if policy.dilate is None else policy.dilate
        self.tau = run.paper_default("spotedit", "tau") if policy.tau is None else policy.tau
        self.initial = steps_of(policy.initial_steps, run.steps, minimum=1)   # the first x̂0 needs a full step
        self.unchanged: torch.Tensor | None = None   # bool over noisy tokens, for the next step
        self.final: torch.Tensor | None = None       # non-edited tokens of the last step that skipped any
        self.scores: torch.Tensor | None = None      # the selector's scores behind `unchanged` (shape bucketing)

    def is_full(self, index: int) -> bool:
        return index < self.initial or index in self.resets

    def plan(self, step: Step) -> Plan:
        if self.is_full(step.index) or self.unchanged is None or not bool(self.unchanged.any()):
            return Plan()
        self.final = self.unchanged
        alpha, recursive = None, True
        if self.policy.fusion == "spotfusion":
            official = self.policy.alpha == "official"
            alpha = official_alpha(step.sigma) if official else fusion_alpha(step.sigma)
            recursive = not official
        context = dataclasses.replace(self.policy.needs.query_skip, alpha=alpha, recursive=recursive)
        rank = None if self.scores is None else self.scores.float()   # the most changed next
        return Plan(active_noisy=~self.unchanged, context=context, noisy_rank=rank)

    def observe(self, step: Step, seen: Seen) -> None:
        following = step.index + 1
        if following >= self.run.steps or self.is_full(following):
            self.unchanged = None   # the next step runs fully (or there is none): no need to score
            return
        scores = self.run.token_scores(seen.x0, self.policy.selector)
        self.unchanged = dilate_edited(scores <= self.tau, self.run.noisy_grid, self.dilate)
        self.scores = scores

    def replace_with_source(self) -> torch.Tensor | None:
        return self.final

    def applied(self) -> dict[str, Any]:
        return {**self.policy.params(), "tau": self.tau, "reset_steps": sorted(self.resets), "dilate": self.dilate,
                "initial_steps": self.initial}

    def summary(self) -> dict[str, Any]:
        return {"reset_steps": sorted(self.resets), "dilate": self.dilate,
                "replaced": 0 if self.final is None else int(self.final.sum())}


class SpotEdit(Policy, name="spotedit"):
    tau: Number | None = None               # score <= tau is non-edited (raw scale); None: Kontext 0.2, Qwen 0.15
    selector: Selector = "lpips_vae"
    fusion: Fusion = "spotfusion"
    alpha: Alpha = "paper"                  # spotfusion's α(t): the paper's recursive blend or the official code's
    condition_cache: bool = True            # source tokens' K/V cached at full steps, not recomputed
    initial_steps: PositiveStepsOrShare = 4         # full steps first (>= 1: the first x̂0 needs one), or a share ("8%")
    # None: the official 13, 22, 31 of 50, scaled to the step count; () = no reset
    reset_steps: Annotated[tuple[Count, ...], AfterValidator(sorted_unique)] | None = None
    dilate: Count | None = None             # None: the official value for the family (Kontext 0, Qwen 1)

    @property
    def needs(self) -> Needs:  # type: ignore[override]
        # what full steps cache: the non-edited context (unless naive skip) and the source tokens
        return Needs(query_skip=CachedContext(noisy=self.fusion != "none", source=self.condition_cache,
                                              fusion=self.fusion == "spotfusion"),
                     token_scores=True)

    def start(self, run: RunInfo) -> SpotEditRun:
        return SpotEditRun(self, run)
