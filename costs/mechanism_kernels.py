"""What our mechanisms move beyond the stock transformer call, kernel by kernel (`costs.kernels` prices the stock
call; `costs.roofline` adds these). Each function names the code it prices.
"""
from __future__ import annotations

from .flops import Arch
from .kernels import (ATTENTION, MECHANISM, A, F, Kernel, attention, block, copy, ew, rope,
                      table_bytes)

STATS_CHUNK = 1024   # actors.attention_stats.AttentionCollector.chunk: noisy queries per chunk of products


def gather_input(arch: Arch, rows: int) -> list[Kernel]:
    """TokenDrop, random, Sparse Context, forced-gather: the adapter passes the noisy latents and the kept source
    rows, gathered and concatenated, [rows, in_channels] at the transformer's input (their position ids too: 3
    values a row, not counted)."""
    return [copy("gather input rows", rows * arch.in_channels, MECHANISM)]


def route(arch: Arch, text: int, rows: int) -> list[Kernel]:
    """actors.routing.BlockRoute, once per call: `hidden.index_select` of the routed image rows at the first
    routed block, and the block's RoPE table gathered (`Family.gather_rotary`: Flux's text + routed rows, Qwen's
    routed image rows)."""
    table = (text + rows if arch.family == "flux" else rows) * arch.head_dim
    return [copy("route hidden rows", rows * arch.dim, MECHANISM), ew("route rope rows", table, table_bytes(arch), table_bytes(arch), MECHANISM)]


# SpotFusion after RoPE reads the source keys rotated at the noisy positions on the head dims where a noisy token
# and its aligned source token rotate differently: the first RoPE axis (Kontext's reference index, Qwen's frame),
# axes_dims_rope[0] = 16 of 128 in both real configs (actors/families/*/architecture.py: [16, 56, 56])
FUSION_SHARE = 16 / 128


def spot_call(arch: Arch, text: int, noisy: int, active: int, image_rows: int) -> list[Kernel]:
    """Once per partial SpotEdit call (actors.active_noisy): the routing gather at block 0 (`image_rows` =
    active + recomputed source rows, and their RoPE rows: the keys need no table of their own, the cached ones
    are stored rotated) and the velocity scattered back over every noisy token (a clone of [noisy,
    out_channels] and an index_put of the active rows)."""
    return [*route(arch, text, image_rows), copy("spot velocity clone", noisy * arch.out_channels, MECHANISM),
            copy("spot velocity scatter", active * arch.out_channels, MECHANISM)]


def spot_block(arch: Arch, layer: int, text: int, rows: int, keys: int) -> list[Kernel]:
    """One block of a partial call on the post-RoPE K/V buffers (actors.spot_buffers and the family's spot
    processor): the stock block over the `rows` computed image rows — projections, norms, RoPE of q and k over
    the computed rows only, Flux's [text, image] concatenation of q, k, v, Qwen's of q — with attention reading
    text + `keys` image keys and values from the buffers. Qwen's [text, image] concatenations of k and v are
    replaced by the writes into the buffers (`spot_layer`)."""
    out = []
    for k in block(arch, layer, text, rows, rows):
        if k.kind == ATTENTION:
            queries = round(k.written / (arch.dim * A))
            out.append(attention(k.name, queries, text + keys, arch.dim))
        elif not (arch.family == "qwen" and k.name in ("cat k", "cat v")):
            out.append(k)
    return out


def spot_layer(arch: Arch, text: int, noisy: int, active: int, keys: int, source_keys: int, recomputed: int,
               blend: bool) -> list[Kernel]:
    """One layer of a partial SpotEdit call beyond `spot_block`: the post-RoPE K and V buffers get the text rows
    (a copy), the active rows (`index_copy_`) and the `recomputed` source rows (a copy), all in place. With the
    noisy context (keys = noisy + source_keys) and `blend` (SpotFusion, α not rounding to 1 in bf16), one
    in-place `torch.lerp` over the whole noisy K and V rows (reads the rows and the aligned source rows — on the
    first RoPE axis's dims the source keys rotated at the noisy positions —, writes the rows); with recomputed
    source rows those rotated source keys are made first (RoPE of the aligned rows, first axis only). Dropped
    source keys are moved behind the kept ones once per kept set and layer, not per call: left out here."""
    d, out = arch.dim, []
    for p in "kv":
        out += [Kernel(MECHANISM, f"spot write text {p}", 0.0, text * d * A, text * d * A, inplace=True),
                Kernel(MECHANISM, f"spot index_copy {p}", 0.0, active * d * A, active * d * A, inplace=True)]
        if recomputed:
            out.append(Kernel(MECHANISM, f"spot write source {p}", 0.0, recomputed * d * A, recomputed * d * A,
                              inplace=True))
    context = keys != active + source_keys or active == noisy
    if context and blend and active < noisy:
        if recomputed:
            out += _fusion_target(arch, noisy, "spot")
        out += [Kernel(MECHANISM, f"spot blend {p}", 0.0, 2 * noisy * d * A, noisy * d * A, inplace=True)
                for p in "kv"]
    return out


def spot_int8(arch: Arch, rows: int, stored: int) -> list[Kernel]:
    """An int8 K/V store (actors.kv_int8) on one layer of a call: the layer's `rows` (text + noisy + source)
    dequantized into the compute-dtype scratch (read int8 and a scale per row and head, write bf16; then the
    multiply by the scales in place), and the `stored` rows the call wrote quantized back (an abs, an absmax per
    row and head, a divide in fp32, the rounding into int8), for K and V each."""
    d, heads = arch.dim, arch.dim // arch.head_dim
    out: list[Kernel] = []
    for p in "kv":
        out += [Kernel(MECHANISM, f"int8 dequant {p}", 0.0, rows * (d + heads * F), rows * d * A),
                Kernel(MECHANISM, f"int8 scale {p}", 0.0, rows * (d * A + heads * F), rows * d * A, inplace=True)]
        if stored:
            out += [ew(f"int8 abs {p}", stored * d, A, A, MECHANISM),
                    Kernel(MECHANISM, f"int8 absmax {p}", 0.0, stored * d * A, stored * heads * F),
                    ew(f"int8 divide {p}", stored * d, A, F, MECHANISM),
                    ew(f"int8 round {p}", stored * d, F, 1, MECHANISM)]
    return out


def _fusion_target(arch: Arch, noisy: int, who: str) -> list[Kernel]:
    """The aligned source keys rotated at the noisy positions on the first RoPE axis's dims: a contiguous copy of
    those dims and their RoPE (fp32, as the family rotates)."""
    rows = round(noisy * FUSION_SHARE)   # RoPE of `rows` full rows moves what this slice of `noisy` rows does
    return [copy(f"{who} fusion target slice", rows * arch.dim, MECHANISM),
            *rope(arch, f"{who} fusion target rope", rows, MECHANISM)]


def spot_store(arch: Arch, noisy: int, source: int, blend: bool = True) -> list[Kernel]:
    """A full call under SpotEdit's (or focus's, RegionE's) K/V cache: the rotated keys and the values of the
    noisy and the source tokens copied into the layer's post-RoPE buffers (in place), and, for an edit that
    blends (SpotFusion), the source keys rotated at the noisy positions (`spot_layer`)."""
    d = arch.dim
    out = [Kernel(MECHANISM, f"kv store {p}", 0.0, (noisy + source) * d * A, (noisy + source) * d * A, inplace=True)
           for p in "kv"]
    return out + (_fusion_target(arch, noisy, "kv store") if blend else [])


def stats_layer(arch: Arch, layer: int, text: int, noisy: int, source: int) -> list[Kernel]:
    """ToPi's / Sparse Context's attention statistics on one recorded layer of a full call
    (actors.attention_stats.AttentionCollector.attend): the layer's own attention call (priced with the stock
    call: q, k, v computed once) also writes each query's fp32 log-sum-exp; then the source keys and, per chunk
    of 1024 noisy queries, the queries laid out per head, their products with the source keys in bf16 on the
    tensor cores into fp32, `scale·logits − lse` and the exp in place, the sum over the chunk; the source
    values' norms and the cosine similarity of the source features to the mean noisy one (about: an upcast, a
    mean, a product and two norms). `layer` is kept for the callers: the cost no longer depends on it."""
    d, n = arch.dim, text + noisy + source
    heads = d // arch.head_dim
    out = [Kernel(MECHANISM, "stats lse", 0.0, 0.0, heads * n * F), copy("stats source keys", source * d, MECHANISM)]
    for start in range(0, noisy, STATS_CHUNK):
        c = min(STATS_CHUNK, noisy - start)
        logits = heads * c * source
        out += [copy("stats queries", c * d, MECHANISM),
                Kernel(MECHANISM, "stats source logits", 2.0 * c * source * d, (c + source) * d * A, logits * F),
                Kernel(MECHANISM, "stats minus lse", 0.0, logits * F + heads * c * F, logits * F, inplace=True),
                Kernel(MECHANISM, "stats exp", 0.0, logits * F, logits * F, inplace=True),
                Kernel(MECHANISM, "stats source mass", 0.0, logits * F, heads * source * F)]
    out += [ew("stats values upcast", source * d, A, F, MECHANISM),
            Kernel(MECHANISM, "stats value norms", 0.0, source * d * F, heads * source * F),
            ew("stats features upcast", (noisy + source) * d, A, F, MECHANISM),
            Kernel(MECHANISM, "stats similarity", 0.0, (noisy + 3 * source) * d * F, source * d * F)]
    return out


def cache_call(cache: str, arch: Arch, rows: int, skipped: bool, order: int = 1) -> list[Kernel]:
    """A temporal cache's residual bookkeeping in one call over the call's `rows` noisy rows
    (actors.caches.first_block, magcache, taylorseer, velocity_decay), in bf16 [rows, dim] units:
    first-block: the head residual (a subtraction), its relative L1 change against the remembered one (a
    gather, a difference, two abs, two means) and, computed, both residuals stored (a subtraction and two
    scatters) or, skipped, the tail residual gathered and added; magcache: computed, the stack's residual
    stored (a subtraction and a scatter), skipped, gathered and added; taylorseer and velocity-decay work on
    the output [rows, out_channels] only (fp32 Taylor factors, `order` + 1 of them)."""
    e = rows * arch.dim

    def k(name: str, read: float, written: float, elements: float = e) -> Kernel:
        return ew(f"{cache} {name}", elements, read, written, MECHANISM)
    stored = [k("residual", 2 * A, A), k("scatter", A, A)]
    added = [k("gather", A, A), k("add", 2 * A, A)]
    if cache == "first-block":
        measure = [k("head residual", 2 * A, A), k("gather previous", A, A), k("difference", 2 * A, A),
                   k("abs", A, A), k("mean", A, 0), k("abs previous", A, A), k("mean previous", A, 0)]
        return measure + (added if skipped else [k("scatter head", A, A), *stored])
    if cache == "magcache":
        return added if skipped else stored
    if cache in ("taylorseer", "velocity-decay"):
        factors = order + 1 if cache == "taylorseer" else 1
        return [k("output", 2 * F * factors, F * factors, rows * arch.out_channels)]
    raise ValueError(f"unknown cache {cache!r}; priced: first-block, magcache, taylorseer, velocity-decay")
