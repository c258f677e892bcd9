"""`python -m studies.toy.score_checkpoint CHECKPOINT --out F.json`: score a toy run's checkpoint mid-run, as
the recipe pilots and the model card score a model (held-out seed 1, `full`, edit PSNR over the no-op inside the
mask, background gap to the VAE ceiling), so that a long background run (`configs/train_toy_v3_cpu.yaml`)
reports its progress before it ends.

CHECKPOINT is a Ray Train checkpoint folder of `jobs.train` (its `state.pt`: the run state, the transformer's
weights, the toy's VAE); the pipeline's other parts (text encoders, tokenizers, scheduler) come from `--model`,
the model the run started from (`init_from`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def load_checkpoint(folder: str, model: str, prediction: str = "velocity",
                    text_order: float | None = None) -> tuple[Any, dict[str, Any]]:
    """(the pipeline with the checkpoint's transformer and VAE, the run state's step and last log row);
    `prediction` and `text_order`: the run config's (a checkpoint holds the transformer's and the VAE's weights,
    not what they predict nor how the frozen T5 was set, `toy.text_order`)."""
    import torch

    import actors

    saved = torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=False)
    pipe = actors.load_pipeline(model, device="cpu", dtype=torch.float32)
    pipe.transformer.load_state_dict(saved["weights"])
    from actors.reference_residual import apply_prediction

    apply_prediction(pipe.transformer, prediction)
    if saved.get("vae") is not None:
        pipe.vae.load_state_dict(saved["vae"])
    if text_order:
        from toy.text_order import order_text_encoder

        order_text_encoder(pipe.text_encoder_2, text_order)
    log = saved.get("log") or []
    return pipe, {"step": saved.get("step"), "phase": saved.get("phase"), "last_log": log[-1] if log else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.toy.score_checkpoint", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a jobs.train checkpoint folder (with state.pt)")
    p.add_argument("--model", default="toy-flux-kontext-v2", help="the model the run started from")
    p.add_argument("--n", type=int, default=80, help="held-out records")
    p.add_argument("--steps", type=int, default=28, help="sampling steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prediction", choices=("velocity", "reference_residual", "residual_flow"), default="velocity",
                   help="what the run's transformer predicts (its config's `prediction`)")
    p.add_argument("--text-order", type=float, default=None, help="the run config's `text_order` (its T5's bias)")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args(argv)
    import torch

    from studies.toy.recipe_pilot import score

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    pipe, state = load_checkpoint(args.checkpoint, args.model, args.prediction, args.text_order)
    started = time.perf_counter()
    result = {"checkpoint": os.path.abspath(args.checkpoint), "model": args.model, **state,
              **score(pipe, args.n, args.steps), "load_avg_1m": [round(load, 1), round(os.getloadavg()[0], 1)]}
    result["score_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: result[k] for k in ("step", "bars", "score_s")}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
