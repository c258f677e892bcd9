"""The machine a benchmark ran on, and the benchmark as Markdown."""
from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What the timings depend on. Load averages are filled in at start and end by the caller."""
    import diffusers
    import torch

    from actors import default_device

    device = default_device()
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "device": str(device), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import ray
        info["ray"] = ray.__version__
    except ImportError:
        pass
    return info


def loaded(info: dict[str, Any]) -> bool:
    """Was something else running? 1-minute load above half the cores at start or end."""
    loads = [v[0] for v in (info.get("load_start"), info.get("load_end")) if v]
    return any(v > 0.5 * (info.get("cores") or 1) for v in loads)


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _spread(s: dict[str, float] | None, unit: str = "×") -> str:
    if not s:
        return "–"
    return f"{s['median']:.2f}{unit} [{s['min']:.2f}–{s['max']:.2f}]"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _multi(rows: list[dict[str, Any]]) -> bool:
    return any(r.get("references", 1) != 1 for r in rows)


def _where(r: dict[str, Any], multi: bool) -> str:
    """The size cell, and the reference count's cell when the run has several."""
    return f"{r['size']}² | {r.get('references', 1)}" if multi else f"{r['size']}²"


def _vs_full(r: dict[str, Any]) -> float:
    """The FLOP ratio the measured speedup is compared with: over `full` (rows of older runs: over no drop)."""
    return r.get("predicted_bench_vs_full", r["predicted_bench"])


def reuse_note(rows: list[dict[str, Any]]) -> list[str]:
    """Where `full` itself saves FLOPs (FLUX.2 [klein] KV reuses the reference K/V), what the columns are over."""
    own = {f"{r['size']}² ×{r.get('references', 1)}": r["predicted_bench"] for r in rows
           if r["policy"] == "full" and abs(r["predicted_bench"] - 1) > 1e-9}
    if not own:
        return []
    ratios = ", ".join(f"{k}: {v:.2f}×" for k, v in own.items())
    return ["`full` on this pipeline reuses the reference K/V after the first call, so it computes fewer FLOPs "
            f"than the same steps without reuse ({ratios} by the FLOP model, on the benchmark model). The measured "
            "speedups, FLOP-predicted and efficiency columns above are over that `full`; the real-architecture "
            "table below prices every trace over the same steps with nothing dropped and nothing reused.", ""]


def measured_table(rows: list[dict[str, Any]]) -> list[str]:
    multi = _multi(rows)
    out = [f"| size{' | refs' if multi else ''} | policy | keep | queries | loop s | loop speedup (median [min–max]) "
           "| FLOP-predicted | efficiency | loop speedup, CPU time | efficiency, CPU time | policy overhead (of loop) "
           "| edit s | edit speedup |",
           "|---|" + "---|" * multi + "---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {_where(r, multi)} | {r['policy']} | {r['keep_ratio']:.2f} | {r['active_ratio']:.2f} "
                   f"| {r['loop_s']['median']:.2f} "
                   f"| {_spread(r.get('speedup_loop'))} | {_x(_vs_full(r))} "
                   f"| {_pct(r.get('efficiency'))} | {_spread(r.get('speedup_loop_cpu'))} "
                   f"| {_pct(r.get('efficiency_cpu'))} | {_pct(r['policy_overhead_share_loop'])} "
                   f"| {r['edit_s']['median']:.2f} | {_spread(r.get('speedup_edit'))} |")
    return out


def real_table(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    """FLOP-predicted and (rows from a run that priced them) roofline-predicted speedups on the real
    architectures (`costs.roofline`: a prediction for the named GPU, not a measurement; – where the
    architecture is not modelled)."""
    multi = _multi(rows)
    device = next((r["roofline_device"] for r in rows if r.get("roofline_device")), None)
    roof = [f"{n} (roofline, {device})" for n in names] if device else []
    out = [f"| size{' | refs' if multi else ''} | policy | keep | "
           + " | ".join([f"{n} (FLOP-predicted)" for n in names] + roof) + " | papers report |",
           "|---|" + "---|" * multi + "---|---|" + "---|" * (len(names) + len(roof)) + "---|"]
    for r in rows:
        cells = [_x(r["predicted_real"][n]) for n in names]
        cells += [_x((r.get("roofline_speedup") or {}).get(n)) for n in names] if device else []
        out.append(f"| {_where(r, multi)} | {r['policy']} | {r['keep_ratio']:.2f} | {' | '.join(cells)} "
                   f"| {r['paper'] or '–'} |")
    return out


def multi_reference_table(rows: list[dict[str, Any]], real: str) -> list[str]:
    """One line per (size, policy, reference count), the counts of a policy next to each other. Each speedup is
    against `full` with the same references in the same repetition; "pruned steps" compares only the steps in
    which the policy dropped tokens (Sparse Context: after its warm-up), the steady state of a long edit."""
    out = ["| size | policy | refs | reference tokens → kept (pruned step) | loop speedup | loop speedup, CPU time "
           "| FLOP-predicted loop, bench model | pruned-step speedup | pruned-step speedup, CPU time "
           f"| FLOP-predicted pruned step, bench model | FLOP-predicted loop, {real} "
           f"| FLOP-predicted pruned step, {real} |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    labels = list(dict.fromkeys(r["policy"] for r in rows if r["policy"] != "full"))   # full: the A side
    ordered = sorted((r for r in rows if r["policy"] != "full"),
                     key=lambda r: (r["size"], labels.index(r["policy"]), r.get("references", 1)))
    for r in ordered:
        kept = f"{r['source_tokens']} → {r['kept_pruned']}" if r.get("kept_pruned") is not None \
            else f"{r['source_tokens']}"
        out.append(f"| {r['size']}² | {r['policy']} | {r.get('references', 1)} | {kept} "
                   f"| {_spread(r.get('speedup_loop'))} | {_spread(r.get('speedup_loop_cpu'))} "
                   f"| {_x(r['predicted_bench'])} | {_spread(r.get('speedup_pruned_step'))} "
                   f"| {_spread(r.get('speedup_pruned_step_cpu'))} "
                   f"| {_x(r.get('predicted_pruned_step_bench'))} | {_x(r['predicted_real'].get(real))} "
                   f"| {_x((r.get('predicted_pruned_step_real') or {}).get(real))} |")
    return out


def analytic_table(priced: list[dict[str, Any]]) -> list[str]:
    """The FLOP-ideal Sparse Context speedups on the real Edit-Plus (`bench.summary.analytic_multi_reference`)."""
    steps = sorted({int(n) for p in priced for n in p["edit"]})
    out = ["| architecture | size | keep | warm-up | refs | text + noisy + reference tokens → kept "
           "| per pruned step | " + " | ".join(f"{n}-step edit" for n in steps) + " |",
           "|---|---|---|---|---|---|---|" + "---|" * len(steps)]
    for p in priced:
        edit = {int(n): v for n, v in p["edit"].items()}
        out.append(f"| {p['arch']} | {p['size']}² | {p['keep']:g} | {p['warmup']} | {p['references']} "
                   f"| {'/'.join(map(str, p['text_tokens']))} + {p['noisy_tokens']} + {p['reference_tokens']} "
                   f"→ {p['kept_tokens']} | {_x(p['per_pruned_step'])} | "
                   + " | ".join(_x(edit.get(n)) for n in steps) + " |")
    return out


def multi_reference_lines(result: dict[str, Any]) -> list[str]:
    names = list(result["real_architectures"])
    return ["## Sparse Context: single vs multi-reference", "",
            "Measured: each reference count's speedup is against `full` with the same references in the same "
            "repetition. Reference tokens: all references' tokens (the first at the edit size, the others at "
            "~1024² area as Edit-Plus encodes them).", "",
            *multi_reference_table(result["rows"], names[0]), "",
            "FLOP-ideal on the real architecture (`costs/flops.py`): sequence = text + noisy + Σ reference tokens, "
            "the `warm-up` steps full, then ⌈keep·n⌉ tokens of every reference; text = the prompt's and the "
            "negative prompt's (true CFG: two calls per step), 196 vision tokens per reference. Per pruned step = "
            "the limit of a long edit; papers report ~2× (one reference) and ~4× (several) wall-clock on GPUs.", "",
            *analytic_table(result["multi_reference"]), ""]


def pipeline_lines(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return ["Not measured (`--no-pipeline`)."]
    if "error" in p:
        return [f"Not measured: {p['error']}"]
    bare, ray_side, ratio = p["bare"], p["ray"], p["ratio"]

    def rate(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"
    init = "already running" if ray_side["ray_init_s"] is None else f"{ray_side['ray_init_s']:.1f} s"
    return [
        f"{p['records']} records ({p['input']}), model `{p['model']}`, policy `full`, {p['size']}², "
        f"{p['steps']} steps; Ray: one actor, {ray_side['actor_num_cpus']} CPU / {ray_side['actor_num_gpus']} GPU, "
        f"no metrics, PNG + Parquet written; bare: `Editor` in one process "
        f"({bare['torch_threads']} torch threads), nothing written.", "",
        "| | edits/s end to end | edits/s steady | start-up |", "|---|---|---|---|",
        f"| bare `Editor` loop | {rate(bare['edits_per_s_with_load'])} | {rate(bare['steady_edits_per_s'])} "
        f"| model load {bare['load_s']:.1f} s |",
        f"| Ray pipeline | {rate(ray_side['edits_per_s'])} | {rate(ray_side['steady_edits_per_s'])} "
        f"| `ray.init` {init}; graph, actor, model load inside end to end ({ray_side['run_s']:.1f} s) |",
        f"| ratio Ray ÷ bare | {_x(ratio.get('end_to_end'))} | {_x(ratio.get('steady'))} | |"]


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["machine"]
    names = list(result["real_architectures"])
    lines = ["# dropedit speed benchmark", "",
             f"Benchmark model: `{s['model']}` family, real diffusers classes, random weights: "
             f"{result['bench_arch']['dual_layers']} dual + {result['bench_arch']['single_layers']} single "
             f"layers, width {result['bench_arch']['dim']} ({s['heads']} heads × {s['head_dim']}); "
             f"{s['steps']} steps, {s['reps']} repetitions (A/B with `full`, order rotated), sizes "
             f"{', '.join(f'{x}²' for x in s['sizes'])}.", "",
             "## Measured on the benchmark model", "",
             "Loop = sum of `StepTrace.seconds` (transformer, sampler, policy); edit = whole edit (text "
             "encoders, VAE encode/decode too). FLOP-predicted = transformer FLOPs of `full` ÷ those of the "
             "policy's own trace on this model; efficiency = measured loop speedup ÷ FLOP-predicted. The CPU-time "
             "columns use the process's CPU time (all threads) instead of wall time: on a shared CPU they grow "
             "far less with other work (on a GPU they mean little). Policy "
             "overhead = plan + observe + scoring outside them (ToPi's attention statistics), as a share of the "
             "loop. Keep = mean kept fraction of source tokens over steps; queries = mean fraction of noisy "
             "tokens that got queries (SpotEdit). Random weights: the adaptive policies keep what their "
             "scores give on this model, not what they would keep on a trained one.",
             "", *measured_table(result["rows"]), "", *reuse_note(result["rows"])]
    if result["skipped"]:
        lines += ["Skipped policies:", ""] + [f"- `{k}`: {v}" for k, v in result["skipped"].items()] + [""]
    lines += ["## The same traces priced on the real architectures", "",
              "FLOP-ideal speedup of the transformer calls (attention + linear FLOPs from each config, "
              "`costs/flops.py`), for the traces measured above (same token counts, same per-step keeps), and "
              "the roofline-predicted speedup on the named GPU (`costs/roofline.py`: every kernel's max of "
              "FLOPs ÷ peak and bytes ÷ bandwidth; a prediction, nothing measured on a GPU; attention "
              "statistics and cache bookkeeping are not in the trace and not priced; see docs/roofline.md). "
              "Papers report wall-clock on GPUs, with their own step counts and keep ratios.", "",
              *real_table(result["rows"], names), "",
              *(multi_reference_lines(result) if result.get("multi_reference") else []),
              "## Pipeline overhead", "", *pipeline_lines(result.get("pipeline")), "",
              "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in m.items()]
    if loaded(m):
        lines.append("- **The machine was loaded by other work during the run (load average above half the "
                     "cores): absolute times and their spread include that contention.**")
    else:
        lines.append("- The machine is shared; the load averages above say how busy it was.")
    return "\n".join(lines) + "\n"
