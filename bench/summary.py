"""From raw benchmark edits to one row per (size, policy): measured speedups with their spread, the FLOP
ideal of the same traces on the benchmark model and on the real architectures, efficiency, overhead."""
from __future__ import annotations

import statistics
from typing import Any, Callable, Iterable

from costs import flops, roofline
from costs.architectures import real as real_architecture
from costs.kernels import modelled

from .families import REAL_ARCHITECTURES, check_family
from .speed import spread

# What each paper reports (wall-clock, their GPUs, their step counts): shown next to our FLOP pricing.
PAPERS: dict[str, str] = {
    "tokendrop": "Kontext: up to 1.8× at 1024², 2× at 2048²",
    "topi": "1.2–1.33× (Kontext, Qwen)",
    "spotedit": "Kontext 1.67–1.95×, Qwen 1.59–1.72×",
    "sparse_context": "~2× one reference, ~4× several",
}


class _Step:
    """A trace row of the JSON, priced like a StepTrace."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.kept, self.total, self.noisy = row["kept"], row["total"], row["noisy"]
        self.from_layer, self.active, self.keys = row.get("from_layer", 0), row.get("active"), row.get("keys")
        self.cache_calls = row.get("cache_calls", ())   # temporal cache: skipped blocks/calls (costs.flops)


def _steps(edit: dict[str, Any]) -> list[_Step]:
    return [_Step(r) for r in edit["trace"]]


def _predicted(arch: flops.Arch, edit: dict[str, Any], text: Any) -> float:
    return flops.predicted_speedup(arch, _steps(edit), text, edit.get("source_cached", False))




def _roofline(arch: flops.Arch, edit: dict[str, Any], text: Any, label: str, device: str) -> float | None:
    """The trace's roofline-predicted speedup on `device` (None: an architecture the roofline does not model).
    Attention statistics and a temporal cache's residual bookkeeping are not in the trace rows: not priced."""
    if not modelled(arch):
        return None
    blend = label.split(":")[0] not in roofline.STATIC_CONTEXT_POLICIES
    return roofline.roofline_speedup(arch, _steps(edit), text, edit.get("source_cached", False), device,
                                     blend=blend)


def pruned_steps(edit: dict[str, Any]) -> list[int]:
    """Indices of the steps in which the policy left source tokens out (after a warm-up, for Sparse Context)."""
    return [i for i, r in enumerate(edit["trace"]) if r["kept"] < r["total"]]


def _step_time(edit: dict[str, Any], steps: list[int], key: str) -> float | None:
    values = [edit["trace"][i].get(key) for i in steps]
    return None if not steps or any(v is None for v in values) else sum(values)


def pruned_step_speedups(full: dict[int, dict[str, Any]], mine: list[dict[str, Any]],
                         key: str) -> dict[str, float] | None:
    """full's time over the policy's in the steps the policy pruned (same step indices, same repetition):
    the steady-state speedup of a long edit, without the warm-up steps that cap a short one."""
    ratios = []
    for e in mine:
        steps = pruned_steps(e)
        a = _step_time(full[e["rep"]], steps, key) if e["rep"] in full else None
        b = _step_time(e, steps, key)
        if a is not None and b:
            ratios.append(a / b)
    return spread(ratios) if ratios else None


def _predicted_pruned(arch: flops.Arch, edit: dict[str, Any], text: Any) -> float | None:
    steps = pruned_steps(edit)
    if not steps:
        return None
    trace = _steps(edit)
    return flops.predicted_speedup(arch, [trace[i] for i in steps], text, edit.get("source_cached", False))


def _median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _ratios(full: dict[int, float], mine: dict[int, float]) -> list[float]:
    return [full[rep] / mine[rep] for rep in sorted(mine) if rep in full and mine[rep] > 0]


# name -> (architecture, text tokens of each call of one step for a given reference count)
RealPricing = dict[str, tuple[flops.Arch, Callable[[int], tuple[int, ...]]]]


def real_pricing(model: str) -> RealPricing:
    """The real architectures a benchmark family's traces are priced on (`bench.families.REAL_ARCHITECTURES`):
    Edit-Plus traces (several references, their own text lengths) on Qwen-Image-Edit-Plus, FLUX.2 [klein] on
    klein 4B, klein KV on klein 9B, the others on FLUX.1-Kontext-dev and Qwen-Image-Edit (one reference each)."""
    names = REAL_ARCHITECTURES[check_family(model)]
    return {name: (priced.arch, priced.architecture.text_tokens) for name in names for priced in [real_architecture(name)]}


def _efficiencies(row: dict[str, Any]) -> None:
    """Measured speedup ÷ FLOP-predicted, both over `full`, where the row has an A side."""
    predicted = row["predicted_bench_vs_full"]
    if "speedup_loop" in row:
        row["efficiency"] = row["speedup_loop"]["median"] / predicted
        row["efficiency_without_policy"] = row["speedup_loop_without_policy"]["median"] / predicted
        row["efficiency_cpu"] = row["speedup_loop_cpu"]["median"] / predicted


def summarise(edits: list[dict[str, Any]], bench_arch: flops.Arch, real: RealPricing | None = None,
              device: str = roofline.DEFAULT_DEVICE) -> list[dict[str, Any]]:
    """One row per (size, reference count, policy) in the order measured; `full` of the same size, reference
    count and repetition is the A side. `device`: the GPU the real architectures' roofline speedups are
    predicted for (`costs.roofline.DEVICES`)."""
    real = real_pricing("flux") if real is None else real
    rows = []
    keys = list(dict.fromkeys((e["size"], e.get("references", 1), e["policy"]) for e in edits))
    for size, count, label in keys:
        same = [e for e in edits if e["size"] == size and e.get("references", 1) == count]
        mine = [e for e in same if e["policy"] == label]
        full = {e["rep"]: e for e in same if e["policy"] == "full"}
        loop = {e["rep"]: e["loop_s"] for e in mine}
        work = {e["rep"]: e["loop_s"] - e["policy_s"] for e in mine}
        edit = {e["rep"]: e["edit_s"] for e in mine}
        row: dict[str, Any] = {
            "size": size, "references": count, "policy": label, "reps": len(mine), "steps": len(mine[0]["trace"]),
            "noisy_tokens": mine[0]["trace"][0]["noisy"], "source_tokens": mine[0]["trace"][0]["total"],
            "text_tokens": mine[0]["text_tokens"],
            # source tokens kept in the last pruned step (Sparse Context: the fixed selection); None = none pruned
            "kept_pruned": next((t["kept"] for t in reversed(mine[0]["trace"]) if t["kept"] < t["total"]), None),
            "keep_ratio": statistics.median(e["keep_ratio"] for e in mine),
            "active_ratio": statistics.median(e["active_ratio"] for e in mine),
            "loop_s": spread(list(loop.values())), "edit_s": spread(list(edit.values())),
            "loop_cpu_s": spread([e["loop_cpu_s"] for e in mine]),
            "policy_overhead_share_loop": statistics.median(e["policy_s"] / e["loop_s"] for e in mine),
            "policy_overhead_share_edit": statistics.median(e["policy_s"] / e["edit_s"] for e in mine),
            "paper": PAPERS.get(label.split(":")[0]),
        }
        if full:
            row["speedup_loop"] = spread(_ratios({r: e["loop_s"] for r, e in full.items()}, loop))
            row["speedup_loop_without_policy"] = spread(
                _ratios({r: e["loop_s"] - e["policy_s"] for r, e in full.items()}, work))
            row["speedup_edit"] = spread(_ratios({r: e["edit_s"] for r, e in full.items()}, edit))
            row["speedup_loop_cpu"] = spread(_ratios({r: e["loop_cpu_s"] for r, e in full.items()},
                                                     {e["rep"]: e["loop_cpu_s"] for e in mine}))
            row["speedup_pruned_step"] = pruned_step_speedups(full, mine, "seconds")
            row["speedup_pruned_step_cpu"] = pruned_step_speedups(full, mine, "cpu_seconds")
        row["predicted_bench"] = statistics.median(_predicted(bench_arch, e, e["text_tokens"]) for e in mine)
        # klein KV's `full` already reuses the reference K/V, so its own FLOP ratio is above 1; the measured
        # speedups are over it, and so is the FLOP ratio they are compared with (= predicted_bench elsewhere)
        a_side = _median(_predicted(bench_arch, e, e["text_tokens"]) for e in full.values()) or 1.0
        row["predicted_bench_vs_full"] = row["predicted_bench"] / a_side
        _efficiencies(row)
        row["predicted_real"] = {
            name: statistics.median(_predicted(arch, e, text(count)) for e in mine)
            for name, (arch, text) in real.items()}
        row["roofline_device"] = roofline.device(device).name
        row["roofline_speedup"] = {name: _median(_roofline(arch, e, text(count), label, device) for e in mine)
                                   for name, (arch, text) in real.items()}
        if any(pruned_steps(e) for e in mine):
            row["predicted_pruned_step_bench"] = _median(_predicted_pruned(bench_arch, e, e["text_tokens"])
                                                         for e in mine)
            row["predicted_pruned_step_real"] = {
                name: _median(_predicted_pruned(arch, e, text(count)) for e in mine)
                for name, (arch, text) in real.items()}
        rows.append(row)
    return rows


# diffusers' QwenImageEditPlusPipeline default num_inference_steps: the analytic table's long edit
EDIT_PLUS_DEFAULT_STEPS = 50
# Edit-Plus encodes every reference after the first at ~1024² area (VAE_IMAGE_SIZE), whatever the output size
EDIT_PLUS_REFERENCE_SIZE = 1024


def sparse_context_budgets(labels: Iterable[str]) -> list[tuple[float, int]]:
    """(keep, warmup_steps) of every fixed-budget `sparse_context` variant among the benchmarked policies,
    read through the policy's own parameter parsing; (0.25, 2) and (0.1, 2) when there is none."""
    import policies

    from .speed import parse_policy

    budgets = []
    for label in labels:
        spec = parse_policy(label)
        if spec.name != "sparse_context":
            continue
        policy = policies.make(spec.name, **spec.params)
        if not policy.adaptive and len(policy.keep) == 1:
            budgets.append((policy.keep[0], policy.warmup_steps))
    return list(dict.fromkeys(budgets)) or [(0.25, 2), (0.1, 2)]


def analytic_multi_reference(sizes: Iterable[int], counts: Iterable[int], budgets: Iterable[tuple[float, int]],
                             steps: Iterable[int]) -> list[dict[str, Any]]:
    """FLOP-ideal Sparse Context speedups on the real Edit-Plus architecture for each (size, keep, reference
    count): per pruned step, and for whole edits of `steps` steps with the budget's warm-up."""
    out = []
    for name, (arch, text) in real_pricing("qwen-plus").items():
        for size in sizes:
            noisy = flops.image_tokens(size)
            for keep, warmup in budgets:
                for count in counts:
                    refs = [noisy] + [flops.image_tokens(EDIT_PLUS_REFERENCE_SIZE)] * (count - 1)
                    tokens = text(count)
                    out.append({
                        "arch": name, "size": size, "references": count, "keep": keep, "warmup": warmup,
                        "text_tokens": list(tokens), "noisy_tokens": noisy, "reference_tokens": sum(refs),
                        "kept_tokens": sum(flops.kept_per_reference(refs, keep)),
                        "per_pruned_step": flops.multi_reference_speedup(arch, tokens, noisy, refs, keep, 1, 0),
                        "edit": {n: flops.multi_reference_speedup(arch, tokens, noisy, refs, keep, n, min(warmup, n))
                                 for n in steps}})
    return out

