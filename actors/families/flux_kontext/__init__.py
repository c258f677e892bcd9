"""FLUX.1-Kontext: everything the engine needs to know about this family, in one place."""
from __future__ import annotations

from typing import Any

import torch

from ..family import Family
from . import attention, positions, vae
from .adapter import FluxKontextAdapter


def _key_rotary(transformer: torch.nn.Module, cond: dict[str, Any], device: torch.device) -> Any:
    return positions.key_rotary(transformer, torch.cat([cond["latent_ids"], cond["source_ids"]]))


FLUX_KONTEXT = Family(
    name="flux", adapter=FluxKontextAdapter, stats_processor=attention.FluxStatsProcessor,
    spot_processor=attention.FluxSpotProcessor, key_rotary=_key_rotary, gather_rotary=positions.gather_rotary,
    unpack=vae.unpack, decoder_features=vae.decoder_features,
    paper={"tokendrop": {"omega": 0.4, "full_steps": 2},
           "focus": {"tau_cosine": 0.07, "tau_lpips_vae": 0.2},   # RegionE's η = 0.93 (1 − η); SpotEdit's τ
           "regione": {"eta": 0.93},                          # RegionE's config for FluxKontextPipeline
           "spotedit": {"tau": 0.2, "dilate": 0},              # the paper's τ; dilation as the official code
           "topi": {"layers": {57: (13, 18, 31)}}})            # Appendix C.3, by transformer depth
