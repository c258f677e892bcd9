"""RegionE (region-aware editing acceleration; Kontext 2.41×, Qwen-Image-Edit 2.06×) as a baseline, through its
public `RegionEHelper(pipe).enable()/.disable()`.

RegionE launches fused gather-matmul Triton kernels: it runs on CUDA only. Its wheel pins old versions of
everything (torch, diffusers, boto3, ...): install it without its pins (`pip install --no-deps RegionE`, the
`regione` extra lists it for that reason), and it is imported only here, only when CUDA is present. It accepts
28 steps only, and keeps its settings in a module-level dict that `set_params` mutates: we give each helper a
copy of its settings so that two edits never see each other's.
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Any, Iterator

import torch
from pydantic import Field
from typing_extensions import Annotated

from policies.params import Count, Number

from .base import Peer, PeerError


class RegionE(Peer, name="regione"):
    threshold: Annotated[Number, Field(gt=0.0, le=1.0)] | None = None        # None: RegionE's per-pipeline value
    cache_threshold: Annotated[Number, Field(ge=0.0)] | None = None
    warmup_step: Count | None = None
    post_step: Count | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        if not torch.cuda.is_available():
            return "RegionE launches Triton kernels and runs on CUDA only; this machine has no CUDA device"
        if importlib.util.find_spec("RegionE") is None:
            return "RegionE is not installed (pip install --no-deps 'RegionE==0.1.0'; it pins old versions)"
        if importlib.util.find_spec("triton") is None:
            return "RegionE needs triton, which is not installed"
        return None

    @contextlib.contextmanager
    def attached(self, pipe: Any, steps: int) -> Iterator[Any]:
        if steps != 28:
            raise PeerError(f"peer 'regione' runs 28 steps only, got {steps}")
        from RegionE import RegionEHelper

        helper = RegionEHelper(pipe)
        helper.config = dict(helper.config)   # its settings are a module-level dict: this edit's own copy
        helper.set_params(num_inference_steps=28, warmup_step=self.warmup_step, post_step=self.post_step,
                          threshold=self.threshold, cache_threshold=self.cache_threshold)
        helper.enable()
        try:
            yield lambda: ({}, {"config": dict(helper.config)})
        finally:
            helper.disable()
