"""Per-layer routing of image tokens inside the transformer, as diffusers hooks on every block.

ToPi runs the first K layers on the full context and the rest on a subset of source tokens (Mode B).
A `ModelHook` on each block from K on replaces the block's inputs: at block K it gathers (or merges)
the hidden states of the kept image tokens, and at every block from K on it gathers the rows of the
rotary table (and, for Qwen with `zero_cond_t`, the columns of `modulate_index`) with the same index.
The transformer's output then holds the noisy tokens followed by the kept source tokens; the adapters
keep the first `num_noisy` rows, so nothing needs scattering back.

Layers are numbered across the whole transformer: Flux's dual-stream blocks, then its single-stream
blocks; Qwen's blocks in order.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .models import family

ROUTE_HOOK = "dropedit_block_route"


def transformer_layers(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """Every transformer block in execution order (Flux: dual-stream then single-stream)."""
    blocks = list(transformer.transformer_blocks)
    blocks += list(getattr(transformer, "single_transformer_blocks", []))
    return blocks


@dataclass
class Routing:
    """What the blocks of one transformer call do with image tokens. One per edit, set before each call.

    `rows` indexes the image sequence [noisy, source] of the call; None = every token at every layer.
    With `merge`, each dropped source token is averaged into its most similar kept source token
    (cosine similarity of the hidden states entering block `from_layer`) instead of being discarded.
    """

    family: str
    num_noisy: int
    rows: torch.Tensor | None = None
    from_layer: int = 0
    merge: bool = False
    _cache: dict[str, Any] = field(default_factory=dict)   # rotary rows gathered for the current call

    def set(self, rows: torch.Tensor | None, from_layer: int = 0, merge: bool = False) -> None:
        self.rows, self.from_layer, self.merge = rows, int(from_layer), bool(merge)
        self._cache.clear()

    def clear(self) -> None:
        self.set(None)


def merge_into_kept(hidden: torch.Tensor, rows: torch.Tensor, num_noisy: int) -> torch.Tensor:
    """hidden[:, rows] where each dropped source token is averaged into its most similar kept one.

    Noisy tokens (the first `num_noisy` rows) are never merged into or from. Similarity is cosine on
    the hidden states; every kept source token becomes the mean of itself and the tokens assigned to it.
    """
    kept = hidden[:, rows]
    total = hidden.shape[1]
    is_kept = torch.zeros(total, dtype=torch.bool, device=hidden.device)
    is_kept[rows] = True
    dropped = torch.nonzero(~is_kept[num_noisy:]).flatten() + num_noisy
    kept_source = rows[rows >= num_noisy]
    if dropped.numel() == 0 or kept_source.numel() == 0:
        return kept
    a = torch.nn.functional.normalize(hidden[:, dropped].float(), dim=-1)
    b = torch.nn.functional.normalize(hidden[:, kept_source].float(), dim=-1)
    nearest = torch.einsum("bdc,bkc->bdk", a, b).argmax(dim=-1)          # [B, dropped] -> kept-source slot
    sums = hidden[:, kept_source].float().clone()
    counts = torch.ones(hidden.shape[0], kept_source.numel(), 1, device=hidden.device)
    sums.scatter_add_(1, nearest.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]), hidden[:, dropped].float())
    counts.scatter_add_(1, nearest.unsqueeze(-1), torch.ones_like(nearest, dtype=counts.dtype).unsqueeze(-1))
    merged = (sums / counts).to(hidden.dtype)
    # `rows` lists noisy rows first, then kept source rows in the same order as `kept_source`
    return torch.cat([kept[:, : kept.shape[1] - kept_source.numel()], merged], dim=1)


class BlockRoute(ModelHook):
    """Replaces one block's image-token inputs by the routed subset from layer `from_layer` on."""

    def __init__(self, layer: int, routing: Routing) -> None:
        super().__init__()
        self.layer = layer
        self.routing = routing

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any):
        r = self.routing
        if r.rows is None or self.layer < r.from_layer:
            return args, kwargs
        rows = r.rows.to(kwargs["hidden_states"].device)
        if self.layer == r.from_layer:
            hidden = kwargs["hidden_states"]
            kwargs["hidden_states"] = merge_into_kept(hidden, rows, r.num_noisy) if r.merge \
                else hidden.index_select(1, rows)
        kwargs["image_rotary_emb"] = self._rotary(kwargs["image_rotary_emb"], rows, kwargs)
        index = kwargs.get("modulate_index")
        if index is not None and index.shape[1] != rows.numel():
            kwargs["modulate_index"] = index.index_select(1, rows)
        return args, kwargs

    def _rotary(self, emb: Any, rows: torch.Tensor, kwargs: dict[str, Any]) -> Any:
        cache = self.routing._cache
        if cache.get("source") is not emb[0]:   # a new transformer call (e.g. the other CFG branch)
            cache["source"] = emb[0]
            cache["rotary"] = family(self.routing.family).gather_rotary(emb, rows, kwargs)
        return cache["rotary"]


@contextlib.contextmanager
def routed_blocks(transformer: torch.nn.Module, routing: Routing) -> Iterator[list[torch.nn.Module]]:
    """Install a route hook on every block for one edit; remove them afterwards, whatever happens."""
    blocks = transformer_layers(transformer)
    registries = []
    try:
        for layer, block in enumerate(blocks):
            registry = HookRegistry.check_if_exists_or_initialize(block)
            registry.register_hook(BlockRoute(layer, routing), ROUTE_HOOK)
            registries.append(registry)
        yield blocks
    finally:
        for registry in registries:
            registry.remove_hook(ROUTE_HOOK, recurse=False)
