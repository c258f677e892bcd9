"""`dropedit bench` / `python -m jobs.bench`: each policy's speed against `full` and the FLOP ideal.

Measures every policy (all of `policies.REGISTRY` unless `--policy` is given) on a benchmark-size model of the
real diffusers classes at the token counts of 1024² and 2048² edits, prices the same traces on the real
FLUX.1-Kontext-dev and Qwen-Image-Edit configs, and measures the Ray pipeline's overhead against a bare
`Editor` loop. With `--model qwen-plus --references 1,3` it measures Sparse Context-style policies with one and
with several reference images in the same run and prints the real Edit-Plus's FLOP-ideal single- vs
multi-reference table next to them. Writes bench.json and bench.md. As a `ray job submit` entrypoint (`python -m jobs.bench`) the
measurements run as Ray tasks on a worker with the requested GPUs."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1024,2048", help="square edit sizes in pixels, comma-separated")
    p.add_argument("--steps", type=int, default=6, help="denoising steps per edit")
    p.add_argument("--reps", type=int, default=2, help="repetitions of every policy (A/B with full)")
    p.add_argument("--model", default="flux", choices=["flux", "qwen", "qwen-plus"],
                   help="benchmark model family (qwen-plus: Qwen-Image-Edit-Plus, several reference images)")
    p.add_argument("--references", default="1",
                   help="reference images per edit, comma-separated counts measured in the same run (e.g. 1,3). "
                        "Counts above 1 need --model qwen-plus: in this engine FLUX.1-Kontext and Qwen-Image-Edit "
                        "take one reference image (diffusers' Kontext pipeline has a single image input). The "
                        "first reference is the edited image, at the edit size; Edit-Plus encodes the others at "
                        "~1024² area (4096 tokens each) whatever --sizes says, as diffusers does")
    p.add_argument("--layers", type=int, default=1,
                   help="dual-stream layers (Qwen: --layers + --single-layers, all dual-stream)")
    p.add_argument("--single-layers", type=int, default=1, help="single-stream layers (Flux only)")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--policy", dest="policies", action="append", default=[], metavar="NAME[:K=V,...]",
                   help="a policy variant, e.g. random:ratio=0.75 (repeatable; default: every registered policy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/bench", help="folder for bench.json and bench.md")
    p.add_argument("--no-pipeline", action="store_true", help="skip the Ray pipeline overhead measurement")
    p.add_argument("--pipeline-records", type=int, default=6)
    p.add_argument("--pipeline-size", type=int, default=256)
    p.add_argument("--pipeline-steps", type=int, default=4)
    p.add_argument("--pipeline-model", default="tiny-flux-kontext", help="a named model (actors.MODELS)")
    p.add_argument("--pipeline-input", default=None,
                   help="records for the pipeline measurement (manifest, local or s3://); default: demo images")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for the speed measurement (default: torch's own); on an "
                        "oversubscribed CPU, 1 avoids threads spin-waiting on each other")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs of the benchmark task and pipeline actor (default: 1 if CUDA is here, else 0)")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 16 or s % 16 for s in sizes):
        raise ValueError(f"--sizes must be multiples of 16, got {text!r}")
    return sizes


def _references(text: str, model: str) -> tuple[int, ...]:
    try:
        counts = tuple(dict.fromkeys(int(v) for v in text.split(",") if v.strip()))
    except ValueError:
        raise ValueError(f"--references must be comma-separated integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"--references must be counts >= 1, got {text!r}")
    if max(counts) > 1 and model != "qwen-plus":
        raise ValueError(f"--references {text} needs --model qwen-plus (Qwen-Image-Edit-Plus); {model} takes one "
                         "reference image in this engine")
    return counts


def measure_speed(settings: dict[str, Any]) -> dict[str, Any]:
    """Build the benchmark model, time every policy, summarise. Runs here or inside a Ray task."""
    import policies
    from actors import default_device, flops
    from actors.loading import default_dtype

    from . import bench_report
    from .bench_speed import build_bench_pipeline, default_policies, measure, parse_policy
    from .bench_summary import real_pricing, summarise

    if settings.get("threads"):
        import torch
        torch.set_num_threads(settings["threads"])
    info = bench_report.machine()
    info["load_start"] = bench_report.load_average()
    device = default_device()
    pipe = build_bench_pipeline(settings["model"], settings["layers"], settings["single_layers"],
                                settings["heads"], settings["head_dim"], device, default_dtype(device))
    specs = [parse_policy(p) for p in settings["policies"]] or default_policies(policies.REGISTRY)
    if not any(s.label == "full" for s in specs):
        specs.insert(0, parse_policy("full"))   # the A side of every A/B pair
    measured = measure(pipe, specs, settings["sizes"], settings["steps"], settings["reps"], settings["seed"],
                       log=lambda m: print(m, file=sys.stderr, flush=True),
                       references=tuple(settings.get("references", (1,))))
    if "full" in measured["skipped"]:
        raise RuntimeError(f"the reference policy failed: {measured['skipped']['full']}")
    arch = flops.arch_of(pipe.transformer)
    info["load_end"] = bench_report.load_average()   # where it ran (a worker, under `python -m jobs.bench`)
    rows = summarise(measured["edits"], arch, real_pricing(settings["model"]))
    return {"machine": info, "bench_arch": asdict(arch), "rows": rows,
            "skipped": measured["skipped"], "edits": measured["edits"]}


def multi_reference_pricing(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The FLOP-ideal single- vs multi-reference table for the real Edit-Plus: at the run's sizes and 1024²,
    for 1 and 3 references and the run's counts, with the run's Sparse Context budgets."""
    from .bench_summary import EDIT_PLUS_DEFAULT_STEPS, analytic_multi_reference, sparse_context_budgets

    return analytic_multi_reference(
        sorted({*settings["sizes"], 1024}), sorted({*settings["references"], 1, 3}),
        sparse_context_budgets(settings["policies"]), sorted({settings["steps"], EDIT_PLUS_DEFAULT_STEPS}))


def _remote(fn: Any, num_gpus: float) -> Any:
    import ray
    return ray.remote(num_gpus=num_gpus, num_cpus=1)(fn)


def run(args: argparse.Namespace, on_ray: bool = False) -> int:
    import torch

    from . import bench_report
    from .bench_pipeline import pipeline_overhead
    from .bench_summary import real_pricing

    for name in ("steps", "reps", "pipeline_records", "pipeline_steps", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    num_gpus = args.num_gpus if args.num_gpus is not None else (1.0 if torch.cuda.is_available() else 0.0)
    settings = {"model": args.model, "layers": args.layers, "single_layers": args.single_layers,
                "heads": args.heads, "head_dim": args.head_dim, "policies": args.policies,
                "sizes": _sizes(args.sizes), "steps": args.steps, "reps": args.reps, "seed": args.seed,
                "threads": args.threads, "references": list(_references(args.references, args.model))}
    started = time.perf_counter()
    if on_ray:
        import ray

        from .ablate import init_ray
        init_ray()
        result = ray.get(_remote(measure_speed, num_gpus).remote(settings))
    else:
        result = measure_speed(settings)
    pipeline = None
    if not args.no_pipeline:
        print("pipeline overhead: bare Editor loop, then Ray", file=sys.stderr, flush=True)
        pipeline = pipeline_overhead(args.pipeline_records, args.pipeline_model, args.pipeline_size,
                                     args.pipeline_steps, num_cpus=_actor_cpus(num_gpus), num_gpus=num_gpus,
                                     input_uri=args.pipeline_input, bare_on_ray=on_ray)
    if not on_ray:
        result["machine"]["load_end"] = bench_report.load_average()   # after the pipeline part, same machine
    if args.model == "qwen-plus":
        result["multi_reference"] = multi_reference_pricing(settings)
    result.update(settings=settings, pipeline=pipeline, seconds=time.perf_counter() - started,
                  real_architectures={name: {"arch": asdict(arch), "text_tokens_per_call": {
                                          n: list(text(n)) for n in settings["references"]}}
                                      for name, (arch, text) in real_pricing(args.model).items()})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=str))
    md = bench_report.markdown(result)
    (out / "bench.md").write_text(md)
    print(md)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'} ({result['seconds']:.0f} s)", file=sys.stderr)
    return 0


def _actor_cpus(num_gpus: float) -> float:
    """On CPU the actor gets as many CPUs as the bare loop has torch threads: Ray caps a worker's threads
    at its CPU count, and a 1-thread actor against a 2-thread loop would not be a pipeline overhead."""
    if num_gpus:
        return 1.0
    import torch
    return float(torch.get_num_threads())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv), on_ray=True)


if __name__ == "__main__":
    sys.exit(main())
