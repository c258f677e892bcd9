"""RegionE (Chen et al., arXiv 2510.25590, ICLR 2026) in this harness, written from its paper and the official code
(github.com/Peyton-Chen/RegionE, `tool/RegionE.py` defaults, `*/inplace.py` loops, `*/utils.py` partition), so
that the CUDA-only peer is compared on any machine, on the same records and metrics as every other method.

Three stages on a 28-step schedule (0-based steps; the official defaults `warmup_step` 6, `post_step` 2,
`refresh_step` "16"):
- **stabilization** (steps 0–5): full steps. At the last of them the partition is made once: x̂0 = z − σ·v of that
  step against the source latent at the same position, per-token cosine similarity; a token is edited when
  cos ≤ η (Kontext 0.93, Qwen-Image-Edit 0.80), then the mask is eroded by a 3×3 cross and dilated by a 5×5 square
  (`erosion_dilation`). It is never recomputed.
- **region-aware** (steps 6–25): only the edited tokens get queries; the unedited noisy tokens and the reference
  tokens enter attention through the K/V cached at the last full step (the Region-Instruction KV cache; edited
  rows' K/V are written back as they are computed; text is recomputed, as there). Unedited tokens move on the
  straight line of the last full step's velocity (the official "one-step" jump, which lands on the same
  latents at the next full step). The adaptive velocity decay cache (`actors.caches.velocity_decay`, its γ table
  and δ of the family) skips calls of the edited tokens; steps 0–6 are computed. Step 15 (`refresh_steps`) is a
  full step that refreshes every cache (not the partition).
- **smooth** (steps 26–27): full steps on every token.

Differences from the official code, said so: the same computations through PyTorch (no fused Triton
gather-matmul kernels), so CPU time measures FLOPs saved, not the kernels; Qwen's velocity cache is per CFG
branch (`velocity_decay`'s docstring).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field

from .base import STATIC_CONTEXT, Needs, Plan, Policy, PolicyRun, RunInfo, Seen, Step
from .params import Count, Fraction, Integer, Number, sorted_unique

CONTEXT = STATIC_CONTEXT   # the Region-Instruction KV cache
CROSS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])


def erode_dilate(edited: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The official `remove_scattered_points`: erosion by a 3×3 cross (zero padding), then dilation by a 5×5
    square; bool over the grid's tokens."""
    x = edited.float().reshape(1, 1, *grid)
    eroded = F.conv2d(x, CROSS.to(x)[None, None], padding=1) >= CROSS.sum()
    grown = F.max_pool2d(eroded.float(), kernel_size=5, stride=1, padding=2) > 0
    return grown.flatten()


class RegionERun(PolicyRun):
    def __init__(self, policy: "RegionE", run: RunInfo) -> None:
        self.policy, self.run = policy, run
        self.eta = run.paper_default("regione", "eta") if policy.eta is None else policy.eta
        self.last_full = policy.warmup_steps - 1                # the partition step
        self.smooth_from = run.steps - policy.post_steps
        self.refreshes = frozenset(policy.refresh_steps)
        self.edited: torch.Tensor | None = None
        self.edited_share: float | None = None

    def is_full(self, index: int) -> bool:
        return index <= self.last_full or index >= self.smooth_from or index in self.refreshes

    def plan(self, step: Step) -> Plan:
        if self.is_full(step.index) or self.edited is None or bool(self.edited.all()):
            return Plan()   # every full step is computed (the official loop never reuses velocity on them)
        return Plan(active_noisy=self.edited, context=CONTEXT)

    def observe(self, step: Step, seen: Seen) -> None:
        if step.index != self.last_full:
            return
        similarity = 1.0 - self.run.token_scores(seen.x0, "cosine")
        edited = similarity <= self.eta
        if self.policy.erosion_dilation:
            edited = erode_dilate(edited, self.run.noisy_grid)
        self.edited, self.edited_share = edited, float(edited.float().mean())

    def applied(self) -> dict[str, Any]:
        return {**self.policy.params(), "eta": self.eta}

    def summary(self) -> dict[str, Any]:
        return {"edited_share": None if self.edited_share is None else round(self.edited_share, 4)}


class RegionE(Policy, name="regione"):
    eta: Annotated[Number, Field(ge=-1.0, le=1.0)] | None = None   # cos ≤ η is edited; None: the family's
    warmup_steps: Annotated[Integer, Field(ge=1)] = 6        # stabilization: full steps 0 … warmup_steps − 1
    post_steps: Count = 2                                     # smooth stage: the last steps in full
    refresh_steps: Annotated[tuple[Count, ...], AfterValidator(sorted_unique)] = (15,)   # 0-based full steps
    erosion_dilation: bool = True
    delta: Fraction | None = None        # the velocity cache's threshold δ; None: the family's (Kontext 0.04)
    gamma: Literal["regione"] | Number = "regione"   # its decay table: the family's fitted one (28 steps) or a number
    velocity_cache: bool = True          # False: the regions alone (an ablation; an edit may then add any cache)

    @property
    def needs(self) -> Needs:  # type: ignore[override]
        cache = {"name": "velocity-decay", "delta": self.delta, "gamma": self.gamma,
                 "warmup": self.warmup_steps + 1} if self.velocity_cache else None   # official: steps 0 … warmup
        return Needs(query_skip=CONTEXT, token_scores=True, cache=cache)

    def start(self, run: RunInfo) -> RegionERun:
        return RegionERun(self, run)
