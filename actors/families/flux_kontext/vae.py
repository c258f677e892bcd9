"""Flux VAE access: packed tokens back to latents, and the decoder's first layers (SpotSelector)."""
from __future__ import annotations

from typing import Any

import torch


def unpack(pipe: Any, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, tokens, C·4] -> [B, C, h, w] as the pipeline does before decoding."""
    return pipe._unpack_latents(packed, height, width, pipe.vae_scale_factor)


def decoder_features(pipe: Any, latents: torch.Tensor) -> list[torch.Tensor]:
    """Activations of the decoder's conv_in, mid block and first up block for unpacked latents."""
    vae, dec = pipe.vae, pipe.vae.decoder
    x = latents / vae.config.scaling_factor + vae.config.shift_factor
    if getattr(vae, "post_quant_conv", None) is not None:   # optional in AutoencoderKL's config
        x = vae.post_quant_conv(x)
    f0 = dec.conv_in(x)
    f1 = dec.mid_block(f0, None)
    f2 = dec.up_blocks[0](f1, None)
    return [f0, f1, f2]
