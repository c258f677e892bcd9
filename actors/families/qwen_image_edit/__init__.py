"""Qwen-Image-Edit and Edit-Plus: everything the engine needs to know about this family, in one place."""
from __future__ import annotations

from typing import Any

import torch

from ..family import Family
from . import attention, positions, vae
from .adapter import QwenImageEditAdapter


def _key_rotary(transformer: torch.nn.Module, cond: dict[str, Any], device: torch.device) -> Any:
    return positions.key_rotary(transformer, cond["img_shapes"], device)


QWEN_IMAGE_EDIT = Family(
    name="qwen", adapter=QwenImageEditAdapter, stats_processor=attention.QwenStatsProcessor,
    spot_processor=attention.QwenSpotProcessor, key_rotary=_key_rotary, gather_rotary=positions.gather_rotary,
    unpack=vae.unpack, decoder_features=vae.decoder_features,
    paper={"tokendrop": {"omega": 0.1, "full_steps": 4},
           "focus": {"tau_cosine": 0.2, "tau_lpips_vae": 0.15},   # RegionE's η = 0.80 (1 − η); SpotEdit's τ
           "regione": {"eta": 0.80},                          # RegionE's config for QwenImageEditPipeline
           "spotedit": {"tau": 0.15, "dilate": 1},             # the official code's values for Qwen
           "topi": {"layers": {60: (35, 37, 42)}}})            # Appendix C.3, by transformer depth
