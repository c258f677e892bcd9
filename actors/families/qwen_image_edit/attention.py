"""Qwen-Image attention, as `QwenDoubleStreamAttnProcessor2_0` computes it, for our processors.

`stream_qkv` is the one place that reproduces the stock q/k/v of both streams (projections, q/k norms);
the statistics processor rotates and joins them [text, image] and, on recorded layers, finishes the layer as
the stock processor does (`stock_output`) from its own attention call; the partial-attention processor rotates the
rows that entered and completes keys and values from its post-RoPE buffers (or, on the "concat" path, completes
the pre-RoPE image keys from its cache first). The joint mask is the text mask followed by ones.
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_qwenimage import (QwenDoubleStreamAttnProcessor2_0,
                                                                 apply_rotary_emb_qwen)

from ...spot_buffers import partial_keys, store_full
from ..common import key_rows

QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def stream_qkv(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> tuple[QKV, QKV]:
    """((text q, k, v), (image q, k, v)), each [B, N, H, D], after the q/k norms, before RoPE."""
    head_dim = attn.inner_dim // attn.heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (-1, head_dim))

    iq, ik, iv = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), heads(attn.to_v(hidden_states))
    tq, tk = heads(attn.add_q_proj(encoder_hidden_states)), heads(attn.add_k_proj(encoder_hidden_states))
    tv = heads(attn.add_v_proj(encoder_hidden_states))
    iq = attn.norm_q(iq) if attn.norm_q is not None else iq
    ik = attn.norm_k(ik) if attn.norm_k is not None else ik
    tq = attn.norm_added_q(tq) if attn.norm_added_q is not None else tq
    tk = attn.norm_added_k(tk) if attn.norm_added_k is not None else tk
    return (tq, tk, tv), (iq, ik, iv)


def rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 0:   # no rows (SpotEdit step with no active noisy token): diffusers' reshape would fail
        return x
    return apply_rotary_emb_qwen(x, freqs, use_real=False)


def joint_mask(text_mask: torch.Tensor | None, image_tokens: int) -> torch.Tensor | None:
    """Key mask over [text, image]: the text mask, then every image token."""
    if text_mask is None:
        return None
    image = torch.ones(text_mask.shape[0], image_tokens, dtype=torch.bool, device=text_mask.device)
    return torch.cat([text_mask.bool(), image], dim=1)


class QwenStatsProcessor:
    """Wraps a Qwen double-stream attention processor. On a layer asked for statistics it computes the layer
    itself, as `QwenDoubleStreamAttnProcessor2_0` does, from one attention call that also yields the
    statistics; elsewhere it calls the wrapped processor."""

    def __init__(self, inner: Any, layer: int, collector: Any) -> None:
        self.inner, self.layer, self.collector = inner, layer, collector
        self.stock = type(inner) is QwenDoubleStreamAttnProcessor2_0   # what a recorded layer reproduces

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 encoder_hidden_states_mask: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> Any:
        c = self.collector
        if self.layer not in c.layers:
            return self.inner(attn, hidden_states, encoder_hidden_states, encoder_hidden_states_mask,
                              attention_mask, image_rotary_emb)
        if encoder_hidden_states is None or attention_mask is not None or not self.stock:
            raise ValueError("attention statistics reproduce QwenDoubleStreamAttnProcessor2_0 with the text "
                             f"stream and no external attention_mask, not {type(self.inner).__name__}")
        c.text_len = encoder_hidden_states.shape[1]
        (tq, tk, tv), (iq, ik, iv) = stream_qkv(attn, hidden_states, encoder_hidden_states)
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            iq, ik, tq, tk = rotate(iq, img_freqs), rotate(ik, img_freqs), rotate(tq, txt_freqs), rotate(tk, txt_freqs)
        q, k, v = torch.cat([tq, iq], 1), torch.cat([tk, ik], 1), torch.cat([tv, iv], 1)
        out = c.attend(self.layer, q, k, v, hidden_states, joint_mask(encoder_hidden_states_mask, hidden_states.shape[1]))
        return stock_output(attn, out, c.text_len, q.dtype)


def stock_output(attn: Any, out: torch.Tensor, seq_txt: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """`QwenDoubleStreamAttnProcessor2_0` after its attention call: (image, text) outputs, each projected."""
    out = out.flatten(2, 3).to(dtype)
    img_out = attn.to_out[0](out[:, seq_txt:].contiguous())
    if len(attn.to_out) > 1:
        img_out = attn.to_out[1](img_out)
    return img_out, attn.to_add_out(out[:, :seq_txt].contiguous())


class QwenRotary:
    """Qwen's RoPE for the post-RoPE K/V buffers (`actors.spot_buffers.Rotary`): complex rows [tokens, D/2]."""

    @staticmethod
    def differing(table: torch.Tensor, n: int) -> torch.Tensor:
        return (table[:n] != table[n:2 * n]).any(0).repeat_interleave(2)

    @staticmethod
    def rotate_noisy(x: torch.Tensor, table: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return rotate(x, table[: x.shape[1], lo // 2:hi // 2])


class QwenSpotProcessor:
    """Partial attention (SpotEdit) for Qwen-Image double-stream blocks over the edit's `SpotKV`."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, kv: Any, layer: int) -> None:
        self.kv, self.layer = kv, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 encoder_hidden_states_mask: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError("QwenSpotProcessor takes the text stream and no external attention_mask")
        text, image = stream_qkv(attn, hidden_states, encoder_hidden_states)
        complete = self._concat if self.kv.path == "concat" else self._buffers
        query, key, value = complete(text, image, image_rotary_emb)
        seq_txt = encoder_hidden_states.shape[1]
        mask = joint_mask(encoder_hidden_states_mask, key.shape[1] - seq_txt)   # over the complete keys
        out = dispatch_attention_fn(
            query, key, value, attn_mask=None if mask is None else mask[:, None, None, :], dropout_p=0.0,
            is_causal=False, backend=self._attention_backend, parallel_config=self._parallel_config)
        out = out.flatten(2, 3).to(query.dtype)
        img_out = attn.to_out[0](out[:, seq_txt:].contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)
        return img_out, attn.to_add_out(out[:, :seq_txt].contiguous())

    def _buffers(self, text: QKV, image: QKV, emb: Any) -> QKV:
        """Only the rows that entered are rotated (with their own positions) and written into the buffers."""
        (txt_q, txt_k, txt_v), (img_q, img_k, img_v) = text, image
        kv, n, seq_txt = self.kv, self.kv.num_noisy, txt_k.shape[1]
        rot, img_rot = None, img_k
        if emb is not None:
            img_freqs, txt_freqs = emb
            rot, img_q, img_rot = QwenRotary, rotate(img_q, img_freqs), rotate(img_k, img_freqs)
            txt_q, txt_k = rotate(txt_q, txt_freqs), rotate(txt_k, txt_freqs)
        query = torch.cat([txt_q, img_q], 1)
        if kv.call.active is None:
            key, value = torch.cat([txt_k, img_rot], 1), torch.cat([txt_v, img_v], 1)
            store_full(kv, self.layer, key, value, seq_txt, img_k[:, n:2 * n], rot)
            return query, key, value
        source_pre = img_k[:, kv.call.active.numel():] if kv.call.source_queries else None
        key, value = partial_keys(kv, self.layer, txt_k, txt_v, img_rot, img_v, source_pre, rot)
        return query, key, value

    def _concat(self, text: QKV, image: QKV, emb: Any) -> QKV:
        """The pre-RoPE cache: every image key joined and rotated in every layer (`SpotKV.assemble`)."""
        (txt_q, txt_k, txt_v), (img_q, img_k, img_v) = text, image
        img_k, img_v, rows = self.kv.assemble(self.layer, img_k, img_v)
        if emb is not None:
            img_freqs, txt_freqs = emb
            key_freqs = img_freqs if self.kv.call.active is None else self.kv.per_call(
                ("qwen_key_rope", rows is None), lambda: key_rows(self.kv.key_rotary, rows))   # built once per call
            img_q, img_k = rotate(img_q, img_freqs), rotate(img_k, key_freqs)
            txt_q, txt_k = rotate(txt_q, txt_freqs), rotate(txt_k, txt_freqs)
        return torch.cat([txt_q, img_q], 1), torch.cat([txt_k, img_k], 1), torch.cat([txt_v, img_v], 1)
