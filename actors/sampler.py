"""TokenDrop's source-consistency regularized flow-matching step (Eq. 10-12, Algorithm 1).

Flow time is the scheduler's sigma. With velocity v at z_t: x̂0 = z_t - σ·v, x̂1 = z_t + (1-σ)·v, and
(1-σ')·x̂0 + σ'·x̂1 equals diffusers' Euler step z_t + (σ'-σ)·v. Replacing x̂0 by x̃0 at the dropped
positions therefore adds exactly (1-σ')·(x̃0 - x̂0) to diffusers' own step: with nothing dropped (or η=0)
the correction is zero and the loop stays bit-identical to the pipeline.
"""
from __future__ import annotations

import torch


def clean_estimate(z: torch.Tensor, v: torch.Tensor, sigma: float) -> torch.Tensor:
    """x̂0 = z_t - σ·v, computed in float32 like the scheduler's step."""
    return z.float() - sigma * v.float()


def consistency_correction(x0: torch.Tensor, source: torch.Tensor, dropped: torch.Tensor,
                           eta: float) -> torch.Tensor:
    """x̃0 - x̂0, where x̃0 = M⊙x̂0 + (1-M)⊙(x̂0 + η·z_src)/(1+η) (Eq. 10-11).

    `dropped` is a bool over tokens (1-M); x0 and source are [..., tokens, channels] and aligned.
    """
    z_star = (x0 + eta * source.float()) / (1.0 + eta)
    return (z_star - x0) * dropped.to(x0.dtype).unsqueeze(-1)


def regularized_step(euler_next: torch.Tensor, x0: torch.Tensor, source: torch.Tensor,
                     dropped: torch.Tensor | None, sigma: float, sigma_next: float,
                     regularize: bool) -> torch.Tensor:
    """Next latent: diffusers' Euler result plus (1-σ')·(x̃0 - x̂0), with η_t = σ_t."""
    if not regularize or dropped is None or not bool(dropped.any()) or sigma == 0.0:
        return euler_next
    delta = consistency_correction(x0, source, dropped, eta=sigma)
    return (euler_next.float() + (1.0 - sigma_next) * delta).to(euler_next.dtype)
