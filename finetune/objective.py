"""The flow-matching objective of a model family, the one `full` inference samples: z_t = (1 − σ)·z_tgt + σ·ε,
target velocity ε − z_tgt, the source (and further references) as the family's conditioning tokens, encoded
exactly as the family's adapter encodes them at inference (`actors.families`). The encoders are frozen: each
record is encoded once (`Family.encode`), and training calls only the transformer.

What a step draws (σ from the logit-normal pushed through the scheduler's shift for the sequence length, ε,
the kept reference tokens) is drawn here, from one generator, before any transformer call (`draw`): the same
generator state gives the same step whatever the worker count or the family. Validation uses fixed draws
(`fixed_draws`): σ spread over 0.1 … 0.9, fixed noise, exactly round(r·n) dropped tokens per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

import torch
from diffusers.pipelines.flux.pipeline_flux_kontext import calculate_shift

from .reference_drop import sample_reference_keep


@dataclass
class Draws:
    """What one micro-batch draws, one entry per sample."""
    sigmas: torch.Tensor              # [B]
    noise: list[torch.Tensor]         # [tokens, channels] each
    keep: list[torch.Tensor | None]   # bool [source tokens] each, None = every reference token


class FamilyObjective(Protocol):
    def encode(self, images: list[Any], target: Any, instruction: str) -> dict[str, torch.Tensor]: ...

    def call_count(self, samples: Sequence[dict[str, Any]]) -> int: ...

    def losses(self, model: torch.nn.Module, samples: Sequence[dict[str, Any]], draws: Draws,
               device: torch.device) -> Iterator[tuple[torch.Tensor, int]]: ...


def sample_sigmas(scheduler_config: Any, batch: int, num_tokens: int,
                  generator: torch.Generator, logit_mean: float = 0.0) -> torch.Tensor:
    """σ ~ logit-normal(m, 1) through the scheduler's dynamic shift for this token count (SD3's recipe, m = 0 by
    default; both families shift by sequence length with their own base/max shift). m > 0 moves the draws
    toward noise, where the target can only come from the references and the instruction."""
    c = scheduler_config
    mu = calculate_shift(num_tokens, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    u = torch.sigmoid(torch.randn(batch, generator=generator) + logit_mean)
    return math.exp(mu) / (math.exp(mu) + (1 / u - 1))


def draw(scheduler_config: Any, samples: Sequence[dict[str, Any]], generator: torch.Generator,
         reference_drop: tuple[float, float] | None, logit_mean: float = 0.0) -> Draws:
    """σ, then ε, then the keep masks (a run with the drop sees the σ and ε of one without it)."""
    sigmas = sample_sigmas(scheduler_config, len(samples), samples[0]["z_tgt"].shape[0], generator, logit_mean)
    noise = [torch.randn(s["z_tgt"].shape, generator=generator) for s in samples]
    keep: list[torch.Tensor | None] = [None] * len(samples)
    if reference_drop is not None:
        keep = [sample_reference_keep(1, s["z_src"].shape[0], *reference_drop, generator=generator)[0]
                for s in samples]
    return Draws(sigmas, noise, keep)


def fixed_draws(samples: Sequence[dict[str, Any]], drop_ratio: float, seed: int = 12345) -> Draws:
    """The validation draws: comparable across steps, runs and models."""
    gen = torch.Generator().manual_seed(seed)
    noise = [torch.randn(s["z_tgt"].shape, generator=gen) for s in samples]
    keep_gen = torch.Generator().manual_seed(seed + 1)
    keep = [sample_reference_keep(1, s["z_src"].shape[0], drop_ratio, drop_ratio, generator=keep_gen)[0]
            if drop_ratio > 0 else None for s in samples]
    return Draws(torch.linspace(0.1, 0.9, len(samples)), noise, keep)


def velocity_target(z_tgt: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_t, ε − z_tgt) for one sample or a batch (σ broadcast over tokens and channels)."""
    s = sigma.to(z_tgt.dtype).reshape(*sigma.shape, *([1] * (z_tgt.dim() - sigma.dim())))
    return (1 - s) * z_tgt + s * noise, noise - z_tgt
