"""`dropedit run CONFIG --dry-run`: what a run would do and what it would cost, without loading a model or
starting Ray.

The grid is the run's own (`pipeline.config.expand_run`, expanded once per run: steps and guidance resolved per
model). The cost is the cost model's (`costs.edit_cost`) of the real architecture each model is priced as in
`actors.models` (FLUX.1-Kontext-dev, Qwen-Image-Edit, Qwen-Image-Edit-Plus with one reference, whatever checkpoint
the config names, the toy and tiny models included): full-context FLOPs of one transformer call x calls per step
(Qwen's true CFG: 2, none with
guidance <= 1) x steps, per edit. Pruning lowers it: the estimate is an upper bound, the cost at keep 1 (every
configuration is costed as `full`). GPU-hours = FLOPs / the GPU's sustained rate (`gpu_tflops`: an assumption,
by default 400 TFLOP/s, roughly an H100's effective dense bf16 on these large matmuls; the VAE, text encoder
and metrics are not counted).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from costs import DEFAULT_GPU_TFLOPS, edit_cost, gpu_seconds
from pipeline.configuration import ExpandedRun

from .config import RunConfig
from .pools import plan_pools


def count_records(cfg: RunConfig) -> tuple[int | None, str]:
    """The number of input records, or None and why (a placeholder path, object storage)."""
    uri = cfg.input.uri
    if "://" in uri:
        return None, "object storage is not read in a dry run, records unknown; pass --records N"
    from .sources import read_records

    try:
        records = read_records(uri, cfg.input.format, cfg.storage, **dict(cfg.input.options))
    except (OSError, ValueError) as err:
        return None, f"not reachable here ({type(err).__name__}), records unknown; pass --records N"
    return len(records), f"{len(records)} records"


def plan(run: ExpandedRun, records: int | None = None, gpu_tflops: float = DEFAULT_GPU_TFLOPS) -> dict[str, Any]:
    """The grid, the number of edits and the estimated GPU-hours (upper bound: keep 1)."""
    if gpu_tflops <= 0:
        raise ValueError(f"--gpu-tflops must be > 0, got {gpu_tflops}")
    cfg, configs = run.config, run.configurations
    if records is None:
        records, input_note = count_records(cfg)
    else:
        input_note = f"{records} records (given)"
    flops_per_record = 0.0
    models = []
    for model in cfg.models:
        mine = run.of_model(model.key)
        costs = {}
        for c in mine:
            key = (c.height, c.width, c.steps, c.guidance_scale)
            if key not in costs:
                costs[key] = edit_cost(model.name, *key)
            flops_per_record += costs[key].flops
        models.append({"model": model.key, "name": model.name, "configurations": len(mine), "costs": costs})
    hours_per_record = gpu_seconds(flops_per_record, gpu_tflops) / 3600
    edits = None if records is None else records * len(configs)
    return {"configs": configs, "records": records, "input_note": input_note, "edits": edits,
            "models": models, "pools": plan_pools(run), "flops_per_record": flops_per_record,
            "hours_per_record": hours_per_record,
            "gpu_hours": None if records is None else hours_per_record * records, "gpu_tflops": gpu_tflops}


def describe(cfg: RunConfig, p: dict[str, Any], source: str = "") -> str:
    """The dry run's printout."""
    configs = p["configs"]
    policies = Counter(c.label for c in configs)
    sizes = sorted({(c.height, c.width) for c in configs})
    records = "?" if p["records"] is None else str(p["records"])
    lines = [f"dry run{' of ' + source if source else ''}: nothing loaded, Ray not started",
             f"input: {cfg.input.uri} (format {cfg.input.format}): {p['input_note']}",
             f"grid: {records} records x {len(configs)} configurations = {len(cfg.models)} model(s) x "
             f"{len(policies)} policy settings x {len(sizes)} size(s) x {len(cfg.seeds)} seed(s)"]
    for m in p["models"]:
        lines.append(f"  model {m['model']} ({m['name']}): {m['configurations']} configurations")
        for (h, w, steps, guidance), cost in m["costs"].items():
            lines.append(f"    {w}x{h}, {steps} steps, guidance {guidance}: costed as {cost.architecture}, "
                         f"{cost.tokens} image + {cost.tokens} source tokens, text {list(cost.text)}, "
                         f"{cost.calls_per_step} call(s)/step -> {cost.flops / 1e15:.2f} PFLOP per edit at keep 1")
    lines.append("  configurations: " + "; ".join(policies))
    for i, wave in enumerate(p["pools"]):
        at_once = "at once" if len(wave) > 1 else "alone"
        pools = ", ".join(f"{q.name} on {q.actors.min_size}-{q.actors.max_size} actor(s)"
                          + (f" asking for {q.resources}" if q.resources else "")
                          + f" ({q.work_share:.0%} of the work)" for q in wave)
        lines.append(f"pools{f' (turn {i + 1})' if len(p['pools']) > 1 else ''}, {at_once}: {pools}")
    edits = "unknown (records unknown)" if p["edits"] is None else f"{p['edits']}"
    lines.append(f"edits: {edits} ({len(configs)} per record)")
    per_record = f"{p['hours_per_record']:.3g} GPU-h per record"
    total = "unknown" if p["gpu_hours"] is None else f"{p['gpu_hours']:.3g} GPU-h"
    lines.append(f"estimated GPU time at {p['gpu_tflops']:g} TFLOP/s sustained (assumption; --gpu-tflops): "
                 f"{total} ({per_record})")
    lines.append("  upper bound: every edit costed at full context (keep 1); pruning lowers it, and the VAE, "
                 "text encoder and metrics are not counted")
    return "\n".join(lines)


def dry_run(run: ExpandedRun, records: int | None = None, gpu_tflops: float = DEFAULT_GPU_TFLOPS,
            source: str = "") -> tuple[str, dict[str, Any]]:
    p = plan(run, records, gpu_tflops)
    return describe(run.config, p, source), p


__all__: Sequence[str] = ("dry_run", "plan")
