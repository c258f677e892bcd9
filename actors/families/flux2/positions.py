"""FLUX.2 positions: 4-axis (T, H, W, L) RoPE ids, one row per token; reference image i sits at T = 10 + 10·i
(Flux2KleinPipeline._prepare_image_ids), the edited image at T = 0. RoPE is built per token from its id row, so
dropping reference tokens is one index on the packed latents and on their id rows."""
from __future__ import annotations

import torch


def key_rotary(transformer: torch.nn.Module, image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of every image token [noisy, references]; rows equal the transformer's own."""
    return transformer.pos_embed(image_ids)
