"""Qwen-Image VAE access: packed tokens back to (video-shaped) latents, and the decoder's first layers."""
from __future__ import annotations

from typing import Any

import torch

from .single_frame import single_frame_convs


def unpack(pipe: Any, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, tokens, C·4] -> [B, C, 1, h, w] as the pipeline does before decoding."""
    return pipe._unpack_latents(packed, height, width, pipe.vae_scale_factor)


def decoder_features(pipe: Any, latents: torch.Tensor) -> list[torch.Tensor]:
    """Activations of the decoder's conv_in, mid block and first up block (one frame) for unpacked
    latents; the decoder's input is post_quant_conv of the de-normalised latent."""
    vae, dec = pipe.vae, pipe.vae.decoder
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    with single_frame_convs(vae):   # one frame, no cache: the causal 3D convolutions as exact 2D ones
        f0 = dec.conv_in(vae.post_quant_conv(latents * std + mean))
        f1 = dec.mid_block(f0, None, [0])
        f2 = dec.up_blocks[0](f1, None, [0])
    return [f[:, :, -1] for f in (f0, f1, f2)]
