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


def measured_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| size | policy | keep | queries | loop s | loop speedup (median [min–max]) | FLOP-predicted "
           "| efficiency | loop speedup, CPU time | efficiency, CPU time | policy overhead (of loop) | edit s "
           "| edit speedup |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['size']}² | {r['policy']} | {r['keep_ratio']:.2f} | {r['active_ratio']:.2f} "
                   f"| {r['loop_s']['median']:.2f} "
                   f"| {_spread(r.get('speedup_loop'))} | {_x(r['predicted_bench'])} "
                   f"| {_pct(r.get('efficiency'))} | {_spread(r.get('speedup_loop_cpu'))} "
                   f"| {_pct(r.get('efficiency_cpu'))} | {_pct(r['policy_overhead_share_loop'])} "
                   f"| {r['edit_s']['median']:.2f} | {_spread(r.get('speedup_edit'))} |")
    return out


def real_table(rows: list[dict[str, Any]], names: list[str]) -> list[str]:
    out = ["| size | policy | keep | " + " | ".join(f"{n} (FLOP-predicted)" for n in names) + " | papers report |",
           "|---|---|---|" + "---|" * len(names) + "---|"]
    for r in rows:
        real = " | ".join(_x(r["predicted_real"][n]) for n in names)
        out.append(f"| {r['size']}² | {r['policy']} | {r['keep_ratio']:.2f} | {real} | {r['paper'] or '–'} |")
    return out


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
    lines = [f"# dropedit speed benchmark", "",
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
             "", *measured_table(result["rows"]), ""]
    if result["skipped"]:
        lines += ["Skipped policies:", ""] + [f"- `{k}`: {v}" for k, v in result["skipped"].items()] + [""]
    lines += ["## The same traces priced on the real architectures", "",
              "FLOP-ideal speedup of the transformer calls (attention + linear FLOPs from each config, "
              "`actors/flops.py`), for the traces measured above (same token counts, same per-step keeps). "
              "Papers report wall-clock on GPUs, with their own step counts and keep ratios.", "",
              *real_table(result["rows"], names), "",
              "## Pipeline overhead", "", *pipeline_lines(result.get("pipeline")), "",
              "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in m.items()]
    if loaded(m):
        lines.append("- **The machine was loaded by other work during the run (load average above half the "
                     "cores): absolute times and their spread include that contention.**")
    else:
        lines.append("- The machine is shared; the load averages above say how busy it was.")
    return "\n".join(lines) + "\n"
