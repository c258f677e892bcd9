"""FLUX.2 attention, as `Flux2AttnProcessor` (dual-stream) and `Flux2ParallelSelfAttnProcessor` (single-stream,
[text, image] as one sequence, attention fused with the MLP) compute it, for the statistics processor.

Dual-stream processors are called with `encoder_hidden_states`, single-stream ones without it; the single
blocks' text length is the one the dual blocks of the same call saw (`collector.text_len`). On recorded layers the
statistics processors compute the layer themselves from one attention call (`AttentionCollector.attend`)."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux2 import (Flux2AttnProcessor, Flux2ParallelSelfAttnProcessor,
                                                             _get_qkv_projections)


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
    return single_qkv_mlp(attn, hidden_states)[0]


def single_qkv_mlp(attn: Any, hidden_states: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """((q, k, v), MLP input) of a single-stream block: one fused projection split as
    `Flux2ParallelSelfAttnProcessor` splits it."""
    fused = attn.to_qkv_mlp_proj(hidden_states)
    qkv_dim, mlp_dim = 3 * attn.inner_dim, attn.mlp_hidden_dim * attn.mlp_mult_factor
    local_qkv = fused.shape[-1] * qkv_dim // (qkv_dim + mlp_dim)
    qkv, mlp = torch.split(fused, [local_qkv, fused.shape[-1] - local_qkv], dim=-1)
    q, k, v = _heads(attn, *qkv.chunk(3, dim=-1))
    return (attn.norm_q(q), attn.norm_k(k), v), mlp


def _rotate(x: torch.Tensor, emb: Any) -> torch.Tensor:
    return x if emb is None else apply_rotary_emb(x, emb, sequence_dim=1)


class Flux2DualStatsProcessor:
    """Wraps a dual-stream processor. On a layer asked for statistics it computes the layer itself, as
    `Flux2AttnProcessor` does, from one attention call that also yields the statistics."""

    def __init__(self, inner: Any, layer: int, collector: Any) -> None:
        self.inner, self.layer, self.collector = inner, layer, collector
        self.stock = type(inner) is Flux2AttnProcessor   # what a recorded layer reproduces

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> Any:
        c = self.collector
        c.text_len = encoder_hidden_states.shape[1]   # the single-stream blocks cannot see it
        if self.layer not in c.layers:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        _check(self, attention_mask)
        q, k, v = dual_qkv(attn, hidden_states, encoder_hidden_states)
        q, k = _rotate(q, image_rotary_emb), _rotate(k, image_rotary_emb)
        out = c.attend(self.layer, q, k, v, hidden_states, None).flatten(2, 3).to(q.dtype)
        text_out, img_out = out.split_with_sizes([c.text_len, out.shape[1] - c.text_len], dim=1)
        return attn.to_out[1](attn.to_out[0](img_out)), attn.to_add_out(text_out)


class Flux2SingleStatsProcessor:
    """Wraps a single-stream processor. On a layer asked for statistics it computes the layer itself, as
    `Flux2ParallelSelfAttnProcessor` does (attention and MLP from one projection, one output projection)."""

    def __init__(self, inner: Any, layer: int, collector: Any) -> None:
        self.inner, self.layer, self.collector = inner, layer, collector
        self.stock = type(inner) is Flux2ParallelSelfAttnProcessor

    def __call__(self, attn: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: Any = None) -> Any:
        c = self.collector
        if self.layer not in c.layers:
            return self.inner(attn, hidden_states, attention_mask, image_rotary_emb)
        _check(self, attention_mask)
        (q, k, v), mlp = single_qkv_mlp(attn, hidden_states)
        q, k = _rotate(q, image_rotary_emb), _rotate(k, image_rotary_emb)
        out = c.attend(self.layer, q, k, v, hidden_states[:, c.text_len:], None).flatten(2, 3).to(q.dtype)
        return attn.to_out(torch.cat([out, attn.mlp_act_fn(mlp)], dim=-1))


def _check(wrapper: Any, attention_mask: torch.Tensor | None) -> None:
    if attention_mask is not None or not wrapper.stock:
        raise ValueError(f"attention statistics reproduce the stock FLUX.2 processors without an attention_mask, "
                         f"not {type(wrapper.inner).__name__} (mask given: {attention_mask is not None})")


def stats_processor(inner: Any, layer: int, collector: Any) -> Any:
    """The statistics wrapper for this processor's block kind (its call signature tells them apart)."""
    dual = "encoder_hidden_states" in inspect.signature(inner.__call__).parameters
    return (Flux2DualStatsProcessor if dual else Flux2SingleStatsProcessor)(inner, layer, collector)
