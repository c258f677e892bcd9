"""`dropedit bench` / `python -m jobs.bench`: each policy's speed against `full` and the FLOP ideal.

Measures every policy (all of `policies.REGISTRY` unless `--policy` is given) on a benchmark-size model of the
real diffusers classes at the token counts of 1024² and 2048² edits, prices the same traces on the real
FLUX.1-Kontext-dev and Qwen-Image-Edit configs (FLUX.2 [klein] 4B for `--model flux2`, klein 9B for
`--model flux2-kv`) by FLOPs and by the roofline on `--device-model` (costs.roofline; a prediction), and
measures the Ray pipeline's overhead against a bare `Editor` loop. With `--model qwen-plus --references 1,3` it
measures Sparse Context-style policies with one and with several reference images in the same run and prints
the real Edit-Plus's FLOP-ideal single- vs multi-reference table next to them (`flux2` and `flux2-kv` take
several references too). Writes bench.json and bench.md. As a `ray job submit` entrypoint (`python -m
jobs.bench`) the measurements run as Ray tasks on a worker with the requested GPUs."""
from __future__ import annotations

import argparse
import sys

from bench.families import FAMILIES, MIN_SIZE, MULTI_REFERENCE
from costs.roofline import DEFAULT_DEVICE, DEVICES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1024,2048", help="square edit sizes in pixels, comma-separated")
    p.add_argument("--steps", type=int, default=6, help="denoising steps per edit")
    p.add_argument("--reps", type=int, default=2, help="repetitions of every policy (A/B with full)")
    p.add_argument("--model", default="flux", choices=list(FAMILIES),
                   help="benchmark model family (qwen-plus: Qwen-Image-Edit-Plus, several reference images; "
                        "flux2: FLUX.2 [klein]; flux2-kv: FLUX.2 [klein] KV, the reference K/V reused after the "
                        "first call; both take several reference images)")
    p.add_argument("--references", default="1",
                   help="reference images per edit, comma-separated counts measured in the same run (e.g. 1,3). "
                        "Counts above 1 need --model qwen-plus, flux2 or flux2-kv: in this engine FLUX.1-Kontext "
                        "and Qwen-Image-Edit take one reference image (diffusers' Kontext pipeline has a single "
                        "image input). The first reference is the edited image, at the edit size; Edit-Plus and "
                        "FLUX.2 encode the others at ~1024² area at most (4096 tokens each for images of 1024² "
                        "and more), as diffusers does")
    p.add_argument("--layers", type=int, default=1,
                   help="dual-stream layers (Qwen: --layers + --single-layers, all dual-stream)")
    p.add_argument("--single-layers", type=int, default=1, help="single-stream layers (Flux only)")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--policy", dest="policies", action="append", default=[], metavar="NAME[:K=V,...]",
                   help="a policy variant, e.g. random:ratio=0.75, or a forced plan (bench/forced.py), e.g. "
                        "forced-spotedit:active=0.5; `registered` = every registered policy (repeatable; default: "
                        "every registered policy)")
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
    p.add_argument("--device-model", default=DEFAULT_DEVICE, choices=list(DEVICES),
                   help="the GPU every row's roofline_speedup is predicted for (costs.roofline: published peaks; a "
                        "prediction, not a measurement)")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs of the benchmark task and pipeline actor (default: 1 if CUDA is here, else 0)")


def _sizes(text: str, model: str = "flux") -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 16 or s % 16 for s in sizes):
        raise ValueError(f"--sizes must be multiples of 16, got {text!r}")
    if min(sizes) < MIN_SIZE.get(model, 16):
        raise ValueError(f"--sizes {text}: --model {model} takes images of {MIN_SIZE[model]} px a side or more")
    return sizes


def _references(text: str, model: str) -> tuple[int, ...]:
    try:
        counts = tuple(dict.fromkeys(int(v) for v in text.split(",") if v.strip()))
    except ValueError:
        raise ValueError(f"--references must be comma-separated integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"--references must be counts >= 1, got {text!r}")
    if max(counts) > 1 and model not in MULTI_REFERENCE:
        raise ValueError(f"--references {text} needs --model {', '.join(MULTI_REFERENCE)}; {model} takes one "
                         "reference image in this engine")
    return counts


def run(args: argparse.Namespace, on_ray: bool = False) -> int:
    import torch

    from bench.run import benchmark

    for name in ("steps", "reps", "pipeline_records", "pipeline_steps", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    num_gpus = args.num_gpus if args.num_gpus is not None else (1.0 if torch.cuda.is_available() else 0.0)
    settings = {"model": args.model, "layers": args.layers, "single_layers": args.single_layers,
                "heads": args.heads, "head_dim": args.head_dim, "policies": args.policies,
                "sizes": _sizes(args.sizes, args.model), "steps": args.steps, "reps": args.reps, "seed": args.seed,
                "threads": args.threads, "references": list(_references(args.references, args.model)),
                "device_model": args.device_model}
    pipeline = None if args.no_pipeline else {"records": args.pipeline_records, "model": args.pipeline_model,
                                              "size": args.pipeline_size, "steps": args.pipeline_steps,
                                              "input": args.pipeline_input}
    benchmark(settings, args.out, num_gpus, pipeline, on_ray=on_ray)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv), on_ray=True)


if __name__ == "__main__":
    sys.exit(main())
