"""FLUX.2 VAE access: packed tokens back to VAE latents, and the decoder's first layers (SpotSelector).

FLUX.2 packs 2x2-patchified latents, normalised by the VAE's batch-norm statistics: unpacking undoes both,
so `unpack` returns what `vae.decode` takes, as Flux2KleinPipeline computes it before decoding."""
from __future__ import annotations

from typing import Any

import torch


def _bn_stats(pipe: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    bn = pipe.vae.bn
    mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
    std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps).to(like.device, like.dtype)
    return mean, std


def unpack(pipe: Any, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, tokens, C·4] of an image (height, width) -> [B, C, h, w] VAE latents."""
    f = pipe.vae_scale_factor * 2
    grid_h, grid_w = int(height) // f, int(width) // f
    ids = pipe._prepare_latent_ids(packed.new_empty(packed.shape[0], 1, grid_h, grid_w)).to(packed.device)
    # (packed, ids) only: Flux2KleinKVPipeline's version takes no sizes (the grid then comes from the ids: equal)
    latents = pipe._unpack_latents_with_ids(packed, ids)
    mean, std = _bn_stats(pipe, latents)
    return pipe._unpatchify_latents(latents * std + mean)


def decoder_features(pipe: Any, latents: torch.Tensor) -> list[torch.Tensor]:
    """Activations of the decoder's conv_in, mid block and first up block for VAE latents."""
    vae, dec = pipe.vae, pipe.vae.decoder
    x = latents if vae.post_quant_conv is None else vae.post_quant_conv(latents)
    f0 = dec.conv_in(x)
    f1 = dec.mid_block(f0, None)
    f2 = dec.up_blocks[0](f1, None)
    return [f0, f1, f2]
