"""What the engine asks of a model family, instead of switching on its name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Family:
    name: str                  # RunInfo.family: what policies key their per-model defaults on
    adapter: Callable[[Any], Any]                              # pipe -> ModelAdapter
    stats_processor: Callable[[Any, int, Any], Any]            # (stock processor, layer, collector) -> processor
    spot_processor: Callable[[Any, int], Any]                  # (SpotKV, layer) -> processor
    key_rotary: Callable[[torch.nn.Module, dict, torch.device], Any]   # RoPE rows of every image token
    gather_rotary: Callable[[Any, torch.Tensor, dict], Any]    # a block's RoPE with image rows gathered
    unpack: Callable[[Any, torch.Tensor, int, int], torch.Tensor]      # packed tokens -> VAE latents
    decoder_features: Callable[[Any, torch.Tensor], list[torch.Tensor]]  # early VAE-decoder activations
