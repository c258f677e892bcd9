"""FLUX.2 ([klein], [dev]): everything the engine needs to know about this family, in one place. The engine
parts are named lazily (`core.lazy`): reading the record imports neither torch nor diffusers.

Paper defaults: none. Every seed method was tuned at 28-50 steps on FLUX.1-Kontext or Qwen-Image-Edit; a 4-step
distilled model has no published TokenDrop / SpotEdit / ToPi setting, nor has FLUX.2 [dev] (50 steps), so those
policies refuse this family unless given their parameters."""
from __future__ import annotations

from core.lazy import Lazy

from ..family import Family
from ..protocols import FLUX2_DEV_PROTOCOL, FLUX2_KLEIN_PROTOCOL

_HERE = __name__

FLUX2 = Family(
    name="flux2", adapter=Lazy(f"{_HERE}.adapter:Flux2Adapter"),
    stats_processor=Lazy(f"{_HERE}.attention:stats_processor"),
    spot_processor=None, key_rotary=Lazy(f"{_HERE}.positions:family_key_rotary"),
    gather_rotary=None,   # both refused: `unsupported`
    unpack=Lazy(f"{_HERE}.vae:unpack"), decoder_features=Lazy(f"{_HERE}.vae:decoder_features"), paper={},
    unsupported={
        "layer_routing": "its single-stream blocks take text and image as one sequence, so a block hook cannot "
                         "gather the image rows of their inputs (ToPi's mode B)",
        "query_skip": "SpotEdit's partial attention has no FLUX.2 processor yet (its single-stream blocks fuse "
                      "the MLP into the attention projections, which the partial-query cache does not model)"},
    pipeline_adapters={"Flux2KleinKVPipeline": Lazy(f"{_HERE}.kv:Flux2KVAdapter"),
                       "Flux2Pipeline": Lazy(f"{_HERE}.dev_adapter:Flux2DevAdapter")},
    protocol=FLUX2_KLEIN_PROTOCOL,
    pipeline_protocols={"Flux2KleinKVPipeline": FLUX2_KLEIN_PROTOCOL, "Flux2Pipeline": FLUX2_DEV_PROTOCOL},
    pipeline_unsupported={"Flux2KleinKVPipeline": {
        "attention_stats": "its KV attention processors lay the sequence out as [text, references, noisy] and "
                           "its cached calls carry no reference tokens, so the statistics processors would "
                           "score the wrong rows"}})
