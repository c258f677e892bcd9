"""ToPi's scores and selection (Sections 4.1-4.3): pure tensor functions, no model code.

`stats` maps a layer to an object with `mass`, `value_norm`, `influence` ([H, S]) and `similarity` ([S]),
as `actors.attention_stats.LayerStats` provides them.
"""
from __future__ import annotations

import math
import random
from typing import Any, Literal, Mapping, get_args

import torch

Score = Literal["influence", "attention", "similarity"]
SCORES = get_args(Score)
Select = Literal["mass", "topk"]   # mass: smallest set holding τ of the score (Eq. 10); topk: a fixed share
SELECTS = get_args(Select)
LAYER_CHOICES = ("auto", "first", "last", "random", "all")


def token_scores(stats: Mapping[int, Any], layers: tuple[int, ...], score: str) -> torch.Tensor:
    """One non-negative score per source token, summed over the representative layers.

    influence:  I_j = Σ_ℓ Σ_h ‖v_j,h‖·Σ_i A_ij,h (Eq. 9)
    attention:  Σ_ℓ Σ_h Σ_i A_ij,h (the paper's Attn-only ablation)
    similarity: Σ_ℓ (1 + cos(h_j, mean noisy h)) / 2 (its Feature-Similarity ablation, mapped to [0, 1])
    """
    missing = [layer for layer in layers if layer not in stats]
    if missing:
        raise ValueError(f"attention statistics missing for layers {missing}")
    parts = []
    for layer in layers:
        s = stats[layer]
        if score == "influence":
            parts.append(s.influence.sum(0))
        elif score == "attention":
            parts.append(s.mass.sum(0))
        else:
            parts.append(s.similarity)
    return torch.stack(parts).double().sum(0)


def minimal_mass_set(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """The smallest set of tokens whose scores reach τ of the total (Eq. 10), as a bool mask.

    Greedy after sorting is optimal because every token costs the same. τ = 1 keeps every token: in
    floating point the tail of the sorted sum can reach the total before the last token.
    """
    n = scores.numel()
    if tau >= 1.0:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    order = torch.argsort(scores.double(), descending=True)
    cumulative = torch.cumsum(scores.double()[order], 0)
    count = int(torch.searchsorted(cumulative, tau * cumulative[-1]).item()) + 1 if tau > 0 else 0
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    keep[order[: min(count, n)]] = True
    return keep


def top_k_count(n: int, keep: float) -> int:
    """⌈keep·n⌉ tokens (keep = 0.5 of 4096 keeps 2048; of 9, 5); a hair below an integer is that integer."""
    return min(n, max(0, math.ceil(keep * n - 1e-9)))


def top_k_set(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """The ⌈keep·S⌉ highest-scoring tokens as a bool mask (ToPi's ablations compare methods at a fixed 50 %
    Top-K). Ties are broken by the lower token index (a stable sort)."""
    n = scores.numel()
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    mask[order[: top_k_count(n, keep)]] = True
    return mask


def choose_layers(choice: str, num_layers: int, top_m: int, seed: int) -> tuple[int, ...]:
    """The paper's layer-choice ablation (Table 5): first / last / random M layers, or all of them."""
    m = min(top_m, num_layers)
    if choice == "first":
        return tuple(range(m))
    if choice == "last":
        return tuple(range(num_layers - m, num_layers))
    if choice == "random":
        return tuple(sorted(random.Random(seed).sample(range(num_layers), m)))
    if choice == "all":
        return tuple(range(num_layers))
    raise ValueError(f"unknown layer choice {choice!r}; accepted: {', '.join(LAYER_CHOICES)}")
