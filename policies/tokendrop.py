"""TokenDrop (Algorithm 2, AdaptiveMask): keep the source tokens whose clean estimate moved away from the
source. D_t = |x̂0 - z_src| per token, Gaussian blur (k=11, σ=1) on the token grid, min-max normalised,
threshold = triangle(D_t) - ω·std(D_t); all tokens during the first `full_steps` steps. Pairs with the
regularized sampler (`reg`, on by default), which stands in for the dropped tokens.

The paper's blur is specified for FLUX's 64x64 token grid at 1024². `blur: grid` scales kernel and σ by
(grid side / 64), so that the blur covers the same share of the image on a smaller grid (a 16x16 toy grid:
k=3, σ=0.25); `blur: paper` (the default) uses kernel and σ as given, whatever the grid."""
from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
import torchvision.transforms.functional as TF
from pydantic import Field, field_validator

from .base import Plan, Policy, PolicyError, PolicyRun, RunInfo, Seen, Step
from .params import Integer, Number
from .shares import StepsOrShare, steps_of
from .triangle import triangle_threshold

PAPER_GRID = 64   # the token grid side the paper's kernel is specified for (FLUX at 1024²)


def grid_scaled_blur(kernel: int, sigma: float, grid: tuple[int, int]) -> tuple[int, float]:
    """(kernel, σ) scaled by min(grid) / 64; the kernel stays odd and at least 1."""
    scale = min(grid) / PAPER_GRID
    return max(1, 2 * round((kernel * scale - 1) / 2) + 1), sigma * scale


def difference_map(x0: torch.Tensor, source: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """|x̂0 - z_src| reduced to one value per token, on the (rows, cols) token grid."""
    return (x0.float() - source.float()).abs().mean(dim=-1).reshape(grid)


def blur(diff: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    # Reflect padding needs the kernel radius below the grid size: tiny grids get a smaller kernel.
    limit = 2 * min(diff.shape) - 1
    k = min(kernel, limit if limit % 2 else limit - 1)
    return TF.gaussian_blur(diff[None, None], [k, k], [sigma, sigma])[0, 0] if k > 1 else diff


def adaptive_keep(diff: torch.Tensor, omega: float, kernel: int = 11, sigma: float = 1.0) -> torch.Tensor:
    """Boolean keep mask over the token grid (Algorithm 2)."""
    d = blur(diff, kernel, sigma)
    lo, hi = d.min(), d.max()
    if not bool(hi > lo):   # a flat map carries no information about what changes: keep everything
        return torch.ones_like(d, dtype=torch.bool)
    d = (d - lo) / (hi - lo)
    std = d.std(unbiased=False)   # σ² = E[D²] - E[D]²
    return d > triangle_threshold(d) - omega * float(std)


class TokenDropRun(PolicyRun):
    def __init__(self, policy: "TokenDrop", run: RunInfo) -> None:
        # the paper's (ω, full steps) of the model family (actors.families) where unset
        self.omega = run.paper_default("tokendrop", "omega") if policy.omega is None else policy.omega
        self.full_steps = steps_of(run.paper_default("tokendrop", "full_steps") if policy.full_steps is None
                                   else policy.full_steps, run.steps)
        self.policy, self.run = policy, run
        self.kernel, self.sigma = policy.kernel, policy.blur_sigma
        if policy.blur == "grid":
            self.kernel, self.sigma = grid_scaled_blur(policy.kernel, policy.blur_sigma, run.noisy_grid)
        self.keep_aligned: torch.Tensor | None = None   # over the first reference's grid
        self.rank_aligned: torch.Tensor | None = None   # the blurred residual it was cut from (shape bucketing)

    def plan(self, step: Step) -> Plan:
        if step.index < self.full_steps or self.keep_aligned is None:
            return Plan()
        # Only the first reference is aligned with the target; further references stay whole.
        rest = self.run.num_source - self.keep_aligned.numel()
        keep = torch.cat([self.keep_aligned.flatten(),
                          torch.ones(rest, dtype=torch.bool, device=self.keep_aligned.device)])
        rank = torch.cat([self.rank_aligned.flatten().float(),
                          torch.full((rest,), float(self.rank_aligned.max()), device=keep.device)])
        return Plan(keep_source=keep, source_rank=rank)

    def observe(self, step: Step, seen: Seen) -> None:
        if step.index + 1 < self.full_steps:
            return
        grid = self.run.noisy_grid
        diff = difference_map(seen.x0, seen.source[: grid[0] * grid[1]], grid)
        self.keep_aligned = adaptive_keep(diff, self.omega, self.kernel, self.sigma)
        self.rank_aligned = blur(diff, self.kernel, self.sigma)   # what the threshold cut: its own ranking

    def applied(self) -> dict[str, Any]:
        return {**self.policy.params(), "omega": self.omega, "full_steps": self.full_steps,
                "kernel": self.kernel, "blur_sigma": self.sigma}


class TokenDrop(Policy, name="tokendrop"):
    # D is min-max normalised and std(D) <= 0.5: beyond |ω| = 1 the threshold leaves [0, 1] for most
    # maps and every token is kept (or none); the paper uses 0.1-0.4 and plots small ω.
    omega: Number | None = Field(None, ge=-1.0, le=1.0)   # None: the paper's value for the model family
    full_steps: StepsOrShare | None = None                 # None: the paper's value for the model family; "25%": a share
    reg: bool = True
    kernel: Annotated[Integer, Field(ge=1)] = 11
    blur_sigma: Annotated[Number, Field(gt=0.0)] = 1.0
    blur: Literal["paper", "grid"] = "paper"   # grid: kernel and σ scaled to the token grid (module docstring)

    @field_validator("kernel")
    @classmethod
    def _odd(cls, kernel: int) -> int:
        if kernel % 2 == 0:   # a Gaussian kernel needs a centre
            raise PolicyError(f"parameter 'kernel' must be odd, got {kernel!r}")
        return kernel

    def start(self, run: RunInfo) -> TokenDropRun:
        return TokenDropRun(self, run)
