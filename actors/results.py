"""What one edit returns: the image and a per-step trace of what ran."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch


@dataclass(frozen=True)
class StepTrace:
    index: int
    sigma: float
    kept: int                    # source tokens that entered the transformer
    total: int                   # source tokens there are
    seconds: float               # wall time of the whole step (device synchronised)
    policy_seconds: float        # of which the policy's plan + observe
    keep_masks: tuple[np.ndarray, ...]   # bool per reference, shaped as its token grid
    from_layer: int = 0          # layers before this one saw every source token (ToPi's exempt layers)
    active: int | None = None    # noisy tokens that got queries (SpotEdit); None = all of them
    noisy: int = 0               # noisy tokens there are
    selector_seconds: float = 0.0   # token scoring: ToPi's attention statistics (outside plan/observe) and
                                    # SpotEdit's selector (inside observe, so also in policy_seconds)
    keys: int | None = None      # image tokens every attention layer saw as keys (SpotEdit); None = all
    active_mask: np.ndarray | None = None   # bool over the noisy grid: tokens that got queries; None = all

    @property
    def keep_mask(self) -> np.ndarray:
        """Keep mask over the first (edited) reference's token grid."""
        return self.keep_masks[0]

    @property
    def keep_ratio(self) -> float:
        return self.kept / self.total if self.total else 1.0


@dataclass
class EditResult:
    image: PIL.Image.Image         # 8-bit, as diffusers' output_type="pil"
    pixels: np.ndarray             # float RGB in [0, 1], [H, W, 3], before 8-bit rounding
    trace: list[StepTrace]
    height: int
    width: int
    seconds: float
    latents: torch.Tensor          # final packed latents [num_noisy, C], on CPU
    source_latents: torch.Tensor   # packed latents of the first reference [num_noisy, C], on CPU
    notes: list[str] = field(default_factory=list)
    policy_summary: dict = field(default_factory=dict)   # what the policy's run reported, if anything
    policy_params: dict = field(default_factory=dict)    # every parameter the policy applied, defaults resolved

    @property
    def keep_ratio_mean(self) -> float:
        """Share of source tokens that entered the transformer, averaged over steps."""
        return float(np.mean([s.keep_ratio for s in self.trace])) if self.trace else 1.0

    @property
    def query_ratio_mean(self) -> float:
        """Share of noisy tokens whose queries were computed (SpotEdit skips the rest), averaged over steps."""
        shares = [1.0 if s.active is None or not s.noisy else s.active / s.noisy for s in self.trace]
        return float(np.mean(shares)) if shares else 1.0
