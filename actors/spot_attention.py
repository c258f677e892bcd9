"""SpotEdit's partial attention (Eq. 10) over the SpotFusion K/V cache (Eq. 7–9), Flux and Qwen.

In a partial call only the text tokens and the active noisy tokens (and the source tokens when they are
recomputed) enter the transformer, so projections and MLPs run on them alone. Every attention layer still
sees the complete keys and values: [text, noisy tokens (the active ones computed now, the non-edited ones
from the cache), source tokens (from the cache, or computed now)]. Queries keep the positions of the tokens
that entered (the caller gathers them); keys use the full position table kept here.

A full call (every token enters) computes exactly what the stock processor computes and refreshes the
cache. Keys and values are cached after the q/k norms and before RoPE, so that a cached non-edited key can
be blended with the source's key at the same grid position and then rotated with the noisy position.

Everything lives on one `SpotKV` per edit: caches per CFG branch (the diffusers `cache_context` name, read
through a stateful hook) and per layer, and the description of the current call. Processors are created
per edit, bound to it, and removed afterwards (`spot_attention`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import _get_qkv_projections
from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

from .routing import transformer_layers

BRANCH_HOOK = "dropedit_spot_branch"
DEFAULT_BRANCH = "default"   # calls made outside any `cache_context` (Flux has a single branch)


def fuse(cached: torch.Tensor, source: torch.Tensor, alpha: float) -> torch.Tensor:
    """SpotFusion, Eq. 8–9: α·K_cached + (1 − α)·K_source."""
    return alpha * cached + (1.0 - alpha) * source


@dataclass(frozen=True)
class SpotCall:
    """What the current transformer call computes. `active` None = a full call (every token enters)."""

    active: torch.Tensor | None = None   # long, ascending: noisy tokens whose rows enter, in this order
    source_queries: bool = True          # partial calls: the source tokens enter (recomputed), after the noisy
    noisy_context: bool = True           # partial calls: non-edited noisy tokens stay keys (from the cache)
    alpha: float | None = None           # partial calls: blend non-edited K/V toward the source's (None: static)


@dataclass
class LayerKV:
    """Pre-RoPE keys and values of one layer, [B, tokens, heads, head_dim]."""

    noisy_k: torch.Tensor | None = None
    noisy_v: torch.Tensor | None = None
    source_k: torch.Tensor | None = None
    source_v: torch.Tensor | None = None


class BranchCache(BaseState):
    def __init__(self) -> None:
        self.layers: dict[int, LayerKV] = {}

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.layers.clear()


@dataclass
class SpotKV:
    """The per-edit state of partial attention: what to cache, the caches, and the current call."""

    num_noisy: int
    num_source: int
    key_rotary: Any                      # RoPE of all image tokens [noisy, source], in the family's format
    cache_noisy: bool = True             # full calls store the noisy tokens' K/V (SpotFusion)
    cache_source: bool = True            # full calls store the source tokens' K/V (condition cache)
    call: SpotCall = field(default_factory=SpotCall)
    state: StateManager = field(default_factory=lambda: StateManager(BranchCache))

    def layer(self, index: int) -> LayerKV:
        # StateManager keys its states by the `cache_context` name; calls outside one share a default branch
        if self.state._context is None:
            self.state.set_context(CacheContext(DEFAULT_BRANCH))
        return self.state.get_state().layers.setdefault(index, LayerKV())

    def image_queries(self) -> int:
        """Image rows entering the transformer in the current call."""
        c = self.call
        if c.active is None:
            return self.num_noisy + self.num_source
        return c.active.numel() + (self.num_source if c.source_queries else 0)

    def image_keys(self) -> int:
        """Image tokens every layer attends to in the current call (text not counted)."""
        c = self.call
        if c.active is None or c.noisy_context:
            return self.num_noisy + self.num_source
        return c.active.numel() + self.num_source

    def assemble(self, layer: int, k: torch.Tensor, v: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Complete image keys/values from the query rows' k, v (pre-RoPE) and the cache.

        Returns (keys, values, rows): rows index the full position table [noisy, source] for the keys,
        None when the keys are all image tokens in order.
        """
        c, n, cache = self.call, self.num_noisy, self.layer(layer)
        if c.active is None:
            if k.shape[1] != n + self.num_source:
                raise RuntimeError(f"a full SpotEdit call needs all {n + self.num_source} image tokens, "
                                   f"got {k.shape[1]}")
            if self.cache_noisy:
                cache.noisy_k, cache.noisy_v = k[:, :n].clone(), v[:, :n].clone()
            if self.cache_source:
                cache.source_k, cache.source_v = k[:, n:].clone(), v[:, n:].clone()
            return k, v, None
        a = c.active.numel()
        k_act, v_act = k[:, :a], v[:, :a]
        if c.source_queries:
            src_k, src_v = k[:, a:], v[:, a:]
        else:
            if cache.source_k is None:
                raise RuntimeError("partial call with cached source tokens before any full call")
            src_k, src_v = cache.source_k, cache.source_v
        if not c.noisy_context:   # naive skip: non-edited tokens are simply not there
            rows = torch.cat([c.active.to(k.device), torch.arange(n, n + self.num_source, device=k.device)])
            return torch.cat([k_act, src_k], 1), torch.cat([v_act, src_v], 1), rows
        if cache.noisy_k is None:
            raise RuntimeError("partial call with cached noisy tokens before any full call")
        if c.alpha is not None:
            # Eq. 8–9 toward the first reference's K/V at the same grid position (aligned one to one);
            # the active rows are overwritten below, so blending every row changes nothing for them.
            cache.noisy_k = fuse(cache.noisy_k, src_k[:, :n], c.alpha)
            cache.noisy_v = fuse(cache.noisy_v, src_v[:, :n], c.alpha)
        index = c.active.to(k.device)
        cache.noisy_k.index_copy_(1, index, k_act)   # the latest K/V of every token stays in the cache
        cache.noisy_v.index_copy_(1, index, v_act)
        return torch.cat([cache.noisy_k, src_k], 1), torch.cat([cache.noisy_v, src_v], 1), None


def _key_rows(table: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return table if rows is None else table.index_select(0, rows.to(table.device))


class FluxSpotProcessor:
    """Partial attention for Flux dual-stream (text in `encoder_hidden_states`) and single-stream blocks
    (text rows first in `hidden_states`). Mirrors diffusers' `FluxAttnProcessor` op for op."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, kv: SpotKV, layer: int) -> None:
        self.kv, self.layer = kv, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> Any:
        query, key, value, encoder_query, encoder_key, encoder_value = _get_qkv_projections(
            attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None:
            text_q = attn.norm_added_q(encoder_query.unflatten(-1, (-1, attn.head_dim)))
            text_k = attn.norm_added_k(encoder_key.unflatten(-1, (-1, attn.head_dim)))
            text_v = encoder_value.unflatten(-1, (-1, attn.head_dim))
            img_q, img_k, img_v = query, key, value
        else:   # single-stream: [text, image] in one sequence
            text = hidden_states.shape[1] - self.kv.image_queries()
            text_q, img_q = query[:, :text], query[:, text:]
            text_k, img_k = key[:, :text], key[:, text:]
            text_v, img_v = value[:, :text], value[:, text:]
        text = text_q.shape[1]
        img_k, img_v, rows = self.kv.assemble(self.layer, img_k, img_v)
        query = torch.cat([text_q, img_q], dim=1)
        key = torch.cat([text_k, img_k], dim=1)
        value = torch.cat([text_v, img_v], dim=1)
        if image_rotary_emb is not None:
            key_emb = image_rotary_emb
            if self.kv.call.active is not None:
                key_emb = tuple(torch.cat([e[:text], _key_rows(full, rows)])
                                for e, full in zip(image_rotary_emb, self.kv.key_rotary))
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, key_emb, sequence_dim=1)
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask,
                                    backend=self._attention_backend, parallel_config=self._parallel_config)
        out = out.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        text_out, img_out = out.split_with_sizes([text, out.shape[1] - text], dim=1)
        img_out = attn.to_out[1](attn.to_out[0](img_out.contiguous()))
        return img_out, attn.to_add_out(text_out.contiguous())


class QwenSpotProcessor:
    """Partial attention for Qwen-Image double-stream blocks. Mirrors `QwenDoubleStreamAttnProcessor2_0`."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, kv: SpotKV, layer: int) -> None:
        self.kv, self.layer = kv, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 encoder_hidden_states_mask: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError("QwenSpotProcessor takes the text stream and no external attention_mask")
        head_dim = attn.inner_dim // attn.heads
        img_q = attn.to_q(hidden_states).unflatten(-1, (-1, head_dim))
        img_k = attn.to_k(hidden_states).unflatten(-1, (-1, head_dim))
        img_v = attn.to_v(hidden_states).unflatten(-1, (-1, head_dim))
        txt_q = attn.add_q_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
        txt_k = attn.add_k_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
        txt_v = attn.add_v_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
        if attn.norm_q is not None:
            img_q = attn.norm_q(img_q)
        if attn.norm_k is not None:
            img_k = attn.norm_k(img_k)
        if attn.norm_added_q is not None:
            txt_q = attn.norm_added_q(txt_q)
        if attn.norm_added_k is not None:
            txt_k = attn.norm_added_k(txt_k)
        img_k, img_v, rows = self.kv.assemble(self.layer, img_k, img_v)
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            key_freqs = img_freqs if self.kv.call.active is None else _key_rows(self.kv.key_rotary, rows)
            img_q = apply_rotary_emb_qwen(img_q, img_freqs, use_real=False)
            img_k = apply_rotary_emb_qwen(img_k, key_freqs, use_real=False)
            txt_q = apply_rotary_emb_qwen(txt_q, txt_freqs, use_real=False)
            txt_k = apply_rotary_emb_qwen(txt_k, txt_freqs, use_real=False)
        mask = None
        if encoder_hidden_states_mask is not None:   # the stock joint mask, over the complete keys
            image = torch.ones(img_k.shape[:2], dtype=torch.bool, device=img_k.device)
            mask = torch.cat([encoder_hidden_states_mask, image], dim=1)[:, None, None, :]
        seq_txt = encoder_hidden_states.shape[1]
        out = dispatch_attention_fn(
            torch.cat([txt_q, img_q], 1), torch.cat([txt_k, img_k], 1), torch.cat([txt_v, img_v], 1),
            attn_mask=mask, dropout_p=0.0, is_causal=False, backend=self._attention_backend,
            parallel_config=self._parallel_config)
        out = out.flatten(2, 3).to(img_q.dtype)
        img_out = attn.to_out[0](out[:, seq_txt:].contiguous())
        if len(attn.to_out) > 1:
            img_out = attn.to_out[1](img_out)
        return img_out, attn.to_add_out(out[:, :seq_txt].contiguous())


class BranchHook(ModelHook):
    """Carries the per-edit StateManager so that `transformer.cache_context(name)` selects the CFG branch."""

    _is_stateful = True

    def __init__(self, state: StateManager) -> None:
        super().__init__()
        self.state = state

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state.reset()
        return module


def attention_modules(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The attention module of every block, numbered across the transformer (Flux: dual, then single)."""
    return [block.attn for block in transformer_layers(transformer)]


def flux_key_rotary(transformer: torch.nn.Module, image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux RoPE (cos, sin) of every image token; computed per id row, so rows equal the transformer's."""
    return transformer.pos_embed(image_ids)


def qwen_key_rotary(transformer: torch.nn.Module, img_shapes: list, device: torch.device) -> torch.Tensor:
    """Qwen rotary rows of every image token (independent of the text length)."""
    return transformer.pos_embed(img_shapes, max_txt_seq_len=1, device=device)[0]


@contextlib.contextmanager
def spot_attention(transformer: torch.nn.Module, family: str, kv: SpotKV) -> Iterator[SpotKV]:
    """Install partial-attention processors bound to `kv` for one edit; restore the previous processors and
    drop the caches afterwards, whatever happens."""
    cls = FluxSpotProcessor if family == "flux" else QwenSpotProcessor
    modules = attention_modules(transformer)
    originals = [m.processor for m in modules]
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(BranchHook(kv.state), BRANCH_HOOK)
    try:
        for layer, module in enumerate(modules):
            processor = cls(kv, layer)
            processor._attention_backend = getattr(module.processor, "_attention_backend", None)
            processor._parallel_config = getattr(module.processor, "_parallel_config", None)
            module.set_processor(processor)
        yield kv
    finally:
        for module, processor in zip(modules, originals):
            module.set_processor(processor)
        registry.remove_hook(BRANCH_HOOK, recurse=False)
        kv.state.reset()
