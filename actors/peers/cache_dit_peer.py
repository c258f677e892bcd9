"""cache-dit (vipshop/cache-dit) as a baseline: DBCache, with or without its TaylorSeer calibrator, enabled on the
pipeline with `cache_dit.enable_cache` for one `__call__` and disabled afterwards.

DBCache runs the first `front` blocks (Fn), compares their residual with the last computed step's (relative L1,
`threshold`), and on a hit reuses the middle blocks' residual, then runs the last `back` blocks (Bn); `warmup`
steps always compute. cache-dit's default of 8 front blocks is refused by a model with fewer blocks (the toy has
6): the default here is Fn=1, Bn=0, as the issue's measurement. With `taylorseer`, the reused residual is
extrapolated by TaylorSeer of order `order`. Its statistics (`cache_dit.summary`) give the cached steps, per CFG
branch when the pipeline runs true CFG (Qwen: cache-dit caches the two branches separately).
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
from typing import Any, Iterator

from pydantic import Field
from typing_extensions import Annotated

from policies.params import Count, Integer, Number

from .base import Peer, PeerError


class CacheDit(Peer, name="cache-dit"):
    threshold: Annotated[Number, Field(ge=0.0)] = 0.12   # residual_diff_threshold
    front: Annotated[Integer, Field(ge=1)] = 1           # Fn_compute_blocks
    back: Count = 0                                      # Bn_compute_blocks
    warmup: Count = 4                                    # max_warmup_steps
    max_cached: Integer = -1                             # max_cached_steps (-1: no cap)
    max_continuous: Integer = -1                         # max_continuous_cached_steps (-1: no cap)
    taylorseer: bool = False                             # TaylorSeerCalibratorConfig
    order: Annotated[Integer, Field(ge=1, le=4)] = 1     # taylorseer_order

    @classmethod
    def unavailable(cls) -> str | None:
        if importlib.util.find_spec("cache_dit") is None:
            return "cache-dit is not installed (pip install -e '.[peers]')"
        return None

    @contextlib.contextmanager
    def attached(self, pipe: Any, steps: int) -> Iterator[Any]:
        import cache_dit
        from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

        blocks = len(pipe.transformer.transformer_blocks) + len(getattr(pipe.transformer, "single_transformer_blocks", []))
        if self.front + self.back > blocks:
            raise PeerError(f"peer 'cache-dit': front + back = {self.front + self.back} blocks, the model has {blocks}")
        config = DBCacheConfig(Fn_compute_blocks=self.front, Bn_compute_blocks=self.back,
                               residual_diff_threshold=self.threshold, max_warmup_steps=self.warmup,
                               max_cached_steps=self.max_cached, max_continuous_cached_steps=self.max_continuous,
                               num_inference_steps=steps)
        calibrator = TaylorSeerCalibratorConfig(taylorseer_order=self.order) if self.taylorseer else None
        quiet = logging.getLogger("cache_dit")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        cache_dit.enable_cache(pipe, cache_config=config, calibrator_config=calibrator)
        try:
            yield lambda: _stats(cache_dit.summary(pipe, logging=False))
        finally:
            cache_dit.disable_cache(pipe)
            quiet.setLevel(level)


def _stats(stats: list[Any]) -> tuple[dict[str, int], dict[str, Any]]:
    if not stats:
        return {}, {}
    s = stats[0]
    skipped = {"cond": len(s.cached_steps or [])}
    if s.cfg_cached_steps or s.cfg_residual_diffs:
        skipped["uncond"] = len(s.cfg_cached_steps or [])
    details = {"cached_steps": list(s.cached_steps or []), "cfg_cached_steps": list(s.cfg_cached_steps or []),
               "residual_diffs": {int(k): float(v) for k, v in (s.residual_diffs or {}).items()}}
    return skipped, details
