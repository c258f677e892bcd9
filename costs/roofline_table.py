"""`python -m costs.roofline_table`: the roofline model's predictions as markdown (docs/roofline.md).

One step of each forced plan of `bench/forced.py` at its steady state (after its full steps), priced against a
full step of the same model and size: the FLOP-ideal speedup (`costs.flops`), the roofline-predicted one on
an H100 SXM and an H200 (`costs.roofline`) and their ratio; then the memory table (`costs.memory`). Every
number is a prediction of these models; none was measured on a GPU.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable

from .architectures import real
from .flops import image_tokens, step_flops
from .memory import POLICIES, edit_memory, fits
from .roofline import DEVICES, Mechanics, call_kernels, seconds_by_kind, seconds_of, step_time
from .selector_kernels import selector_kernels

MODELS = ("FLUX.1-Kontext-dev", "Qwen-Image-Edit")
MEMORY_MODELS = {"FLUX.1-Kontext-dev": "flux-kontext", "Qwen-Image-Edit": "qwen-image-edit",
                 "FLUX.2-klein-4B": "flux2-klein", "FLUX.2-dev": "flux2-dev"}
SIZES = (1024, 2048)
TOPI_FROM_LAYER = 10   # the brief's ToPi plan: forced-topi:keep=0.5,from_layer=10


def _step(n: int, kept: int | None = None, from_layer: int = 0, active: int | None = None,
          keys: int | None = None) -> SimpleNamespace:
    """A step as `StepTrace` records it, with one reference of `n` source tokens."""
    return SimpleNamespace(noisy=n, total=n, kept=n if kept is None else kept, from_layer=from_layer,
                           active=active, keys=keys)


def _half(n: int) -> int:
    return math.ceil(0.5 * n)   # bench.forced.random_mask keeps ⌈keep·n⌉ (policies.topi_select.top_k_count)


# plan label -> (step at n noisy = n source tokens, the mechanics it runs, whether the source K/V are cached)
PLANS: dict[str, Callable[[int, int], tuple[SimpleNamespace, Mechanics, bool]]] = {
    "full": lambda n, layers: (_step(n), Mechanics(), False),
    "forced-gather keep=0.5": lambda n, layers: (_step(n, _half(n)), Mechanics(), False),
    f"forced-topi keep=0.5, from_layer={TOPI_FROM_LAYER}":
        lambda n, layers: (_step(n, _half(n), from_layer=TOPI_FROM_LAYER), Mechanics(), False),
    "forced-topi anchor step (statistics, last layer)":
        lambda n, layers: (_step(n), Mechanics(stats_layers=(layers - 1,)), False),
    "forced-spotedit active=0.5": lambda n, layers: (_step(n, active=_half(n), keys=2 * n), Mechanics(), True),
    "forced-spotedit active=0.2":
        lambda n, layers: (_step(n, active=math.ceil(0.2 * n), keys=2 * n), Mechanics(), True),
    "forced-spotedit active=0.2, int8 K/V store":
        lambda n, layers: (_step(n, active=math.ceil(0.2 * n), keys=2 * n), Mechanics(kv_int8=True), True),
}


def speedups(model: str, size: int, plan: str) -> dict[str, float]:
    """FLOP-ideal and roofline-predicted speedups of one steady-state step of `plan` over a full step."""
    priced = real(model)
    arch, text, n = priced.arch, priced.text(), image_tokens(size)
    step, mechanics, cached = PLANS[plan](n, arch.num_layers)
    full = _step(n)
    out = {"flops_ideal": step_flops(arch, full, text).total / step_flops(arch, step, text, cached).total}
    for name in DEVICES:
        out[name] = step_time(arch, full, text, dev=name) / step_time(arch, step, text, cached, name, mechanics)
    return out


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def speed_table() -> str:
    """Markdown: one row per model × size × plan."""
    h100, h200 = DEVICES
    lines = [f"| model | size | plan | FLOP-ideal | roofline {h100} | ratio {h100} | roofline {h200} | "
             f"ratio {h200} |", "|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        for size in SIZES:
            for plan in PLANS:
                s = speedups(model, size, plan)
                lines.append(f"| {model} | {size}² | {plan} | {_fmt(s['flops_ideal'])} | {_fmt(s[h100])} | "
                             f"{_fmt(s[h100] / s['flops_ideal'])} | {_fmt(s[h200])} | "
                             f"{_fmt(s[h200] / s['flops_ideal'])} |")
    return "\n".join(lines)


def step_table() -> str:
    """Markdown: a full step's predicted milliseconds per kernel class on each device."""
    lines = ["| model | size | device | linear | attention | element-wise | step |", "|---|---|---|---|---|---|---|"]
    for model in MODELS:
        priced = real(model)
        for size in SIZES:
            n = image_tokens(size)
            for name in DEVICES:
                kinds: dict[str, float] = {}
                for text in priced.text():
                    for kind, sec in seconds_by_kind(call_kernels(priced.arch, text, n, n), name).items():
                        kinds[kind] = kinds.get(kind, 0.0) + sec
                ms = {k: 1e3 * v for k, v in kinds.items()}
                lines.append(f"| {model} | {size}² | {name} | {ms['linear']:.0f} | {ms['attention']:.0f} | "
                             f"{ms['elementwise']:.0f} | {sum(ms.values()):.0f} |")
    return "\n".join(lines)


def selector_table() -> str:
    """Markdown: SpotEdit's selector (one scored step) against the 20 %-active partial step it decides, H100."""
    name = next(iter(DEVICES))
    lines = [f"| model | size | selector ms ({name}) | of which mid-block attention | partial step ms, 20 % active | "
             "selector / partial step |", "|---|---|---|---|---|---|"]
    for model in MODELS:
        priced = real(model)
        arch, text = priced.arch, priced.text()
        for size in SIZES:
            n = image_tokens(size)
            step, mechanics, cached = PLANS["forced-spotedit active=0.2"](n, arch.num_layers)
            partial = step_time(arch, step, text, cached, name, mechanics)
            variants = [(True, "")] if arch.family == "flux" else [(False, " (stock 3D convs)"), (True, " (exact 2D)")]
            for exact, note in variants:
                kernels = [(k, 1) for k in selector_kernels(arch.family, size, exact)]
                ms = {k: 1e3 * v for k, v in seconds_by_kind(kernels, name).items()}
                attn = 1e3 * seconds_of([(k, 1) for k, _ in kernels if k.name.startswith("mid attn sdpa")], name)
                total = sum(ms.values())
                lines.append(f"| {model}{note} | {size}² | {total:.1f} | {attn:.1f} | {1e3 * partial:.1f} | "
                             f"{total / (1e3 * partial):.2f} |")
    return "\n".join(lines)


def memory_table() -> str:
    """Markdown: GiB per model × policy × size, and whether one edit fits an 80 and a 141 GiB card, with the
    text encoders resident and offloaded between prompts (`actors.text_encoders`)."""
    lines = ["| model | policy | size | transformer | encoders | caches | activations | total | total, encoders "
             "offloaded | total, offloaded + int8 K/V | 80 GB | 80 GB, offloaded | 80 GB, offloaded + int8 K/V | "
             "141 GB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, name in MEMORY_MODELS.items():
        for policy in POLICIES:
            for size in SIZES:
                m = edit_memory(name, policy, size)
                if m.refused:
                    lines.append(f"| {label} | {policy} | {size}² | {m.weights:.1f} | {m.encoders:.1f} | – | – | "
                                 f"– | – | – | refused | refused | refused | refused |")
                    continue
                off = edit_memory(name, policy, size, offload=True)
                q = edit_memory(name, policy, size, offload=True, kv_int8=True)
                ok = [("yes" if fits(name, policy, size, card, o, i)[0] else "**no**")
                      for card, o, i in ((80, False, False), (80, True, False), (80, True, True), (141, False, False))]
                lines.append(f"| {label} | {policy} | {size}² | {m.weights:.1f} | {m.encoders:.1f} | "
                             f"{m.caches:.2f} | {m.activations:.2f} | {m.total:.1f} | {off.total:.1f} | "
                             f"{q.total:.1f} | {' | '.join(ok)} |")
    return "\n".join(lines)


def markdown() -> str:
    """Everything the script prints (docs/roofline.md holds it verbatim)."""
    return "\n\n".join(["### Speedup of one step, predicted", speed_table(),
                        "### A full step, predicted milliseconds per kernel class", step_table(),
                        "### SpotEdit's selector per scored step, predicted", selector_table(),
                        "### Memory of one edit, predicted GiB", memory_table()]) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
