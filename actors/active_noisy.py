"""Plans with `active_noisy` (SpotEdit) inside the editor's loop, one object per edit.

A step whose plan leaves some noisy tokens without queries gathers the active noisy tokens (and the source
tokens that are recomputed) at the transformer's input through the routing seam (`actors.routing`, from
layer 0: hidden rows, rotary rows, Qwen's `modulate_index`), so that every projection and MLP runs on them
alone. When the policy keeps a K/V cache (`policy.needs.query_skip`), partial-attention processors
(`actors.spot_attention`) complete the keys and values from it; without one, tokens without queries are
simply absent. The velocity of the active tokens is scattered back; the others keep their last velocity.
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import numpy as np
import torch

from policies.base import CachedContext, Plan

from .adapter import EditInputs
from .models import family as family_named
from .routing import Routing
from .spot_attention import Path, SpotCall, SpotKV, spot_attention


class ActiveNoisy:
    """`kv_path`: how this edit keeps the K/V cache (`actors.spot_attention.Path`; "concat" is the earlier
    pre-RoPE path, kept to check the default against); `kv_store`: its buffers in the compute dtype or int8."""

    def __init__(self, transformer: torch.nn.Module, family: str, inputs: EditInputs,
                 context: CachedContext | None, kv_path: Path = "buffers", kv_store: str = "compute") -> None:
        self.transformer, self.family = transformer, family
        self.n, self.s = inputs.latents.shape[1], inputs.source.shape[1]
        self.kv = None if context is None else SpotKV(
            num_noisy=self.n, num_source=self.s,
            key_rotary=family_named(family).key_rotary(transformer, inputs.cond, inputs.latents.device),
            cache_noisy=context.noisy, cache_source=context.source, fusion=context.fusion, path=kv_path,
            store=kv_store)
        self.index: torch.Tensor | None = None    # active noisy tokens of this step; None = all
        self.source_rows = self.s                 # source tokens entering the transformer this step
        self.keys: int | None = None              # image tokens every layer attends to; None = all
        self.v_last: torch.Tensor | None = None

    def attached(self) -> ContextManager[Any]:
        """Partial-attention processors for the edit, when the policy keeps a K/V cache."""
        return spot_attention(self.transformer, self.family, self.kv) if self.kv else contextlib.nullcontext()

    def route(self, plan: Plan, routing: Routing, kept: torch.Tensor | None, device: torch.device) -> bool:
        """Set up this step; True when it gathers noisy tokens (the adapter then passes every token)."""
        active = plan.active_noisy
        self.index, self.keys = None, None
        self.source_rows = self.s if kept is None else int(kept.numel())
        if active is None or bool(active.all()):
            if self.kv is not None:
                self.kv.call = SpotCall()   # a full step: refreshes the caches
            return False
        if plan.from_layer > 0:
            raise ValueError("a plan cannot both leave noisy tokens without queries and start at a later layer")
        ctx = plan.context
        if ctx is not None and self.kv is None:
            raise RuntimeError("the plan uses cached K/V but the policy declares no `context` to cache")
        if ctx is not None and ctx.alpha is not None and ctx.noisy and not self.kv.fusion:
            raise RuntimeError("the plan blends (alpha) but the policy's `needs.query_skip` does not declare "
                               "`fusion`: full steps would not keep what the blend reads")
        cached_source = ctx is not None and ctx.source
        if kept is not None and self.kv is not None and not cached_source:
            raise ValueError("source tokens recomputed under the K/V cache cannot be dropped as well (cache the "
                             "source's K/V, `CachedContext.source`, to drop source keys)")
        index = torch.nonzero(active.to(device)).flatten()
        source = torch.arange(0, device=device) if cached_source else \
            torch.arange(self.s, device=device) if kept is None else kept.to(device)
        routing.set(torch.cat([index, self.n + source]), from_layer=0)
        self.index, self.source_rows = index, int(source.numel())
        if self.kv is not None:
            self.kv.call = SpotCall(active=index, source_queries=not cached_source,
                                    noisy_context=ctx is not None and ctx.noisy,
                                    alpha=None if ctx is None else ctx.alpha,
                                    recursive=True if ctx is None else ctx.recursive,
                                    source_keys=kept.to(device) if kept is not None and cached_source else None)
            self.keys = self.kv.image_keys()
        else:
            self.keys = index.numel() + self.source_rows
        return True

    def velocity(self, v: torch.Tensor) -> torch.Tensor:
        """Velocity over every noisy token: active rows from `v` (the transformer's rows, active noisy
        first), the others from the last step."""
        if self.index is None:
            self.v_last = v
            return v
        if self.v_last is None:
            raise RuntimeError("a step with inactive noisy tokens needs an earlier full step")
        full = self.v_last.clone()
        full[:, self.index] = v[:, : self.index.numel()].to(full.dtype)
        self.v_last = full
        return full

    @property
    def active(self) -> int | None:
        return None if self.index is None else int(self.index.numel())

    def active_mask(self, grid: tuple[int, int]) -> np.ndarray | None:
        if self.index is None:
            return None
        mask = np.zeros(grid[0] * grid[1], dtype=bool)
        mask[self.index.cpu().numpy()] = True
        return mask.reshape(grid)

    @staticmethod
    def replace(z: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Final replacement: the tokens in `mask` take the source latent (aligned first reference)."""
        if mask is None or not bool(mask.any()):
            return z
        z = z.clone()
        z[:, mask.to(z.device)] = source[:, mask.to(source.device)].to(z.dtype)
        return z
