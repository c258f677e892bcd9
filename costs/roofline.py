"""The roofline cost model: a transformer call's time on a named GPU, from what each kernel computes and moves.

A kernel takes max(FLOPs / peak, bytes / bandwidth) — the longer of its tensor-core time and its memory time —
and a call is the sum over its kernels (`costs.kernels`: the stock call as diffusers 0.42.1 runs it eagerly in
bf16; `costs.mechanism_kernels`: what our mechanisms add). Peaks are the published ones, so every time here is
a lower bound (no launch latency, no synchronisation, no kernel below its peak) and every speedup a prediction
of this model, not a measurement. What it says that the FLOP model (`costs.flops`) cannot: work that moves
bytes without FLOPs (RoPE in fp32, copies, SpotEdit's full-size key tensors, attention statistics' fp32
softmax) costs time on a GPU that does ~300 FLOP per byte.

Token bookkeeping is `costs.flops.call_flops`'s, argument for argument; `Mechanics` adds what a trace does not
record: SpotFusion's blend, whether a full call refills the K/V cache, which layers record attention
statistics, and a temporal cache's residual bookkeeping.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from . import mechanism_kernels as mk
from .flops import Arch, _skips, full_trace
from .kernels import Kernel, block, embed_and_head


@dataclass(frozen=True)
class Device:
    """A GPU as the roofline sees it: published peaks (SXM boards)."""

    name: str
    bf16_flops: float   # dense bf16 tensor-core FLOP/s (the datasheets' figure "with sparsity" halved)
    fp32_flops: float   # fp32 on the CUDA cores, FLOP/s: what an fp32 matmul gets with TF32 off
    bandwidth: float    # HBM bytes/s
    memory_gb: float    # HBM capacity, GB (10⁹ bytes) as the datasheets state it


# NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column): BF16 Tensor Core 1,979 TFLOPS with sparsity = 989
# dense, FP32 67 TFLOPS, GPU memory 80 GB HBM3 at 3.35 TB/s.
# NVIDIA H200 Tensor Core GPU datasheet (H200 SXM column): the same GH100 compute (BF16 1,979 TFLOPS with
# sparsity, FP32 67 TFLOPS), 141 GB HBM3e at 4.8 TB/s.
DEVICES: dict[str, Device] = {
    "H100 SXM": Device("H100 SXM", 989e12, 67e12, 3.35e12, 80.0),
    "H200": Device("H200", 989e12, 67e12, 4.8e12, 141.0),
}
DEFAULT_DEVICE = "H100 SXM"
# policies whose partial steps read a static K/V context: no SpotFusion blend (`Mechanics.blend`)
STATIC_CONTEXT_POLICIES = ("focus", "regione", "forced-focus")


def device(name: str | Device) -> Device:
    """A device by name ("H100 SXM", "h100", "H200"; case and separators ignored)."""
    if isinstance(name, Device):
        return name
    key = "".join(c for c in name.lower() if c.isalnum())
    for known, dev in DEVICES.items():
        flat = "".join(c for c in known.lower() if c.isalnum())
        if key in (flat, flat.replace("sxm", "")):
            return dev
    raise ValueError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")


@dataclass(frozen=True)
class Mechanics:
    """What a call does beyond its token counts."""

    blend: bool = True                  # partial calls blend the noisy K/V cache toward the source (SpotFusion);
                                        # False: focus's and RegionE's static context (no α)
    stores_kv: bool = False             # a full call refills SpotEdit's (focus's, RegionE's) K/V cache
    stats_layers: tuple[int, ...] = ()  # layers recording attention statistics (ToPi anchors, Sparse Context)
    cache: str | None = None            # a temporal cache's residual bookkeeping ("first-block", "magcache", ...)
    kv_int8: bool = False               # the K/V buffers stored in int8 (actors.kv_int8): dequantized per call


def kernel_seconds(kernel: Kernel, dev: Device) -> float:
    """max(FLOPs / peak, bytes / bandwidth): the kernel is compute- or memory-bound, whichever is longer."""
    peak = dev.fp32_flops if kernel.fp32 else dev.bf16_flops
    return max(kernel.flops / peak, kernel.bytes / dev.bandwidth)


def call_kernels(arch: Arch, text: int, noisy: int, source: int, kept: int | None = None, from_layer: int = 0,
                 active: int | None = None, keys: int | None = None, source_cached: bool = False,
                 skipped_from: int | None = None, skipped_call: bool = False,
                 mechanics: Mechanics = Mechanics()) -> list[tuple[Kernel, int]]:
    """Every kernel of one transformer call with how many times it runs (tokens as `costs.flops.call_flops`)."""
    kept = source if kept is None else kept
    rows_out = active if active is not None else noisy
    cache = [] if mechanics.cache is None else mk.cache_call(
        mechanics.cache, arch, rows_out, skipped_call or skipped_from is not None)
    if skipped_call:
        return [(k, 1) for k in cache]
    n_run = arch.num_layers if skipped_from is None else min(arch.num_layers, int(skipped_from))
    if active is None:
        image_in, image_out = noisy + (source if from_layer > 0 else kept), noisy + kept
        tokens = [(noisy + (source if layer < from_layer else kept),) * 2 for layer in range(n_run)]
    else:
        if from_layer:
            raise ValueError("a step cannot both leave noisy tokens without queries and start at a later layer")
        image_in, image_out = noisy + source, active + (0 if source_cached else kept)
        keys = noisy + kept if keys is None else keys
        tokens = [(image_out, keys)] * n_run
    out = [(k, 1) for k in [*embed_and_head(arch, text, image_in, image_out), *cache]]
    # layers grouped by what they cost: (dual, rows, keys) -> how many such layers run
    groups = Counter((layer < arch.dual_layers, *t) for layer, t in enumerate(tokens))
    blocks = block if active is None else mk.spot_block   # partial calls: keys from SpotEdit's K/V buffers
    for (dual, rows, layer_keys), count in groups.items():
        layer = 0 if dual else arch.dual_layers
        out += [(k, count) for k in blocks(arch, layer, text, rows, layer_keys)]
    out += [(k, 1) for k in _mechanism_kernels(arch, text, noisy, source, kept, from_layer, active, keys,
                                               image_out, n_run, mechanics)]
    return out


def _mechanism_kernels(arch: Arch, text: int, noisy: int, source: int, kept: int, from_layer: int,
                       active: int | None, keys: int | None, image_out: int, n_run: int,
                       mechanics: Mechanics) -> list[Kernel]:
    """Gathers, routing, SpotEdit's partial and full calls, attention statistics (once per call, or per layer
    repeated here per layer that runs)."""
    out: list[Kernel] = []
    if active is not None:
        source_keys = keys - (active if keys == active + kept and active < noisy else noisy)
        out += mk.spot_call(arch, text, noisy, active, image_out)
        for _ in range(n_run):
            out += mk.spot_layer(arch, text, noisy, active, keys, source_keys, image_out - active, mechanics.blend)
            if mechanics.kv_int8:   # every row loaded; text, noisy (and recomputed source) rows stored back
                out += mk.spot_int8(arch, text + noisy + source, text + noisy + image_out - active)
    elif from_layer > 0 and from_layer < n_run and kept < source:
        out += mk.route(arch, text, noisy + kept)
    elif kept < source:
        out += mk.gather_input(arch, noisy + kept)
    if active is None and mechanics.stores_kv:
        out += [k for _ in range(n_run) for k in mk.spot_store(arch, noisy, source, mechanics.blend)]
        if mechanics.kv_int8:
            out += [k for _ in range(n_run) for k in mk.spot_int8(arch, 0, noisy + source)]
    for layer in mechanics.stats_layers:
        if layer < n_run:
            out += mk.stats_layer(arch, layer, text, noisy, source if layer < from_layer else kept)
    return out


def seconds_of(kernels: Iterable[tuple[Kernel, int]], dev: str | Device = DEFAULT_DEVICE) -> float:
    dev = device(dev)
    return sum(kernel_seconds(k, dev) * n for k, n in kernels)


def seconds_by_kind(kernels: Iterable[tuple[Kernel, int]], dev: str | Device = DEFAULT_DEVICE) -> dict[str, float]:
    """Seconds per kernel class (linear, attention, elementwise, mechanism)."""
    dev, out = device(dev), {}
    for k, n in kernels:
        out[k.kind] = out.get(k.kind, 0.0) + kernel_seconds(k, dev) * n
    return out


def call_time(arch: Arch, dev: str | Device, text: int, noisy: int, source: int, kept: int | None = None,
              from_layer: int = 0, active: int | None = None, keys: int | None = None, source_cached: bool = False,
              skipped_from: int | None = None, skipped_call: bool = False,
              mechanics: Mechanics = Mechanics()) -> float:
    """Predicted seconds of one transformer call on `dev` (arguments as `costs.flops.call_flops`)."""
    return seconds_of(call_kernels(arch, text, noisy, source, kept, from_layer, active, keys, source_cached,
                                   skipped_from, skipped_call, mechanics), dev)


def step_time(arch: Arch, step: Any, text_tokens: Iterable[int], source_cached: bool = False,
              dev: str | Device = DEFAULT_DEVICE, mechanics: Mechanics = Mechanics()) -> float:
    """One denoising step of a trace (a `StepTrace` or anything with its fields), one call per text length."""
    noisy = int(getattr(step, "noisy", 0))
    if noisy <= 0:
        raise ValueError("the step has no noisy-token count (StepTrace.noisy): cannot price it")
    keys = getattr(step, "keys", None)
    cached = list(getattr(step, "cache_calls", None) or ())
    total = 0.0
    for i, text in enumerate(text_tokens):
        skipped_from, skipped_call = _skips(cached[i]) if i < len(cached) else (None, False)
        total += call_time(arch, dev, int(text), noisy, int(step.total), int(step.kept),
                           int(getattr(step, "from_layer", 0) or 0), getattr(step, "active", None),
                           None if keys is None else int(keys), source_cached, skipped_from, skipped_call, mechanics)
    return total


def trace_time(arch: Arch, trace: Iterable[Any], text_tokens: Iterable[int], source_cached: bool = False,
               dev: str | Device = DEFAULT_DEVICE, *, blend: bool = True, kv_cache: bool | None = None,
               stats: Mapping[int, tuple[int, ...]] | None = None,
               cache: str | None = None) -> float:
    """Predicted seconds of a trace's transformer calls. `kv_cache`: the full steps refill a K/V cache (None: when
    any step leaves noisy tokens without queries); `stats`: step index -> layers recording statistics;
    `cache`: the temporal cache that ran (its residual bookkeeping)."""
    trace, text_tokens = list(trace), tuple(text_tokens)
    if kv_cache is None:
        kv_cache = any(getattr(s, "active", None) is not None for s in trace)
    base = Mechanics(blend=blend, cache=cache)
    total = 0.0
    for i, step in enumerate(trace):
        index = int(getattr(step, "index", i))
        m = replace(base, stores_kv=kv_cache, stats_layers=tuple((stats or {}).get(index, ())))
        total += step_time(arch, step, text_tokens, source_cached, dev, m)
    return total


def roofline_speedup(arch: Arch, trace: Iterable[Any], text_tokens: Iterable[int], source_cached: bool = False,
                     dev: str | Device = DEFAULT_DEVICE, **mechanics: Any) -> float:
    """Predicted speedup on `dev`: the same steps with every token computed and no mechanism, over this trace
    (`kernels.modelled(arch)` says whether the architecture can be priced)."""
    trace, text_tokens = list(trace), tuple(text_tokens)
    full = trace_time(arch, full_trace(trace), text_tokens, dev=dev)
    return full / trace_time(arch, trace, text_tokens, source_cached, dev, **mechanics)
