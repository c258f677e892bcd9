"""SpotEdit's partial attention (Eq. 10) over the SpotFusion K/V cache (Eq. 7–9), Flux and Qwen.

In a partial call only the text tokens and the active noisy tokens (and the source tokens when they are
recomputed) enter the transformer, so projections and MLPs run on them alone. Every attention layer still
sees the complete keys and values: [text, noisy tokens (the active ones computed now, the non-edited ones
from the cache), source tokens (from the cache, or computed now)]. Queries keep the positions of the tokens
that entered (the caller gathers them); cached keys are stored rotated ("buffers") or rotated with the full
position table kept here ("concat").

A full call (every token enters) computes exactly what the stock processor computes and refreshes the
cache. Two ways to keep the cache, chosen per edit (`SpotKV.path`): "buffers" (the default,
`actors.spot_buffers`) keeps keys after RoPE in per-layer buffers laid out as attention reads them, so that a
partial call rotates and writes only the rows it computed; "concat" (`SpotKV.assemble`, the earlier path, kept
to check the other against) keeps them before RoPE and rotates and concatenates every key in every layer.

The processors themselves are the family's (`actors.families`); everything they share lives on one `SpotKV`
per edit: caches per CFG branch (the diffusers `cache_context` name, read
through a stateful hook) and per layer, and the description of the current call. Processors are created
per edit, bound to it, and removed afterwards (`spot_attention`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, get_args

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager

from .models import family
from .routing import transformer_layers

BRANCH_HOOK = "dropedit_spot_branch"
DEFAULT_BRANCH = "cond"   # calls made outside any `cache_context`: the branch Flux Kontext's one call opens
Path = Literal["buffers", "concat"]   # post-RoPE buffers (actors.spot_buffers) / pre-RoPE cache (SpotKV.assemble)
Store = Literal["compute", "int8"]    # the buffers in the compute dtype, or 8-bit with per-row scales (kv_int8)
STORES: tuple[str, ...] = get_args(Store)


def fuse(cached: torch.Tensor, source: torch.Tensor, alpha: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """SpotFusion, Eq. 8–9: α·K_cached + (1 − α)·K_source, in one pass (`torch.lerp`; `out=cached` in place),
    where the written-out form made three full-size temporaries per layer and call."""
    return torch.lerp(source, cached, alpha, out=out)


@dataclass(frozen=True)
class SpotCall:
    """What the current transformer call computes. `active` None = a full call (every token enters)."""

    active: torch.Tensor | None = None   # long, ascending: noisy tokens whose rows enter, in this order
    source_queries: bool = True          # partial calls: the source tokens enter (recomputed), after the noisy
    noisy_context: bool = True           # partial calls: non-edited noisy tokens stay keys (from the cache)
    alpha: float | None = None           # partial calls: blend non-edited K/V toward the source's (None: static)
    recursive: bool = True               # the blend is written back to the cache (False: each call from the cache)
    # partial calls with cached source K/V: the source rows kept as keys (ascending); None = every one. The
    # others are dropped from attention after their K/V were cached (focus: references far from the region)
    source_keys: torch.Tensor | None = None


@dataclass
class LayerKV:
    """One layer's cache: pre-RoPE keys and values, [B, tokens, heads, head_dim] ("concat"), or the post-RoPE
    buffers ("buffers": `actors.spot_buffers.LayerBuffers`)."""

    noisy_k: torch.Tensor | None = None
    noisy_v: torch.Tensor | None = None
    source_k: torch.Tensor | None = None
    source_v: torch.Tensor | None = None
    buffers: Any = None


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
    fusion: bool = False                 # "buffers": full calls keep what SpotFusion's blend reads (spot_buffers)
    path: Path = "buffers"               # how the cache is kept, for this edit
    store: Store = "compute"             # "buffers" path: the compute dtype, or int8 (actors.kv_int8)
    call: SpotCall = field(default_factory=SpotCall)
    state: StateManager = field(default_factory=lambda: StateManager(BranchCache))
    _memo_call: SpotCall | None = field(default=None, repr=False)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    _edit_memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    _kept: tuple[int, torch.Tensor | None] = field(default=(0, None), repr=False)   # (version, source keys)

    def per_call(self, key: Any, build: Callable[[], Any]) -> Any:
        """`build()` once per transformer call and key: what every layer of a call needs alike (the keys' RoPE
        table) is built by the first layer instead of by each of them."""
        if self._memo_call is not self.call:
            self._memo_call, self._memo = self.call, {}
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def per_edit(self, key: Any, build: Callable[[], Any]) -> Any:
        """`build()` once per edit and key (what depends on the positions only)."""
        if key not in self._edit_memo:
            self._edit_memo[key] = build()
        return self._edit_memo[key]

    def keys_version(self) -> int:
        """A number that changes when the current call keeps other source keys than the call before it that
        dropped some (one comparison per call): the post-RoPE buffers reorder their source rows only then."""
        def build() -> int:
            version, last = self._kept
            keep = self.call.source_keys
            if last is None or last.shape != keep.shape or not torch.equal(last, keep):
                self._kept = (version + 1, keep)
            return self._kept[0]
        return self.per_call("keys_version", build)

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
        source = self.num_source if c.active is None or c.source_keys is None else int(c.source_keys.numel())
        if c.active is None or c.noisy_context:
            return self.num_noisy + source
        return c.active.numel() + source

    @torch.compiler.disable   # looked up by layer index: no guard per block in compiled blocks
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
        source_rows = torch.arange(n, n + self.num_source, device=k.device)
        key_k, key_v = src_k, src_v   # the source tokens attended to (all, or the kept ones)
        if c.source_keys is not None:
            if c.source_queries:
                raise RuntimeError("source keys can be dropped only when the source K/V come from the cache")
            keep = c.source_keys.to(k.device)
            key_k, key_v, source_rows = src_k[:, keep], src_v[:, keep], n + keep
        if not c.noisy_context:   # naive skip: non-edited tokens are simply not there
            rows = torch.cat([c.active.to(k.device), source_rows])
            return torch.cat([k_act, key_k], 1), torch.cat([v_act, key_v], 1), rows
        if cache.noisy_k is None:
            raise RuntimeError("partial call with cached noisy tokens before any full call")
        if c.alpha is not None and c.recursive:
            # Eq. 8–9 toward the first reference's K/V at the same grid position (aligned one to one);
            # the active rows are overwritten below, so blending every row changes nothing for them.
            fuse(cache.noisy_k, src_k[:, :n], c.alpha, out=cache.noisy_k)   # the cache owns its tensors
            fuse(cache.noisy_v, src_v[:, :n], c.alpha, out=cache.noisy_v)
        index = c.active.to(k.device)
        cache.noisy_k.index_copy_(1, index, k_act)   # the latest K/V of every token stays in the cache
        cache.noisy_v.index_copy_(1, index, v_act)
        noisy_k, noisy_v = cache.noisy_k, cache.noisy_v
        if c.alpha is not None and not c.recursive:
            # the official code's reading: blended from the cache at each call, the cache itself unchanged
            noisy_k = fuse(noisy_k, src_k[:, :n], c.alpha).index_copy_(1, index, k_act)
            noisy_v = fuse(noisy_v, src_v[:, :n], c.alpha).index_copy_(1, index, v_act)
        rows = None if c.source_keys is None else torch.cat([torch.arange(n, device=k.device), source_rows])
        return torch.cat([noisy_k, key_k], 1), torch.cat([noisy_v, key_v], 1), rows


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


@contextlib.contextmanager
def spot_attention(transformer: torch.nn.Module, family_name: str, kv: SpotKV) -> Iterator[SpotKV]:
    """Install the family's partial-attention processors bound to `kv` for one edit; restore the previous
    processors and drop the caches afterwards, whatever happens."""
    cls = family(family_name).spot_processor
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
