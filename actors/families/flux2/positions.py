"""FLUX.2 positions: 4-axis (T, H, W, L) RoPE ids, one row per token; reference image i sits at T = 10 + 10·i
(Flux2KleinPipeline._prepare_image_ids), the edited image at T = 0. RoPE is built per token from its id row, so
dropping reference tokens is one index on the packed latents and on their id rows."""
from __future__ import annotations

from typing import Any

import torch


def key_rotary(transformer: torch.nn.Module, image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of every image token [noisy, references]; rows equal the transformer's own."""
    return transformer.pos_embed(image_ids)


def family_key_rotary(transformer: torch.nn.Module, cond: dict[str, Any], device: torch.device) -> Any:
    """`Family.key_rotary`: the RoPE rows of every image token of an edit's conditioning."""
    return key_rotary(transformer, torch.cat([cond["latent_ids"], cond["source_ids"]]).to(device))
