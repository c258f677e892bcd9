"""A recipe pilot: continue a trained toy model for a few hundred steps with one option changed, then score it
on the held-out split per category (`python -m studies.toy.recipe_pilot --edit-weight 8 --steps 300`).

Cheap evidence for a choice in a long run's recipe (v2's model card quotes two of these): in-process, one
torch thread, fixed data (seed 0 records from index 5,000,000, unseen by v1) and a fixed noise stream per step,
so that two pilots differ only in the option.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA_START = 5_000_000   # record indices of seed 0 that v1's training never reached


def pilot(model: str, edit_weight: float, steps: int, size: int, lr: float = 2e-4, batch: int = 16,
          n_eval: int = 80, eval_steps: int = 28) -> dict[str, Any]:
    """Train `steps` more steps from the shipped `model` at `size`, evaluate `n_eval` held-out records."""
    import torch

    import actors
    from finetune.flow_matching import transformer_step
    from finetune.toy_source import batch_arrays, encode_batch
    from toy.card import by_category, evaluate
    from toy.model import T5_LENGTH

    pipe = actors.load_pipeline(model, device="cpu", dtype=torch.float32)
    pipe.vae.register_to_config(sample_size=size)
    optimizer = torch.optim.AdamW(pipe.transformer.parameters(), lr=lr, weight_decay=0.0)
    started, losses = time.perf_counter(), []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20)   # a short warm-up: the optimizer state is fresh
        src, tgt, text = batch_arrays(0, DATA_START + step * batch, batch, size)
        batch_ = encode_batch(pipe, src, tgt, text, T5_LENGTH)
        gen = torch.Generator().manual_seed(1000 + step)
        losses.append(transformer_step(pipe, optimizer, batch_, gen, edit_weight=edit_weight))
    train_s = time.perf_counter() - started
    rows = evaluate(pipe, n_eval, steps=eval_steps)
    table = by_category(rows, ["psnr_edit", "source_psnr_edit", "psnr_bg"])
    return {"model": model, "edit_weight": edit_weight, "steps": steps, "size": size, "lr": lr,
            "train_s": round(train_s, 1), "final_loss": float(np.mean(losses[-50:])), "table": table}


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m studies.toy.recipe_pilot", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy-flux-kontext")
    p.add_argument("--edit-weight", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = pilot(args.model, args.edit_weight, args.steps, args.size)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
