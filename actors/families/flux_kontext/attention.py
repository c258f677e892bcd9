"""Flux attention, as `FluxAttnProcessor` computes it, for the processors our mechanisms install.

`joint_qkv` is the one place that reproduces the stock q/k/v (projections, q/k norms, text stream first);
the statistics processor rotates all of it and, on recorded layers, finishes the layer as the stock
processor does (`stock_output`) from its own attention call; the partial-attention processor rotates the rows
that entered and completes keys and values from its post-RoPE buffers (or, on the "concat" path, completes the
pre-RoPE keys from its cache and rotates them all). Dual-stream blocks get the text in `encoder_hidden_states`;
single-stream blocks carry [text, image] in `hidden_states`.
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, _get_qkv_projections

from ...spot_buffers import partial_keys, store_full
from ..common import key_rows

QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def joint_qkv(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v over [text, image] ([B, N, H, D]) after the q/k norms, before RoPE."""
    q, k, v, eq, ek, ev = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
    q, k, v = (t.unflatten(-1, (-1, attn.head_dim)) for t in (q, k, v))
    q, k = attn.norm_q(q), attn.norm_k(k)
    if attn.added_kv_proj_dim is not None:
        eq, ek, ev = (t.unflatten(-1, (-1, attn.head_dim)) for t in (eq, ek, ev))
        q = torch.cat([attn.norm_added_q(eq), q], dim=1)
        k = torch.cat([attn.norm_added_k(ek), k], dim=1)
        v = torch.cat([ev, v], dim=1)
    return q, k, v


def rotate(x: torch.Tensor, emb: Any) -> torch.Tensor:
    return x if emb is None else apply_rotary_emb(x, emb, sequence_dim=1)


class FluxStatsProcessor:
    """Wraps a Flux attention processor. On a layer asked for statistics it computes the layer itself, as
    `FluxAttnProcessor` does, from one attention call that also yields the statistics; elsewhere it calls the
    wrapped processor."""

    def __init__(self, inner: Any, layer: int, collector: Any) -> None:
        self.inner, self.layer, self.collector = inner, layer, collector
        self.stock = type(inner) is FluxAttnProcessor   # what a recorded layer reproduces

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> Any:
        c = self.collector
        if encoder_hidden_states is not None:
            c.text_len = encoder_hidden_states.shape[1]   # single-stream blocks cannot see it
        if self.layer not in c.layers:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None or not self.stock:
            raise ValueError(f"attention statistics reproduce FluxAttnProcessor without an attention_mask, not "
                             f"{type(self.inner).__name__} (mask given: {attention_mask is not None})")
        q, k, v = joint_qkv(attn, hidden_states, encoder_hidden_states)
        q, k = rotate(q, image_rotary_emb), rotate(k, image_rotary_emb)
        image = hidden_states if encoder_hidden_states is not None else hidden_states[:, c.text_len:]
        out = c.attend(self.layer, q, k, v, image, None)
        return stock_output(attn, out, encoder_hidden_states, q.dtype)


def stock_output(attn: Any, out: torch.Tensor, encoder_hidden_states: torch.Tensor | None, dtype: torch.dtype
                 ) -> Any:
    """`FluxAttnProcessor` after its attention call: heads flattened, and in dual-stream blocks the split
    into image and text with their output projections."""
    out = out.flatten(2, 3).to(dtype)
    if encoder_hidden_states is None:
        return out
    text_out, img_out = out.split_with_sizes([encoder_hidden_states.shape[1],
                                              out.shape[1] - encoder_hidden_states.shape[1]], dim=1)
    img_out = attn.to_out[1](attn.to_out[0](img_out.contiguous()))
    return img_out, attn.to_add_out(text_out.contiguous())


class FluxRotary:
    """Flux's RoPE for the post-RoPE K/V buffers (`actors.spot_buffers.Rotary`): (cos, sin) tables [tokens, D]."""

    @staticmethod
    def differing(table: tuple[torch.Tensor, torch.Tensor], n: int) -> torch.Tensor:
        cos, sin = table
        return ((cos[:n] != cos[n:2 * n]) | (sin[:n] != sin[n:2 * n])).any(0)

    @staticmethod
    def rotate_noisy(x: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor], lo: int, hi: int) -> torch.Tensor:
        n = x.shape[1]
        return apply_rotary_emb(x, tuple(t[:n, lo:hi] for t in table), sequence_dim=1)


class FluxSpotProcessor:
    """Partial attention (SpotEdit) for dual- and single-stream blocks: the image keys and values are
    completed from the edit's `SpotKV`; queries keep the positions of the tokens that entered."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, kv: Any, layer: int) -> None:
        self.kv, self.layer = kv, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> Any:
        query, key, value = joint_qkv(attn, hidden_states, encoder_hidden_states)
        text = encoder_hidden_states.shape[1] if encoder_hidden_states is not None \
            else hidden_states.shape[1] - self.kv.image_queries()
        complete = self._concat if self.kv.path == "concat" else self._buffers
        query, key, value = complete(query, key, value, text, image_rotary_emb)
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask,
                                    backend=self._attention_backend, parallel_config=self._parallel_config)
        out = out.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        text_out, img_out = out.split_with_sizes([text, out.shape[1] - text], dim=1)
        img_out = attn.to_out[1](attn.to_out[0](img_out.contiguous()))
        return img_out, attn.to_add_out(text_out.contiguous())

    def _buffers(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, text: int, emb: Any) -> QKV:
        """Only the rows that entered are rotated (with their own positions) and written into the buffers."""
        kv, n = self.kv, self.kv.num_noisy
        rot = None if emb is None else FluxRotary
        query, rotated = rotate(query, emb), rotate(key, emb)
        if kv.call.active is None:
            store_full(kv, self.layer, rotated, value, text, key[:, text + n:text + 2 * n], rot)
            return query, rotated, value
        start = text + kv.call.active.numel()
        source_pre = key[:, start:] if kv.call.source_queries else None
        keys, values = partial_keys(kv, self.layer, rotated[:, :text], value[:, :text], rotated[:, text:],
                                    value[:, text:], source_pre, rot)
        return query, keys, values

    def _concat(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, text: int, emb: Any) -> QKV:
        """The pre-RoPE cache: every key joined and rotated in every layer (`SpotKV.assemble`)."""
        img_k, img_v, rows = self.kv.assemble(self.layer, key[:, text:], value[:, text:])
        key = torch.cat([key[:, :text], img_k], dim=1)
        value = torch.cat([value[:, :text], img_v], dim=1)
        if emb is not None:
            key_emb = emb
            if self.kv.call.active is not None:   # the same in every layer of the call: built by the first
                key_emb = self.kv.per_call(("flux_key_rope", text), lambda: tuple(
                    torch.cat([e[:text], key_rows(full, rows)]) for e, full in zip(emb, self.kv.key_rotary)))
            query, key = rotate(query, emb), rotate(key, key_emb)
        return query, key, value
