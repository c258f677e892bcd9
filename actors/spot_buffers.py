"""SpotEdit's partial attention over persistent post-RoPE K/V buffers: a partial call moves what it computes.

One pair of buffers per layer and CFG branch, laid out as attention consumes them: keys (after the q/k norms and
RoPE) and values of [text, noisy, source] tokens, [B, T + N + S, heads, head_dim] each. A full call copies its
rotated image rows in. A partial call writes the text rows and the rows it computed, rotated with their own
positions by the processor, in place; SpotFusion blends the frozen noisy rows in place; attention reads a view
of the buffers. Nothing full-size is concatenated or rotated; dropped source keys (focus) are moved behind the
kept ones once per kept set, so that the keys stay one view.

SpotFusion after RoPE: RoPE is linear, so blending rotated rows equals rotating the blended rows wherever the
two rows are rotated alike. A noisy token and its aligned source token share their grid position but not the
first RoPE axis (Kontext's reference index, Qwen's frame), so on the head dims where the rotations differ
(`fusion_columns`) the blend reads the source keys rotated at the noisy positions — kept by full calls of edits
that declare `SpotKV.fusion` (`target`) — and on every other dim the source rows of the buffer. Values are not
rotated: the blend reads the buffer's source rows. The result equals the pre-RoPE path (`SpotKV.path =
"concat"`, `SpotKV.assemble`) up to rounding: the blend and the rotation are applied in the other order. A
weight α that rounds to 1 in the buffers' dtype blends nothing (the official α in bf16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .kv_int8 import Packed, pack, unpack
from .spot_attention import SpotKV


class Rotary(Protocol):
    """A family's RoPE as the buffers need it (`actors.families.*.attention`)."""

    def differing(self, table: Any, n: int) -> torch.Tensor:
        """bool [head_dim]: dims on which rows :n (noisy) and n:2n (aligned source) of `table` rotate differently."""
        ...

    def rotate_noisy(self, x: torch.Tensor, table: Any, lo: int, hi: int) -> torch.Tensor:
        """`x` [B, n, H, hi - lo] (head dims lo:hi) rotated with rows :n of `table` (the noisy positions)."""
        ...


@dataclass
class LayerBuffers:
    """One layer's post-RoPE keys and values, [B, T + N + S, heads, head_dim]: text, noisy, source."""

    k: torch.Tensor
    v: torch.Tensor
    text: int
    filled: bool = False                 # a full call wrote the cached image rows
    target: torch.Tensor | None = None   # [B, N, H, hi - lo]: aligned source keys rotated at the noisy positions
    order: torch.Tensor | None = None    # source region row j holds source token order[j]; None: in order
    order_version: int = -1              # the kept-keys version `order` puts first (`SpotKV.keys_version`)
    packed: Packed | None = None         # SpotKV.store "int8": the rows between calls; k, v are the edit's scratch


def _allocate(kv: SpotKV, like: torch.Tensor, text: int, persistent: bool = True) -> LayerBuffers:
    shape = (like.shape[0], text + kv.num_noisy + kv.num_source, *like.shape[2:])
    if kv.store != "int8" or not persistent:
        return LayerBuffers(like.new_empty(shape), like.new_empty(shape), text)
    # one compute-dtype scratch per edit and shape: the layers run one after the other
    k, v = kv.per_edit(("int8 scratch", shape, like.dtype, like.device),
                       lambda: (like.new_empty(shape), like.new_empty(shape)))
    return LayerBuffers(k, v, text, packed=Packed.like(shape, like.device))


def _buffers(kv: SpotKV, layer: int, like: torch.Tensor, text: int, load: bool = True) -> LayerBuffers:
    """The layer's buffers in this branch, allocated on first use; a new text length moves the image rows.
    An int8 store is dequantized into the scratch (`load`; a full call that rewrites its rows needs none)."""
    entry = kv.layer(layer)
    buf = entry.buffers
    if buf is None or buf.k.dtype != like.dtype or buf.k.device != like.device or buf.k.shape[0] != like.shape[0]:
        entry.buffers = buf = _allocate(kv, like, text)
    elif buf.text != text:
        moved = _allocate(kv, like, text)
        if buf.packed is not None and moved.packed is not None:
            moved.packed.move_rows(buf.packed, slice(text, None), slice(buf.text, None))
        else:
            moved.k[:, text:].copy_(buf.k[:, buf.text:])
            moved.v[:, text:].copy_(buf.v[:, buf.text:])
        moved.filled, moved.target, moved.order, moved.order_version = buf.filled, buf.target, buf.order, \
            buf.order_version
        entry.buffers = buf = moved
    if buf.packed is not None and buf.filled and load:
        unpack(buf.packed, buf.k, buf.v)   # the scratch now holds this layer's rows
    return buf


def _store_back(buf: LayerBuffers, rows: slice = slice(None)) -> None:
    """An int8 store keeps what this call wrote into the scratch (its rows, all by default)."""
    if buf.packed is not None:
        pack(buf.packed, buf.k, buf.v, rows)


def fusion_columns(kv: SpotKV, rot: Rotary | None) -> tuple[int, int] | None:
    """Head dims [lo, hi) (whole rotation pairs) where a noisy token and its aligned source token are rotated
    differently; None where they are rotated alike (or not at all). Once per edit."""
    if rot is None:
        return None

    def build() -> tuple[int, int] | None:
        if kv.key_rotary is None:
            raise RuntimeError("SpotFusion after RoPE needs the image tokens' RoPE rows (SpotKV.key_rotary)")
        dims = torch.nonzero(rot.differing(kv.key_rotary, kv.num_noisy).cpu()).flatten()
        if dims.numel() == 0:
            return None
        return int(dims[0]) // 2 * 2, (int(dims[-1]) // 2 + 1) * 2
    return kv.per_edit("fusion_columns", build)


def _target(kv: SpotKV, source_pre: torch.Tensor, rot: Rotary | None) -> torch.Tensor | None:
    """The aligned source keys [:N] (pre-RoPE) rotated at the noisy positions, on the fusion columns only."""
    cols = fusion_columns(kv, rot)
    if cols is None:
        return None
    lo, hi = cols
    return rot.rotate_noisy(source_pre[:, : kv.num_noisy, :, lo:hi].contiguous(), kv.key_rotary, lo, hi)


# Not traced by torch.compile: the per-layer buffers are looked up by layer index (a guard per block) and
# the bookkeeping is data-dependent; compiled blocks call it eagerly (`actors.compiled_blocks`).
@torch.compiler.disable
def store_full(kv: SpotKV, layer: int, key: torch.Tensor, value: torch.Tensor, text: int,
               source_pre: torch.Tensor, rot: Rotary | None) -> None:
    """A full call (every token entered): copy the rotated image rows that later partial calls read — the noisy
    ones when `cache_noisy`, the source ones when `cache_source` — and, for an edit that blends, the target.
    `key`, `value` [B, T + N + S, H, D] as attention reads them; `source_pre` the source keys before RoPE."""
    n, s = kv.num_noisy, kv.num_source
    if key.shape[1] != text + n + s:
        raise RuntimeError(f"a full SpotEdit call needs all {n + s} image tokens, got {key.shape[1] - text}")
    if not (kv.cache_noisy or kv.cache_source):
        return
    buf = _buffers(kv, layer, key, text, load=False)
    lo = text if kv.cache_noisy else text + n
    hi = text + n + (s if kv.cache_source else 0)
    buf.k[:, lo:hi].copy_(key[:, lo:hi])
    buf.v[:, lo:hi].copy_(value[:, lo:hi])
    _store_back(buf, slice(lo, hi))
    buf.filled, buf.order, buf.order_version = True, None, -1
    keeps = kv.fusion and kv.cache_noisy and kv.cache_source
    buf.target = _target(kv, source_pre, rot) if keeps else None


def blend_weight(kv: SpotKV, dtype: torch.dtype) -> float | None:
    """SpotFusion's α for this call, None when it blends nothing: no α, every noisy token computed (the blended
    rows would all be overwritten), or α rounding to 1 in `dtype` (the blend would leave the cache as it is)."""
    c = kv.call
    if c.alpha is None or c.active is None or c.active.numel() == kv.num_noisy or not c.noisy_context:
        return None
    if float(torch.tensor(c.alpha, dtype=dtype)) == 1.0:
        return None
    return float(c.alpha)


def _aligned_source(buf: LayerBuffers, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of source tokens 0..N-1 (aligned with the noisy ones) in the buffers: a view, or a gather when the
    kept source keys were moved first (a call that both drops source keys and blends)."""
    start = buf.text + n
    if buf.order is None:
        return buf.k[:, start:start + n], buf.v[:, start:start + n]
    where = torch.argsort(buf.order)[:n] + start
    return buf.k.index_select(1, where), buf.v.index_select(1, where)


def _blend(k: torch.Tensor, v: torch.Tensor, src_k: torch.Tensor, src_v: torch.Tensor, target: torch.Tensor | None,
           cols: tuple[int, int] | None, alpha: float) -> None:
    """Eq. 8–9 in place on the noisy rows `k`, `v` [B, N, H, D]: α·cached + (1 − α)·source, the source keys from
    `src_k` (post-RoPE source rows) except on the fusion columns, where they come from `target`."""
    torch.lerp(src_v, v, alpha, out=v)   # `actors.spot_attention.fuse`'s formula, element for element
    if cols is None:
        torch.lerp(src_k, k, alpha, out=k)
        return
    if target is None:
        raise RuntimeError("a SpotFusion blend after RoPE needs the source keys at the noisy positions: declare "
                           "`CachedContext.fusion` (SpotKV.fusion) so that full calls keep them")
    lo, hi = cols
    for a, b in ((0, lo), (hi, k.shape[-1])):
        if b > a:
            torch.lerp(src_k[..., a:b], k[..., a:b], alpha, out=k[..., a:b])
    torch.lerp(target, k[..., lo:hi], alpha, out=k[..., lo:hi])


def _order_source(kv: SpotKV, buf: LayerBuffers) -> int:
    """Source rows attention reads from the buffers' source region: all (in order), or the kept ones, moved
    first (ascending, as `SpotKV.assemble` gathers them) once per kept set and layer."""
    keep = kv.call.source_keys
    if keep is None:
        if buf.order is not None:   # an earlier call dropped some: back in order, as the pre-RoPE path reads them
            _permute(kv, buf, torch.arange(kv.num_source, device=buf.order.device), -1)
            buf.order = None
        return kv.num_source
    version = kv.keys_version()
    if buf.order_version != version:
        _permute(kv, buf, kv.per_call(("source_order", version), lambda: _kept_first(keep, kv.num_source)), version)
    return int(keep.numel())


def _permute(kv: SpotKV, buf: LayerBuffers, order: torch.Tensor, version: int) -> None:
    """Reorder the source region so that its row j holds source token order[j] (a gather of the region)."""
    start = buf.text + kv.num_noisy
    current = torch.arange(kv.num_source, device=order.device) if buf.order is None else buf.order
    gather = torch.argsort(current)[order] + start
    buf.k[:, start:].copy_(buf.k.index_select(1, gather))
    buf.v[:, start:].copy_(buf.v.index_select(1, gather))
    buf.order, buf.order_version = order, version


def _kept_first(keep: torch.Tensor, total: int) -> torch.Tensor:
    """A permutation of 0..total-1: the kept tokens (ascending), then the others (ascending)."""
    dropped = torch.ones(total, dtype=torch.int8, device=keep.device)
    dropped[keep] = 0
    return torch.argsort(dropped, stable=True)


# Not traced by torch.compile: the per-layer buffers are looked up by layer index (a guard per block) and
# the bookkeeping is data-dependent; compiled blocks call it eagerly (`actors.compiled_blocks`).
@torch.compiler.disable
def partial_keys(kv: SpotKV, layer: int, text_k: torch.Tensor, text_v: torch.Tensor, image_k: torch.Tensor,
                 image_v: torch.Tensor, source_pre: torch.Tensor | None, rot: Rotary | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A partial call: write what it computed into the layer's buffers and return the keys and values attention
    reads, [text, noisy (or active), source (or the kept ones)], views of the buffers except where a blend must
    leave the cache as it is (`recursive` False). `text_k`, `image_k`: the call's rows after RoPE (active noisy
    first, then the recomputed source rows, if any); `source_pre`: the recomputed source keys before RoPE."""
    if kv.call.source_keys is not None and kv.call.source_queries:
        raise RuntimeError("source keys can be dropped only when the source K/V come from the cache")
    text = text_k.shape[1]
    if not (kv.cache_noisy or kv.cache_source):   # nothing persists between calls: this call's own buffers
        buf = _allocate(kv, text_k, text, persistent=False)
    else:
        buf = _buffers(kv, layer, text_k, text)
    order = buf.order_version
    try:
        return _partial(kv, buf, text_k, text_v, image_k, image_v, source_pre, rot)
    finally:   # an int8 store keeps what the call wrote (the returned views are the scratch): the text and
        # noisy rows, and the source rows where this call recomputed or reordered them
        moved = kv.call.source_queries or buf.order_version != order
        _store_back(buf, slice(None) if moved else slice(0, text + kv.num_noisy))


def _partial(kv: SpotKV, buf: LayerBuffers, text_k: torch.Tensor, text_v: torch.Tensor, image_k: torch.Tensor,
             image_v: torch.Tensor, source_pre: torch.Tensor | None, rot: Rotary | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    c, n = kv.call, kv.num_noisy
    a, text = c.active.numel(), text_k.shape[1]
    if c.source_queries:
        _write_source(kv, buf, image_k[:, a:], image_v[:, a:], source_pre, rot)
    elif not (kv.cache_source and buf.filled):
        raise RuntimeError("partial call with cached source tokens before any full call")
    if not c.noisy_context:
        return _without_context(kv, buf, text_k, text_v, image_k[:, :a], image_v[:, :a])
    if not (kv.cache_noisy and buf.filled):
        raise RuntimeError("partial call with cached noisy tokens before any full call")
    buf.k[:, :text].copy_(text_k)
    buf.v[:, :text].copy_(text_v)
    end = text + n + _order_source(kv, buf)
    alpha = blend_weight(kv, buf.k.dtype)
    rows = kv.per_call(("active_rows", text), lambda: c.active.to(buf.k.device) + text)
    if alpha is not None and c.recursive:   # the active rows are overwritten below: blending them changes nothing
        _blend_noisy(kv, buf, buf.k, buf.v, alpha, rot)
    buf.k.index_copy_(1, rows, image_k[:, :a])   # the latest K/V of every token stays in the cache
    buf.v.index_copy_(1, rows, image_v[:, :a])
    if alpha is None or c.recursive:
        return buf.k[:, :end], buf.v[:, :end]
    # the official code's reading: blended from the cache at each call, the cache itself unchanged
    k, v = buf.k[:, :end].clone(), buf.v[:, :end].clone()
    _blend_noisy(kv, buf, k, v, alpha, rot)
    k.index_copy_(1, rows, image_k[:, :a])
    v.index_copy_(1, rows, image_v[:, :a])
    return k, v


def _blend_noisy(kv: SpotKV, buf: LayerBuffers, k: torch.Tensor, v: torch.Tensor, alpha: float,
                 rot: Rotary | None) -> None:
    """Blend the noisy rows of `k`, `v` (the buffers, or a copy laid out alike) toward the aligned source."""
    t, n = buf.text, kv.num_noisy
    src_k, src_v = _aligned_source(buf, n)
    _blend(k[:, t:t + n], v[:, t:t + n], src_k, src_v, buf.target, fusion_columns(kv, rot), alpha)


def _write_source(kv: SpotKV, buf: LayerBuffers, k: torch.Tensor, v: torch.Tensor, source_pre: torch.Tensor | None,
                  rot: Rotary | None) -> None:
    """Source tokens recomputed by this call: their rows (in order) and, for a blend, the target from them."""
    start = buf.text + kv.num_noisy
    buf.k[:, start:].copy_(k)
    buf.v[:, start:].copy_(v)
    buf.order, buf.order_version = None, -1
    if blend_weight(kv, buf.k.dtype) is not None:
        if source_pre is None:
            raise RuntimeError("a blend toward recomputed source tokens needs their keys before RoPE")
        buf.target = _target(kv, source_pre, rot)


def _without_context(kv: SpotKV, buf: LayerBuffers, text_k: torch.Tensor, text_v: torch.Tensor,
                     act_k: torch.Tensor, act_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive skip: keys [text, active, source]. Where the noisy region caches nothing it is free: the text and
    the active rows go right before the source region, and attention reads one view."""
    keep = _order_source(kv, buf)
    end = buf.text + kv.num_noisy
    if kv.cache_noisy:   # the noisy region holds the cache: join in a new tensor instead
        src_k, src_v = buf.k[:, end:end + keep], buf.v[:, end:end + keep]
        return torch.cat([text_k, act_k, src_k], 1), torch.cat([text_v, act_v, src_v], 1)
    start = end - act_k.shape[1] - text_k.shape[1]
    for buffer, rows in ((buf.k, (text_k, act_k)), (buf.v, (text_v, act_v))):
        buffer[:, start:start + text_k.shape[1]].copy_(rows[0])
        buffer[:, start + text_k.shape[1]:end].copy_(rows[1])
    return buf.k[:, start:end + keep], buf.v[:, start:end + keep]
