"""Attention statistics that no attention backend returns: Σ_i A_ij over noisy queries i, per head and
source key j, and the value norms ‖v_j‖ per head (ToPi Eq. 4 and 9).

A processor wrapper (the family's, `actors.families`) sits on every attention module for one edit. On the
layers a step asks for, it computes the joint (post-norm, post-RoPE) q, k, v once, as the stock processor
does, and hands them to `AttentionCollector.attend`: one attention call (`actors.attention_lse`) gives the
layer's output and each query's log-sum-exp lse_i, after which A_ij = exp(q_i·k_j/√D − lse_i) needs only the
noisy queries × source keys products (in the compute dtype, accumulated in fp32), no softmax over all keys.
The wrapper then finishes the layer as the stock processor does (output projections).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .attention_lse import attention_with_lse
from .models import family
from .routing import transformer_layers


def source_mass(q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, *, text_len: int, num_noisy: int,
                key_mask: torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
    """Σ_{noisy i} softmax(q_i·kᵀ/√D)_j per batch row, head and source key j ([B, H, S], fp32) of a joint
    sequence [text, noisy, source] ([B, N, H, D]), from the attention's log-sum-exp `lse` [B, H, N] (fp32, over
    all keys): exp(q_i·k_j/√D − lse_i) over source keys only, `chunk` queries at a time."""
    first_source, scale = text_len + num_noisy, q.shape[-1] ** -0.5
    b, heads = q.shape[0], q.shape[2]
    queries = q[:, text_len:first_source].transpose(1, 2)                      # [B, H, G, D]
    keys_t = k[:, first_source:].transpose(1, 2).reshape(b * heads, -1, q.shape[-1]).mT   # [BH, D, S]
    neg_lse = -lse[:, :, text_len:first_source].reshape(b * heads, -1, 1)     # [BH, G, 1]
    mass = torch.zeros(b * heads, keys_t.shape[-1], dtype=torch.float32, device=q.device)
    for start in range(0, num_noisy, chunk):
        block = queries[:, :, start: start + chunk].reshape(b * heads, -1, q.shape[-1])
        logits = _products(block, keys_t)                                     # [BH, c, S] fp32
        # one pass: scale·q·k − lse, then exp in place (fp32: lse is fp32 and logits may reach ±50)
        torch.add(neg_lse[:, start: start + chunk], logits, alpha=scale, out=logits)
        mass += logits.exp_().sum(dim=1)
    mass = mass.view(b, heads, -1)
    if key_mask is not None:   # masked source keys carry no attention (lse already excludes them)
        mass = mass * key_mask[:, None, first_source:].to(mass.dtype)
    return mass


def _products(queries: torch.Tensor, keys_t: torch.Tensor) -> torch.Tensor:
    """queries·keys_t in fp32: on CUDA in the compute dtype on tensor cores with an fp32 output
    (`bmm(..., out_dtype)`), elsewhere (or where that is refused) after an upcast."""
    if queries.is_cuda and queries.dtype in (torch.float16, torch.bfloat16):
        try:
            return torch.bmm(queries, keys_t, out_dtype=torch.float32)
        except (RuntimeError, TypeError):
            pass
    return torch.bmm(queries.float(), keys_t.float())


def value_norms(v: torch.Tensor, first_source: int) -> torch.Tensor:
    """‖v_j‖ per batch row, head and source key ([B, H, S], fp32)."""
    return v[:, first_source:].float().norm(dim=-1).transpose(1, 2)


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
    _events: list = field(default_factory=list)   # (start, end) CUDA events not yet read

    def request(self, layers: tuple[int, ...] | frozenset[int]) -> None:
        self.layers, self.results = frozenset(int(x) for x in layers), {}

    def take(self) -> tuple[dict[int, LayerStats], float]:
        """What the call reported and the seconds its statistics took (waits for the call's last CUDA event)."""
        if self._events:
            self._events[-1][1].synchronize()   # events complete in stream order: the last one suffices
        self.seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000.0
        out, seconds = self.results, self.seconds
        self.results, self.layers, self.seconds, self._events = {}, frozenset(), 0.0, []
        return out, seconds

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, image: torch.Tensor,
               key_mask: torch.Tensor | None) -> torch.Tensor:
        """The layer's attention output ([B, N, H, D], q's dtype) from one call, with this layer's statistics
        recorded on the way."""
        out, lse = attention_with_lse(q, k, v, key_mask)
        with self._timed(q.device):
            first_source = self.text_len + self.num_noisy
            mass = source_mass(q, k, lse, text_len=self.text_len, num_noisy=self.num_noisy, key_mask=key_mask,
                               chunk=self.chunk)
            value_norm = value_norms(v, first_source)
            stats = LayerStats(mass.sum(0), value_norm.sum(0), (mass * value_norm).sum(0),
                               similarity_to_noisy(image, self.num_noisy))
            if layer in self.results:
                self.results[layer].add(stats)
            else:
                self.results[layer] = stats
        return out

    @contextlib.contextmanager
    def _timed(self, device: torch.device) -> Iterator[None]:
        """The statistics' own time. On CUDA two events, read in `take` (after the call), so nothing in the
        layer waits for the device; elsewhere the wall clock."""
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((start, end))
            return
        started = time.perf_counter()
        yield
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
