"""`focus`: compute only where the edit is, and reuse across steps there (dropedit's own accelerator).

The pattern the region-aware accelerators share (RegionE, SpotEdit + caches, CacheEdit, SpecEdit), written with
this engine's mechanisms and every knob a parameter recorded per row:

1. **Warm-up**: the first `warmup` share of the steps runs in full (the clean estimate x̂0 is unreliable early).
2. **Region**: at the end of the warm-up, each noisy token's one-step estimate x̂0 is scored against the source
   at its position (`region`: latent `cosine` distance as RegionE, latent `l2`, or SpotEdit's VAE-decoder
   `lpips_vae`); tokens scoring above `tau` (None: the family's default for that score: RegionE's η and SpotEdit's
   τ) are *active*, grown by `margin` tokens. `budget` instead makes the top share of the tokens active (a
   fixed budget, for matched comparisons).
3. **Partial steps**: only the active tokens get queries, projections and MLPs; the frozen noisy tokens and the
   source tokens enter attention as keys/values cached at the last full step (SpotEdit's partial attention,
   the static cache: no blending). Source tokens farther than `reference_margin` tokens from the region are
   dropped from the keys after their K/V were cached (None: every one stays).
4. **Temporal reuse on the active tokens**: the `cache` a focus edit runs (a temporal cache of
   `actors.caches`, default first-block) decides and stores over the rows the partial step computes, never
   over the frozen ones, and is never allowed to skip a full step (they refresh the K/V cache).
5. **Refresh**: a full step every `refresh` share of the steps after the warm-up re-partitions and refreshes the
   caches; the last `final` share of the steps runs in full (RegionE's smoothing of the seams).
   A frozen token keeps its last velocity, so it lands on its last full step's estimate x̂0 (`finish:
   estimate`), or is replaced by the source latent before decoding (`finish: source`).

An edit whose active share exceeds `max_active` (a global edit: most of the image changes) runs its partial
steps in full and is not partitioned again: the region buys nothing there, and the temporal cache alone
accelerates it (no step of it is forced).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from .base import STATIC_CONTEXT, Needs, Plan, Policy, PolicyRun, RunInfo, Seen, Step
from .params import Count, Fraction, Number
from .shares import share_steps
from .spotedit import dilate_edited

Region = Literal["l2", "cosine", "lpips_vae"]
Finish = Literal["estimate", "source"]
CONTEXT = STATIC_CONTEXT


def grow(active: torch.Tensor, grid: tuple[int, int], radius: int) -> torch.Tensor:
    """`active` (bool over the grid's tokens) grown by `radius` tokens (square neighbourhood)."""
    return ~dilate_edited(~active, grid, radius)


class FocusRun(PolicyRun):
    def __init__(self, policy: "Focus", run: RunInfo) -> None:
        self.policy, self.run = policy, run
        steps = run.steps
        self.tau = None if policy.budget is not None else \
            run.paper_default("focus", f"tau_{policy.region}") if policy.tau is None else policy.tau
        self.warmup = max(1, share_steps(policy.warmup, steps))
        self.final_from = steps - share_steps(policy.final, steps)
        every = share_steps(policy.refresh, steps) if policy.refresh > 0 else 0
        self.refreshes = frozenset(range(self.warmup + every, self.final_from, every)) if every else frozenset()
        self.active: torch.Tensor | None = None     # bool over noisy tokens, decided at the last full step
        self.frozen_at_end: torch.Tensor | None = None
        self.active_shares: list[float] = []        # the active share of each partition
        self.global_edit = False                    # a partition found most of the image changing: no more

    def is_full(self, index: int) -> bool:
        return index < self.warmup or index >= self.final_from or index in self.refreshes

    def plan(self, step: Step) -> Plan:
        if self.is_full(step.index) or self.active is None or bool(self.active.all()):
            # a temporal cache may skip any full step but those whose K/V the partial steps after it read
            return Plan(refreshes_context=self._partitions(step.index))
        self.frozen_at_end = ~self.active
        return Plan(active_noisy=self.active, context=CONTEXT, keep_source=self._reference_keys())

    def _reference_keys(self) -> torch.Tensor | None:
        """Source tokens kept as keys: the first reference's within `reference_margin` of the region, every
        token of the other references (they are not aligned with the edited image)."""
        margin = self.policy.reference_margin
        if margin is None:
            return None
        near = grow(self.active, self.run.noisy_grid, margin)
        rest = self.run.num_source - near.numel()
        return torch.cat([near, torch.ones(rest, dtype=torch.bool, device=near.device)])

    def _partitions(self, index: int) -> bool:
        """A full step followed by a partial one: it partitions and fills the K/V cache (never again once the
        edit was found global: its refreshes would only cost the temporal cache its skips)."""
        following = index + 1
        return (not self.global_edit and self.is_full(index) and following < self.run.steps
                and not self.is_full(following))

    def observe(self, step: Step, seen: Seen) -> None:
        if not self._partitions(step.index):
            return   # the partition is made on a full step's estimate, for the partial steps after it
        scores = self.run.token_scores(seen.x0, self.policy.region)
        active = grow(self._above(scores), self.run.noisy_grid, self.policy.margin)
        share = float(active.float().mean())
        self.active_shares.append(share)
        self.active = torch.ones_like(active) if share > self.policy.max_active else active
        if share > self.policy.max_active:
            self.global_edit, self.frozen_at_end = True, None   # a global edit: nothing is pasted back

    def _above(self, scores: torch.Tensor) -> torch.Tensor:
        if self.policy.budget is None:
            return scores > self.tau
        count = round(self.policy.budget * scores.numel())
        top = torch.zeros_like(scores, dtype=torch.bool)
        top[torch.topk(scores, count).indices] = True
        return top

    def replace_with_source(self) -> torch.Tensor | None:
        return self.frozen_at_end if self.policy.finish == "source" else None

    def applied(self) -> dict[str, Any]:
        return {**self.policy.params(), "tau": self.tau, "warmup_steps": self.warmup,
                "refresh_steps": sorted(self.refreshes), "final_steps": self.run.steps - self.final_from}

    def summary(self) -> dict[str, Any]:
        return {"active_shares": [round(s, 4) for s in self.active_shares], "global": self.global_edit,
                "frozen": 0 if self.frozen_at_end is None else int(self.frozen_at_end.sum())}


class Focus(Policy, name="focus"):
    warmup: Fraction = 0.1                 # share of the steps run in full first (>= 1 step)
    region: Region = "cosine"              # the score of x̂0 against the source (actors.spot_selector)
    tau: Annotated[Number, Field(ge=0.0)] | None = None   # score > tau is active; None: the family's default
    budget: Fraction | None = None         # instead of tau: this share of the tokens, the highest scores, active
    margin: Count = 1                      # tokens the active region is grown by
    reference_margin: Count | None = None  # source keys kept within this many tokens of the region; None: all
    refresh: Fraction = 0.25               # a full step every this share of the steps after warm-up (0: none)
    final: Fraction = 0.0                  # share of the steps at the end run in full
    max_active: Fraction = 0.7             # above this active share the edit is global: partial steps run full
    finish: Finish = "estimate"            # frozen tokens: their last estimate, or the source latent
    cache: str | None = "taylorseer:interval=5"   # temporal reuse on the active tokens ("none": off)

    @property
    def needs(self) -> Needs:  # type: ignore[override]
        cache = None if self.cache in (None, "", "none") else self.cache
        return Needs(query_skip=CONTEXT, token_scores=True, cache=cache)

    def start(self, run: RunInfo) -> FocusRun:
        return FocusRun(self, run)
