"""The toy model's first training phase: its VAE alone, on reconstruction (L1 + MSE + a tiny KL), after which
its latent statistics become the config's `shift_factor` / `scaling_factor`, as for the real FLUX VAE."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FluxKontextPipeline


def to_pixels(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 B x H x W x 3 -> float B x 3 x H x W in [-1, 1], as `VaeImageProcessor.preprocess` gives."""
    arr = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """float B x 3 x H x W in [-1, 1] -> uint8 B x H x W x 3, as diffusers' "pil" post-processing rounds."""
    x = (pixels.detach().float().cpu() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return (x * 255).round().astype(np.uint8)



class VaeLoss(torch.nn.Module):
    """Reconstruction (L1 + MSE on [-1, 1] pixels) + a tiny KL, as latent-diffusion VAEs are trained
    (without the adversarial and perceptual terms: toy images are flat colours and smooth gradients).
    A module, so that Ray Train's DDP wrapper sees encode and decode in one forward."""

    def __init__(self, vae: AutoencoderKL, kl_weight: float = 1e-6) -> None:
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, pixels: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(pixels).latent_dist
        recon = self.vae.decode(posterior.sample(generator=generator), return_dict=False)[0]
        l1, mse = F.l1_loss(recon, pixels), F.mse_loss(recon, pixels)
        kl = posterior.kl().mean() / pixels[0].numel()
        return l1 + mse + self.kl_weight * kl, l1.detach(), mse.detach(), kl.detach()


def vae_step(loss_module: torch.nn.Module, optimizer: torch.optim.Optimizer, pixels: torch.Tensor,
             grad_clip: float = 1.0, generator: torch.Generator | None = None) -> dict[str, float]:
    """One optimizer step of the VAE reconstruction loss; `loss_module` is a `VaeLoss`, possibly DDP-wrapped.
    The posterior's sample comes from `generator` (None: the global one)."""
    loss_module.train()
    loss, l1, mse, kl = loss_module(pixels, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(loss_module.parameters(), grad_clip)
    optimizer.step()
    return {"loss": float(loss.detach()), "l1": float(l1), "mse": float(mse), "kl": float(kl)}


@torch.no_grad()
def set_latent_normalisation(pipe: FluxKontextPipeline, pixels: torch.Tensor) -> tuple[float, float]:
    """Set the VAE's shift_factor / scaling_factor so that its latents have mean 0 and std 1 on `pixels`
    (the role those two numbers play in the real FLUX VAE config)."""
    z = pipe.vae.encode(pixels.to(pipe.vae.device, pipe.vae.dtype)).latent_dist.mode()
    shift, scale = float(z.mean()), float(1.0 / z.std())
    pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return shift, scale
