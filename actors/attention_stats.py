"""Attention statistics that no attention backend returns: Σ_i A_ij over noisy queries i, per head and
source key j, and the value norms ‖v_j‖ per head (ToPi Eq. 4 and 9).

A processor wrapper sits on every attention module for one edit. On the layers a step asks for, it
recomputes the joint (post-norm, post-RoPE) q, k, v exactly as the stock processor does, computes the
softmax of the noisy queries against all keys in chunks of queries (never the full matrix), and then
calls the wrapped processor unchanged, so the layer's output is the stock one.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import _get_qkv_projections
from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

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
    queries = q[:, text_len:first_source].float().transpose(1, 2)     # [B, H, G, D]
    keys_t = k.float().transpose(1, 2).transpose(-1, -2)              # [B, H, D, N]
    bias = None
    if key_mask is not None:
        bias = torch.zeros(key_mask.shape, dtype=torch.float32, device=q.device)
        bias = bias.masked_fill(~key_mask.bool(), float("-inf"))[:, None, None, :]
    mass = torch.zeros(q.shape[0], q.shape[2], n - first_source, dtype=torch.float32, device=q.device)
    for start in range(0, num_noisy, chunk):
        logits = queries[:, :, start: start + chunk] @ keys_t * d ** -0.5   # [B, H, c, N]
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


def flux_joint_qkv(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
                   image_rotary_emb: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of FluxAttnProcessor over [text, image], after qk-norm and RoPE."""
    q, k, v, eq, ek, ev = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
    q, k, v = (t.unflatten(-1, (-1, attn.head_dim)) for t in (q, k, v))
    q, k = attn.norm_q(q), attn.norm_k(k)
    if attn.added_kv_proj_dim is not None:
        eq, ek, ev = (t.unflatten(-1, (-1, attn.head_dim)) for t in (eq, ek, ev))
        q = torch.cat([attn.norm_added_q(eq), q], dim=1)
        k = torch.cat([attn.norm_added_k(ek), k], dim=1)
        v = torch.cat([ev, v], dim=1)
    if image_rotary_emb is not None:
        q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
        k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
    return q, k, v


def qwen_joint_qkv(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   image_rotary_emb: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of QwenDoubleStreamAttnProcessor2_0 over [text, image], after qk-norm and RoPE."""
    head_dim = attn.inner_dim // attn.heads
    split = lambda t: t.unflatten(-1, (-1, head_dim))   # noqa: E731
    iq, ik, iv = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
    tq = split(attn.add_q_proj(encoder_hidden_states))
    tk = split(attn.add_k_proj(encoder_hidden_states))
    tv = split(attn.add_v_proj(encoder_hidden_states))
    iq = attn.norm_q(iq) if attn.norm_q is not None else iq
    ik = attn.norm_k(ik) if attn.norm_k is not None else ik
    tq = attn.norm_added_q(tq) if attn.norm_added_q is not None else tq
    tk = attn.norm_added_k(tk) if attn.norm_added_k is not None else tk
    if image_rotary_emb is not None:
        img_freqs, txt_freqs = image_rotary_emb
        iq, ik = apply_rotary_emb_qwen(iq, img_freqs, use_real=False), apply_rotary_emb_qwen(ik, img_freqs, use_real=False)
        tq, tk = apply_rotary_emb_qwen(tq, txt_freqs, use_real=False), apply_rotary_emb_qwen(tk, txt_freqs, use_real=False)
    return torch.cat([tq, iq], dim=1), torch.cat([tk, ik], dim=1), torch.cat([tv, iv], dim=1)


class FluxStatsProcessor:
    """Wraps a Flux attention processor; reports statistics when its layer is asked for."""

    def __init__(self, inner: Any, layer: int, collector: AttentionCollector) -> None:
        self.inner, self.layer, self.collector = inner, layer, collector

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> Any:
        c = self.collector
        if encoder_hidden_states is not None:
            c.text_len = encoder_hidden_states.shape[1]
        if self.layer in c.layers:
            q, k, v = flux_joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
            image = hidden_states if encoder_hidden_states is not None else hidden_states[:, c.text_len:]
            c.record(self.layer, q, k, v, image, None)   # Flux's pipelines never pass an attention mask
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


class QwenStatsProcessor:
    """Wraps a Qwen double-stream attention processor; reports statistics when its layer is asked for."""

    def __init__(self, inner: Any, layer: int, collector: AttentionCollector) -> None:
        self.inner, self.layer, self.collector = inner, layer, collector

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 encoder_hidden_states_mask: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb: Any = None) -> Any:
        c = self.collector
        if self.layer in c.layers:
            c.text_len = encoder_hidden_states.shape[1]
            q, k, v = qwen_joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
            key_mask = None
            if encoder_hidden_states_mask is not None:
                image = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
                key_mask = torch.cat([encoder_hidden_states_mask.bool(), image], dim=1)
            c.record(self.layer, q, k, v, hidden_states, key_mask)
        return self.inner(attn, hidden_states, encoder_hidden_states, encoder_hidden_states_mask,
                          attention_mask, image_rotary_emb)


@contextlib.contextmanager
def collecting_attention(transformer: torch.nn.Module, family: str,
                         collector: AttentionCollector) -> Iterator[None]:
    """Wrap every attention processor for one edit; restore the originals afterwards, whatever happens."""
    wrapper = FluxStatsProcessor if family == "flux" else QwenStatsProcessor
    originals = []
    try:
        for layer, block in enumerate(transformer_layers(transformer)):
            originals.append((block.attn, block.attn.processor))
            block.attn.set_processor(wrapper(block.attn.processor, layer, collector))
        yield
    finally:
        for attn, processor in originals:
            attn.set_processor(processor)
