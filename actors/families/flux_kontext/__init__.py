"""FLUX.1-Kontext: everything the engine needs to know about this family, in one place. The engine parts are
named lazily (`core.lazy`): reading the record imports neither torch nor diffusers."""
from __future__ import annotations

from core.lazy import Lazy

from ..family import Family
from ..protocols import FLUX_KONTEXT_PROTOCOL

_HERE = __name__

FLUX_KONTEXT = Family(
    name="flux", adapter=Lazy(f"{_HERE}.adapter:FluxKontextAdapter"),
    stats_processor=Lazy(f"{_HERE}.attention:FluxStatsProcessor"),
    spot_processor=Lazy(f"{_HERE}.attention:FluxSpotProcessor"),
    key_rotary=Lazy(f"{_HERE}.positions:family_key_rotary"), gather_rotary=Lazy(f"{_HERE}.positions:gather_rotary"),
    unpack=Lazy(f"{_HERE}.vae:unpack"), decoder_features=Lazy(f"{_HERE}.vae:decoder_features"),
    protocol=FLUX_KONTEXT_PROTOCOL,
    paper={"tokendrop": {"omega": 0.4, "full_steps": 2},
           "focus": {"tau_cosine": 0.07, "tau_lpips_vae": 0.2},   # RegionE's η = 0.93 (1 − η); SpotEdit's τ
           "regione": {"eta": 0.93},                          # RegionE's config for FluxKontextPipeline
           "spotedit": {"tau": 0.2, "dilate": 0},              # the paper's τ; dilation as the official code
           "topi": {"layers": {57: (13, 18, 31)}}})            # Appendix C.3, by transformer depth
