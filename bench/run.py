"""The whole benchmark as one call: the speed measurement (here or as a Ray task), the pipeline overhead,
the real architectures' pricing, and `bench.json` + `bench.md` in the output folder."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any


def measure_speed(settings: dict[str, Any]) -> dict[str, Any]:
    """Build the benchmark model, time every policy, summarise. Runs here or inside a Ray task."""
    import policies
    from actors import default_device
    from actors.loading import default_dtype

    from costs import flops
    from costs.roofline import DEFAULT_DEVICE

    from . import markdown as report
    from .speed import build_bench_pipeline, measure, parse_policy, policy_specs
    from .summary import real_pricing, summarise

    if settings.get("threads"):
        import torch
        torch.set_num_threads(settings["threads"])
    info = report.machine()
    info["load_start"] = report.load_average()
    device = default_device()
    pipe = build_bench_pipeline(settings["model"], settings["layers"], settings["single_layers"],
                                settings["heads"], settings["head_dim"], device, default_dtype(device))
    specs = policy_specs(settings["policies"], policies.REGISTRY)
    if not any(s.label == "full" for s in specs):
        specs.insert(0, parse_policy("full"))   # the A side of every A/B pair
    measured = measure(pipe, specs, settings["sizes"], settings["steps"], settings["reps"], settings["seed"],
                       log=lambda m: print(m, file=sys.stderr, flush=True),
                       references=tuple(settings.get("references", (1,))))
    if "full" in measured["skipped"]:
        raise RuntimeError(f"the reference policy failed: {measured['skipped']['full']}")
    arch = flops.arch_of(pipe.transformer)
    info["load_end"] = report.load_average()   # where it ran (a worker, under `python -m jobs.bench`)
    rows = summarise(measured["edits"], arch, real_pricing(settings["model"]),
                     settings.get("device_model") or DEFAULT_DEVICE)
    return {"machine": info, "bench_arch": asdict(arch), "rows": rows,
            "skipped": measured["skipped"], "edits": measured["edits"]}


def multi_reference_pricing(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The FLOP-ideal single- vs multi-reference table for the real Edit-Plus: at the run's sizes and 1024²,
    for 1 and 3 references and the run's counts, with the run's Sparse Context budgets."""
    from .summary import EDIT_PLUS_DEFAULT_STEPS, analytic_multi_reference, sparse_context_budgets

    return analytic_multi_reference(
        sorted({*settings["sizes"], 1024}), sorted({*settings["references"], 1, 3}),
        sparse_context_budgets(settings["policies"]), sorted({settings["steps"], EDIT_PLUS_DEFAULT_STEPS}))


def _remote(fn: Any, num_gpus: float) -> Any:
    import ray
    return ray.remote(num_gpus=num_gpus, num_cpus=1)(fn)


def benchmark(settings: dict[str, Any], out: str | Path, num_gpus: float, pipeline: dict[str, Any] | None = None,
              on_ray: bool = False) -> dict[str, Any]:
    """Measure `settings` (model, layers, single_layers, heads, head_dim, policies, sizes, steps, reps, seed,
    threads, references) and, unless `pipeline` is None, the pipeline overhead with its options (records,
    model, size, steps, input); write `out/bench.json` and `out/bench.md`. `on_ray`: the measurements run as
    Ray tasks with `num_gpus`. Returns the result written to bench.json."""
    from . import markdown as report
    from bench.ray_overhead import pipeline_overhead
    from .summary import real_pricing

    started = time.perf_counter()
    if on_ray:
        import ray

        from pipeline.ray_session import init_ray
        init_ray()
        result = ray.get(_remote(measure_speed, num_gpus).remote(settings))
    else:
        result = measure_speed(settings)
    overhead = None
    if pipeline is not None:
        print("pipeline overhead: bare Editor loop, then Ray", file=sys.stderr, flush=True)
        overhead = pipeline_overhead(pipeline["records"], pipeline["model"], pipeline["size"], pipeline["steps"],
                                     num_cpus=_actor_cpus(num_gpus), num_gpus=num_gpus,
                                     input_uri=pipeline.get("input"), bare_on_ray=on_ray)
    if not on_ray:
        result["machine"]["load_end"] = report.load_average()   # after the pipeline part, same machine
    if settings["model"] == "qwen-plus":
        result["multi_reference"] = multi_reference_pricing(settings)
    result.update(settings=settings, pipeline=overhead, seconds=time.perf_counter() - started,
                  real_architectures={name: {"arch": asdict(arch), "text_tokens_per_call": {
                                          n: list(text(n)) for n in settings["references"]}}
                                      for name, (arch, text) in real_pricing(settings["model"]).items()})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=str))
    md = report.markdown(result)
    (out / "bench.md").write_text(md)
    print(md)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'} ({result['seconds']:.0f} s)", file=sys.stderr)
    return result


def _actor_cpus(num_gpus: float) -> float:
    """On CPU the actor gets as many CPUs as the bare loop has torch threads: Ray caps a worker's threads
    at its CPU count, and a 1-thread actor against a 2-thread loop would not be a pipeline overhead."""
    if num_gpus:
        return 1.0
    import torch
    return float(torch.get_num_threads())
