"""Sparse Context's training-time token drop: each sample of a batch loses a random share of its reference
tokens, the share itself drawn per sample from a range.

Samples in one batch keep different numbers of tokens, so instead of gathering (which needs one length
per batch) the dropped tokens are masked out as keys in every attention layer. For the noisy tokens -
the only ones the loss sees - that is exactly what gathering gives (tests/test_reference_drop.py).
"""
from __future__ import annotations

import torch


def sample_reference_keep(batch: int, num_source: int, low: float, high: float,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool [batch, num_source]: per sample a drop ratio r ~ U[low, high], then round(r·n) tokens dropped
    uniformly at random (at least one token is always kept)."""
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"drop ratio range must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
    ratios = low + (high - low) * torch.rand(batch, generator=generator)
    keep = torch.zeros(batch, num_source, dtype=torch.bool)
    for b, r in enumerate(ratios.tolist()):
        kept = max(1, num_source - round(r * num_source))
        keep[b, torch.randperm(num_source, generator=generator)[:kept]] = True
    return keep


def key_mask(keep: torch.Tensor, text_len: int, num_noisy: int) -> torch.Tensor:
    """Attention mask [batch, 1, 1, text + noisy + source] that hides the dropped reference tokens as keys
    (the joint sequence is [text, noisy, source] in Flux and Qwen alike)."""
    front = torch.ones(keep.shape[0], text_len + num_noisy, dtype=torch.bool, device=keep.device)
    return torch.cat([front, keep], dim=1)[:, None, None, :]
