"""Qwen-Image-Edit and Edit-Plus: everything the engine needs to know about this family, in one place. The
engine parts are named lazily (`core.lazy`): reading the record imports neither torch nor diffusers."""
from __future__ import annotations

from core.lazy import Lazy

from ..family import Family
from ..protocols import QWEN_IMAGE_EDIT_PROTOCOL

_HERE = __name__

QWEN_IMAGE_EDIT = Family(
    name="qwen", adapter=Lazy(f"{_HERE}.adapter:QwenImageEditAdapter"),
    stats_processor=Lazy(f"{_HERE}.attention:QwenStatsProcessor"),
    spot_processor=Lazy(f"{_HERE}.attention:QwenSpotProcessor"),
    key_rotary=Lazy(f"{_HERE}.positions:family_key_rotary"), gather_rotary=Lazy(f"{_HERE}.positions:gather_rotary"),
    unpack=Lazy(f"{_HERE}.vae:unpack"), decoder_features=Lazy(f"{_HERE}.vae:decoder_features"),
    protocol=QWEN_IMAGE_EDIT_PROTOCOL,
    paper={"tokendrop": {"omega": 0.1, "full_steps": 4},
           "focus": {"tau_cosine": 0.2, "tau_lpips_vae": 0.15},   # RegionE's η = 0.80 (1 − η); SpotEdit's τ
           "regione": {"eta": 0.80},                          # RegionE's config for QwenImageEditPipeline
           "spotedit": {"tau": 0.15, "dilate": 1},             # the official code's values for Qwen
           "topi": {"layers": {60: (35, 37, 42)}}})            # Appendix C.3, by transformer depth
