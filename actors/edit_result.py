"""What one edit returns: the image and a per-step trace of what ran."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch


@dataclass(frozen=True)
class CacheCall:
    """One transformer call as a temporal cache (actors.caches) ran it."""

    branch: str               # the CFG branch (cache_context name): "cond", "uncond"
    skipped_blocks: int = 0   # blocks not run in this call (0: computed in full; every block: none run)
    skipped_call: bool = False   # the whole call was replaced by a prediction (no embedder, block or head ran)
    skipped_from: int | None = None   # the first block not run; every later one was not run either (first-block:
                                      # 1, magcache and taylorseer: 0); None = every block ran. What the FLOP
                                      # model reads, so that a trace prices on an architecture of another depth
    forced: bool = False      # the policy needed this call's internals: computed whatever the cache says
    measure: float | None = None   # what was compared with the threshold (first-block: relative L1 change of
                                   # the first block's residual; magcache: accumulated error), when measured

    @property
    def skipped(self) -> bool:
        """The cache served (part of) this call."""
        return self.skipped_call or self.skipped_blocks > 0


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
    cache_calls: tuple[CacheCall, ...] = ()  # one per transformer call of the step, when a cache ran; () = none

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
    cache_params: dict | None = None     # the temporal cache as applied ({"name": ..., **params}); None = no cache
    cache_summary: dict = field(default_factory=dict)    # what the cache reported (magcache calibration ratios)
    num_layers: int = 0                  # transformer blocks per call (what cache_skipped_blocks counts against)
    text_tokens: tuple[int, ...] = ()    # text tokens of each transformer call of a step (cond, then uncond)
    source_cached: bool = False          # partial steps served the source tokens' K/V from a cache (SpotEdit)
    text_encoders: str = "resident"      # where the text encoders live between prompts (actors.text_encoders)
    encoder_move_s: float = 0.0          # of `seconds`: moving offloaded text encoders to the card
    attention_backend: str = ""          # the attention backend the edit ran on (actors.attention_backend)
    kv_store: str = "compute"            # SpotEdit's K/V buffers: compute dtype or int8 (actors.kv_int8)
    shape_bucket: str = "off"            # token counts rounded up to multiples of it (actors.shape_buckets)

    @property
    def keep_ratio_mean(self) -> float:
        """Share of source tokens that entered the transformer, averaged over steps."""
        return float(np.mean([s.keep_ratio for s in self.trace])) if self.trace else 1.0

    @property
    def query_ratio_mean(self) -> float:
        """Share of noisy tokens whose queries were computed (SpotEdit skips the rest), averaged over steps."""
        shares = [1.0 if s.active is None or not s.noisy else s.active / s.noisy for s in self.trace]
        return float(np.mean(shares)) if shares else 1.0

    # ---- temporal caches (actors.caches): what was skipped, per CFG branch -----------------------------------
    @property
    def cache_name(self) -> str | None:
        return None if self.cache_params is None else str(self.cache_params["name"])

    def _per_branch(self, value) -> dict[str, int]:
        out: dict[str, int] = {}
        for step in self.trace:
            for call in step.cache_calls:
                out[call.branch] = out.get(call.branch, 0) + int(value(call))
        return out

    @property
    def cache_calls(self) -> dict[str, int]:
        """Transformer calls per CFG branch ("cond", "uncond") the cache saw; {} without a cache."""
        return self._per_branch(lambda c: 1)

    @property
    def cache_skipped_calls(self) -> dict[str, int]:
        """Calls per branch the cache served, in part (first-block: every block but the first; magcache: every
        block) or whole (taylorseer: nothing ran)."""
        return self._per_branch(lambda c: c.skipped)

    @property
    def cache_skipped_blocks(self) -> dict[str, int]:
        """Transformer blocks per branch not run because of the cache (of `num_layers` per call)."""
        return self._per_branch(lambda c: c.skipped_blocks)

    @property
    def cache_forced_calls(self) -> dict[str, int]:
        """Calls per branch the cache had to compute because the policy needed their internals."""
        return self._per_branch(lambda c: c.forced)

    def cache_columns(self) -> dict:
        """Flat values for a result row: the cache's name and parameters, and its skips in total and per branch
        (branches an edit does not have are 0; Flux Kontext only has "cond")."""
        calls, skipped, blocks = self.cache_calls, self.cache_skipped_calls, self.cache_skipped_blocks
        row = {"cache": self.cache_name, "cache_params": self.cache_params,
               "cache_calls": sum(calls.values()), "cache_skipped_calls": sum(skipped.values()),
               "cache_skipped_blocks": sum(blocks.values()),
               "cache_blocks_total": sum(calls.values()) * self.num_layers}
        for branch in ("cond", "uncond"):
            row[f"cache_skipped_calls_{branch}"] = skipped.get(branch, 0)
            row[f"cache_skipped_blocks_{branch}"] = blocks.get(branch, 0)
        return row
