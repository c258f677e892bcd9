"""The `dropedit bench` arguments of one `bench/gpu.sh` run: a model family at one size, every registered policy
as it decides and every mechanism forced (bench/forced.py), on the real transformer config (actors/families/*/architecture.py) or,
with --smoke, on a tiny one. `python -m bench.gpu_args flux 2048 OUT [--smoke]` prints them, one per line."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from actors.families.flux_kontext.architecture import FLUX_KONTEXT_DEV_CONFIG as FLUX_KONTEXT_DEV
from actors.families.qwen_image_edit.architecture import QWEN_IMAGE_EDIT_CONFIG as QWEN_IMAGE_EDIT

REAL = {"flux": FLUX_KONTEXT_DEV, "qwen": QWEN_IMAGE_EDIT}
EXEMPT = 10   # ToPi's default exempt layers on the real models: the forced Mode B routes from the same layer
STEPS, REPS = 3, 1   # ~7 min of H100 time for the four runs (estimate from the FLOP model: bench/gpu.sh)
SMOKE_STEPS, SMOKE_REPS = 2, 1


def model_args(config: dict[str, Any], family: str) -> list[str]:
    """Depth and width of a real transformer config as `--layers/--single-layers/--heads/--head-dim`."""
    return ["--model", family, "--layers", str(config["num_layers"]),
            "--single-layers", str(config.get("num_single_layers", 0)),
            "--heads", str(config["num_attention_heads"]), "--head-dim", str(config["attention_head_dim"])]


def policy_labels(from_layer: int) -> list[str]:
    """Every registered policy with its defaults, then the forced plans at the papers' operating points."""
    forced = ["forced-gather:keep=0.5", f"forced-topi:keep=0.5,from_layer={from_layer}",
              f"forced-topi:keep=0.5,from_layer={from_layer},interval=3",
              "forced-spotedit:active=0.5", "forced-spotedit:active=0.2,selector=true"]
    return ["registered", *forced]


def bench_args(family: str, size: int, out: str, smoke: bool) -> list[str]:
    if family not in REAL:
        raise ValueError(f"family must be one of {', '.join(REAL)}, got {family!r}")
    if smoke:   # the tiny benchmark model, 2 layers: routing from layer 1
        model = ["--model", family, "--layers", "1", "--single-layers", "1", "--heads", "2", "--head-dim", "16"]
        model += ["--threads", "1"]   # the smoke runs go side by side
        from_layer, steps, reps = 1, SMOKE_STEPS, SMOKE_REPS
    else:
        model, from_layer, steps, reps = model_args(REAL[family], family), EXEMPT, STEPS, REPS
    labels = [a for label in policy_labels(from_layer) for a in ("--policy", label)]
    return ["bench", *model, "--sizes", str(size), "--steps", str(steps), "--reps", str(reps), *labels,
            "--no-pipeline", "--out", out]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_args", description=__doc__)
    p.add_argument("family", choices=sorted(REAL))
    p.add_argument("size", type=int)
    p.add_argument("out")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    print("\n".join(bench_args(a.family, a.size, a.out, a.smoke)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
