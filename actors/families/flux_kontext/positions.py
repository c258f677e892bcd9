"""Flux positions: RoPE is built per token from its id row, so a token's rotary row is the row of its id."""
from __future__ import annotations

from typing import Any

import torch


def key_rotary(transformer: torch.nn.Module, image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of every image token [noisy, source]; rows equal the transformer's own."""
    return transformer.pos_embed(image_ids)


def family_key_rotary(transformer: torch.nn.Module, cond: dict[str, Any], device: torch.device) -> Any:
    """`Family.key_rotary`: the RoPE rows of every image token of an edit's conditioning."""
    return key_rotary(transformer, torch.cat([cond["latent_ids"], cond["source_ids"]]))


def gather_rotary(emb: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor,
                  kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The block's (cos, sin) [text + image, D] with the image rows gathered; text rows stay."""
    text = kwargs["encoder_hidden_states"].shape[1]
    index = torch.cat([torch.arange(text, device=rows.device), rows + text])
    return tuple(t.index_select(0, index) for t in emb)
