"""Attention statistics that no attention backend returns: Σ_i A_ij over noisy queries i, per head and
source key j, and the value norms ‖v_j‖ per head (ToPi Eq. 4 and 9).

A processor wrapper (the family's, `actors.families`) sits on every attention module for one edit. On the
layers a step asks for, it recomputes the joint (post-norm, post-RoPE) q, k, v exactly as the stock
processor does, computes the
softmax of the noisy queries against all keys in chunks of queries (never the full matrix), and then
calls the wrapped processor unchanged, so the layer's output is the stock one.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .models import family
from .routing import transformer_layers


def source_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, text_len: int, num_noisy: int,
                     key_mask: torch.Tensor | None = None, chunk: int = 1024
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a joint sequence [text, noisy, source] ([B, N, H, D] each), return

    - mass [H, S]: Σ_b Σ_{noisy i} softmax(q_i·kᵀ/√D)_j over the source keys j (softmax over all N keys),
    - value_norm [H, S]: Σ_b ‖v_j‖ per head,
    - influence [H, S]: Σ_b ‖v_j‖·Σ_i A_ij (ToPi Eq. 9 before the sums over heads and layers).

    Queries are processed `chunk` at a time so memory stays O(chunk·N) per head.
    """
    n, d = q.shape[1], q.shape[-1]
    first_source = text_len + num_noisy
    # scaled once here, not per logits chunk: [B, H, G, D] is far smaller than the [B, H, c, N] logits
    queries = q[:, text_len:first_source].float().transpose(1, 2) * d ** -0.5   # [B, H, G, D]
    keys_t = k.float().transpose(1, 2).transpose(-1, -2)              # [B, H, D, N]
    bias = None
    if key_mask is not None:
        bias = torch.zeros(key_mask.shape, dtype=torch.float32, device=q.device)
        bias = bias.masked_fill(~key_mask.bool(), float("-inf"))[:, None, None, :]
    mass = torch.zeros(q.shape[0], q.shape[2], n - first_source, dtype=torch.float32, device=q.device)
    for start in range(0, num_noisy, chunk):
        logits = queries[:, :, start: start + chunk] @ keys_t   # [B, H, c, N]
        if bias is not None:
            logits = logits + bias
        mass += logits.softmax(dim=-1)[..., first_source:].sum(dim=-2)
    value_norm = v[:, first_source:].float().norm(dim=-1).transpose(1, 2)  # [B, H, S]
    return mass.sum(0), value_norm.sum(0), (mass * value_norm).sum(0)


def similarity_to_noisy(image: torch.Tensor, num_noisy: int) -> torch.Tensor:
    """Cosine similarity of each source token's features to the mean noisy token, mapped to [0, 1]."""
    feats = image.float()
    mean = feats[:, :num_noisy].mean(dim=1, keepdim=True)
    cos = torch.nn.functional.cosine_similarity(feats[:, num_noisy:], mean, dim=-1)   # [B, S]
    return ((1.0 + cos) / 2.0).sum(0)


@dataclass
class LayerStats:
    """Statistics of one layer at one step, summed over the transformer calls of that step."""

    mass: torch.Tensor          # [H, S] Σ over noisy queries of attention on each source key
    value_norm: torch.Tensor    # [H, S] ‖v_j‖ per head
    influence: torch.Tensor     # [H, S] ‖v_j‖·Σ_i A_ij per call, then summed (CFG calls differ in v)
    similarity: torch.Tensor    # [S] (1 + cos(h_j, mean noisy h)) / 2 on the attention's input features
    calls: int = 1              # transformer calls summed (Qwen's true CFG makes two per step)

    def add(self, other: "LayerStats") -> None:
        self.mass += other.mass
        self.value_norm += other.value_norm
        self.influence += other.influence
        self.similarity += other.similarity
        self.calls += other.calls


@dataclass
class AttentionCollector:
    """Which layers report at the current call, and what they reported. One per edit."""

    num_noisy: int
    layers: frozenset[int] = frozenset()
    chunk: int = 1024
    results: dict[int, LayerStats] = field(default_factory=dict)
    text_len: int = 0           # of the current call; single-stream Flux blocks cannot see it
    seconds: float = 0.0        # spent computing statistics since the last `take`

    def request(self, layers: tuple[int, ...] | frozenset[int]) -> None:
        self.layers, self.results = frozenset(int(x) for x in layers), {}

    def take(self) -> tuple[dict[int, LayerStats], float]:
        out, seconds = self.results, self.seconds
        self.results, self.layers, self.seconds = {}, frozenset(), 0.0
        return out, seconds

    def record(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, image: torch.Tensor,
               key_mask: torch.Tensor | None) -> None:
        if q.device.type == "cuda":
            torch.cuda.synchronize(q.device)   # so the time below is the statistics' own
        started = time.perf_counter()
        mass, value_norm, influence = source_attention(q, k, v, text_len=self.text_len, num_noisy=self.num_noisy,
                                            key_mask=key_mask, chunk=self.chunk)
        stats = LayerStats(mass, value_norm, influence, similarity_to_noisy(image, self.num_noisy))
        if layer in self.results:
            self.results[layer].add(stats)
        else:
            self.results[layer] = stats
        if q.device.type == "cuda":
            torch.cuda.synchronize(q.device)
        self.seconds += time.perf_counter() - started


@contextlib.contextmanager
def collecting_attention(transformer: torch.nn.Module, family_name: str,
                         collector: AttentionCollector) -> Iterator[None]:
    """Wrap every attention processor for one edit with the family's statistics processor; restore the
    originals afterwards, whatever happens."""
    wrapper = family(family_name).stats_processor
    originals = []
    try:
        for layer, block in enumerate(transformer_layers(transformer)):
            originals.append((block.attn, block.attn.processor))
            block.attn.set_processor(wrapper(block.attn.processor, layer, collector))
        yield
    finally:
        for attn, processor in originals:
            attn.set_processor(processor)
