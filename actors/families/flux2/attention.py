"""FLUX.2 attention, as `Flux2AttnProcessor` (dual-stream) and `Flux2ParallelSelfAttnProcessor` (single-stream,
[text, image] as one sequence, attention fused with the MLP) compute it, for the statistics processor.

Dual-stream processors are called with `encoder_hidden_states`, single-stream ones without it; the single
blocks' text length is the one the dual blocks of the same call saw (`collector.text_len`)."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux2 import _get_qkv_projections


def _heads(attn: Any, *xs: torch.Tensor) -> list[torch.Tensor]:
    return [x.unflatten(-1, (-1, attn.head_dim)) for x in xs]


def dual_qkv(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v over [text, image] ([B, N, H, D]) after the q/k norms, before RoPE."""
    q, k, v, eq, ek, ev = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
    q, k, v, eq, ek, ev = _heads(attn, q, k, v, eq, ek, ev)
    q = torch.cat([attn.norm_added_q(eq), attn.norm_q(q)], dim=1)
    k = torch.cat([attn.norm_added_k(ek), attn.norm_k(k)], dim=1)
    return q, k, torch.cat([ev, v], dim=1)


def single_qkv(attn: Any, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of a single-stream block's [text, image] sequence after the q/k norms, before RoPE."""
    qkv = attn.to_qkv_mlp_proj(hidden_states)[..., : 3 * attn.inner_dim]
    q, k, v = _heads(attn, *qkv.chunk(3, dim=-1))
    return attn.norm_q(q), attn.norm_k(k), v


def _rotate(x: torch.Tensor, emb: Any) -> torch.Tensor:
    return x if emb is None else apply_rotary_emb(x, emb, sequence_dim=1)


class Flux2DualStatsProcessor:
    """Wraps a dual-stream processor; reports statistics when its layer is asked for."""

    def __init__(self, inner: Any, layer: int, collector: Any) -> None:
        self.inner, self.layer, self.collector = inner, layer, collector

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> Any:
        c = self.collector
        c.text_len = encoder_hidden_states.shape[1]   # the single-stream blocks cannot see it
        if self.layer in c.layers:
            q, k, v = dual_qkv(attn, hidden_states, encoder_hidden_states)
            c.record(self.layer, _rotate(q, image_rotary_emb), _rotate(k, image_rotary_emb), v, hidden_states, None)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


class Flux2SingleStatsProcessor:
    """Wraps a single-stream processor; reports statistics when its layer is asked for."""

    def __init__(self, inner: Any, layer: int, collector: Any) -> None:
        self.inner, self.layer, self.collector = inner, layer, collector

    def __call__(self, attn: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: Any = None) -> Any:
        c = self.collector
        if self.layer in c.layers:
            q, k, v = single_qkv(attn, hidden_states)
            c.record(self.layer, _rotate(q, image_rotary_emb), _rotate(k, image_rotary_emb), v,
                     hidden_states[:, c.text_len:], None)
        return self.inner(attn, hidden_states, attention_mask, image_rotary_emb)


def stats_processor(inner: Any, layer: int, collector: Any) -> Any:
    """The statistics wrapper for this processor's block kind (its call signature tells them apart)."""
    dual = "encoder_hidden_states" in inspect.signature(inner.__call__).parameters
    return (Flux2DualStatsProcessor if dual else Flux2SingleStatsProcessor)(inner, layer, collector)
