"""FLUX.2 ([klein], [dev]): everything the engine needs to know about this family, in one place.

Paper defaults: none. Every seed method was tuned at 28-50 steps on FLUX.1-Kontext or Qwen-Image-Edit; a 4-step
distilled model has no published TokenDrop / SpotEdit / ToPi setting, nor has FLUX.2 [dev] (50 steps), so those
policies refuse this family unless given their parameters."""
from __future__ import annotations

from typing import Any

import torch

from ..family import Family
from . import attention, positions, vae
from .adapter import Flux2Adapter
from .dev_adapter import Flux2DevAdapter
from .kv import Flux2KVAdapter


def _key_rotary(transformer: torch.nn.Module, cond: dict[str, Any], device: torch.device) -> Any:
    return positions.key_rotary(transformer, torch.cat([cond["latent_ids"], cond["source_ids"]]).to(device))


FLUX2 = Family(
    name="flux2", adapter=Flux2Adapter, stats_processor=attention.stats_processor,
    spot_processor=None, key_rotary=_key_rotary, gather_rotary=None,   # both refused: `unsupported`
    unpack=vae.unpack, decoder_features=vae.decoder_features, paper={},
    unsupported={
        "layer_routing": "its single-stream blocks take text and image as one sequence, so a block hook cannot "
                         "gather the image rows of their inputs (ToPi's mode B)",
        "query_skip": "SpotEdit's partial attention has no FLUX.2 processor yet (its single-stream blocks fuse "
                      "the MLP into the attention projections, which the partial-query cache does not model)"},
    pipeline_adapters={"Flux2KleinKVPipeline": Flux2KVAdapter, "Flux2Pipeline": Flux2DevAdapter},
    pipeline_unsupported={"Flux2KleinKVPipeline": {
        "attention_stats": "its KV attention processors lay the sequence out as [text, references, noisy] and "
                           "its cached calls carry no reference tokens, so the statistics processors would "
                           "score the wrong rows"}})
