"""The `dropedit bench` arguments of one `bench/gpu.sh` run: a model family at one size, every registered policy
as it decides and every mechanism forced (bench/forced.py), on the real transformer config (actors/families/*/architecture.py) or,
with --smoke, on a tiny one. `python -m bench.gpu_args flux 2048 OUT [--smoke]` prints them, one per line."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from actors.families.flux2.architecture import FLUX2_KLEIN_4B_CONFIG, FLUX2_KLEIN_9B_CONFIG
from actors.families.flux_kontext.architecture import FLUX_KONTEXT_DEV_CONFIG as FLUX_KONTEXT_DEV
from actors.families.qwen_image_edit.architecture import QWEN_IMAGE_EDIT_CONFIG as QWEN_IMAGE_EDIT

# flux2: FLUX.2 [klein] 4B; flux2-kv: FLUX.2 [klein] KV at 9B, the size its checkpoint was released at
REAL = {"flux": FLUX_KONTEXT_DEV, "qwen": QWEN_IMAGE_EDIT, "flux2": FLUX2_KLEIN_4B_CONFIG,
        "flux2-kv": FLUX2_KLEIN_9B_CONFIG}
FLUX2 = ("flux2", "flux2-kv")
REFERENCES = {"flux2": 2, "flux2-kv": 2}   # FLUX.2 takes several reference images: the edited one and one more
EXEMPT = 10   # ToPi's default exempt layers on the real models: the forced Mode B routes from the same layer
STEPS, REPS = 3, 1   # ≤ 12 min of H100 time for the seven runs (estimate from the FLOP model: bench/gpu.sh)
SMOKE_STEPS, SMOKE_REPS = 2, 1
# FLUX.2 has no paper setting for TokenDrop or Sparse Context (they refuse it without parameters): the
# settings the FLOP table of docs/benchmark.md prices (bench/flux2_table.py), shares of the 4 distilled steps
FLUX2_VARIANTS = ("tokendrop:omega=0.2,full_steps=25%", "sparse_context:strategy=saliency,keep=0.25,warmup_steps=25%")


def model_args(config: dict[str, Any], family: str) -> list[str]:
    """Depth and width of a real transformer config as `--layers/--single-layers/--heads/--head-dim`."""
    return ["--model", family, "--layers", str(config["num_layers"]),
            "--single-layers", str(config.get("num_single_layers", 0)),
            "--heads", str(config["num_attention_heads"]), "--head-dim", str(config["attention_head_dim"])]


def policy_labels(from_layer: int, family: str = "flux") -> list[str]:
    """Every registered policy with its defaults, then the forced plans at the papers' operating points. FLUX.2
    refuses ToPi's layer routing and SpotEdit's query skip (its family's `unsupported`): of the forced plans only
    the gather applies, and its own settings of TokenDrop and Sparse Context join."""
    if family in FLUX2:
        return ["registered", "forced-gather:keep=0.5", *FLUX2_VARIANTS]
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
    labels = [a for label in policy_labels(from_layer, family) for a in ("--policy", label)]
    refs = ["--references", str(REFERENCES[family])] if family in REFERENCES else []
    return ["bench", *model, "--sizes", str(size), *refs, "--steps", str(steps), "--reps", str(reps), *labels,
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
