"""`python -m studies.toy.order_probe --n 12 --out F.json`: does the toy read word order? Each held-out recolor
record ("make the blue diamond orange") is edited twice, with its instruction and with its two colour words
swapped ("make the orange diamond blue", which names an object the image lacks and the other colour). A model
that reads the instruction gives two different pictures; one that sees the words as a set (FLUX gives every
text token one RoPE position, so only the encoder can carry order) gives the same picture twice. Reported per
record and on average: PSNR between the two edits inside the edit mask (high = order ignored), and each edit's
PSNR against the exact target there. Our editor, `full`, seed 0, as the model card samples."""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import numpy as np


def swap_colours(instruction: str) -> str:
    """The first and last colour words of `instruction` exchanged (a recolor's object colour and new colour)."""
    from toy.data import COLORS

    pattern = re.compile(r"\b(" + "|".join(COLORS) + r")\b")
    words = pattern.findall(instruction)
    if len(words) < 2 or words[0] == words[-1]:
        raise ValueError(f"{instruction!r} does not name two colours")
    a, b = words[0], words[-1]
    return pattern.sub(lambda m: {a: b, b: a}.get(m.group(1), m.group(1)), instruction)


def recolor_records(n: int, size: int, seed: int) -> list[Any]:
    """The first `n` recolor records of the held-out seed."""
    from toy.data import make_record

    out, i = [], 0
    while len(out) < n:
        rec = make_record(seed, i, size)
        i += 1
        if rec.category == "recolor":
            out.append(rec)
    return out


def probe(pipe: Any, n: int, steps: int = 28) -> dict[str, Any]:
    """Per record and on average: PSNR between the instruction's and the swapped instruction's edit inside the
    mask, and each one's edit PSNR against the exact target (dB)."""
    from PIL import Image

    import policies
    from actors import Editor
    from metrics.pixel import psnr
    from toy.card import HELD_OUT_SEED

    size = int(pipe.vae.config.sample_size)
    editor = Editor(pipe, policies.make("full"))
    rows = []
    for rec in recolor_records(n, size, HELD_OUT_SEED):
        swapped = swap_colours(rec.instruction)
        edits = [np.asarray(editor.edit(Image.fromarray(rec.source), text, seed=0, steps=steps, height=size,
                                        width=size).image) for text in (rec.instruction, swapped)]
        rows.append({"id": rec.id, "instruction": rec.instruction, "swapped": swapped,
                     "psnr_between": round(psnr(edits[0], edits[1], rec.mask), 2),
                     "psnr_edit": round(psnr(edits[0], rec.target, rec.mask), 2),
                     "psnr_edit_swapped": round(psnr(edits[1], rec.target, rec.mask), 2)})
    mean = {k: round(float(np.mean([r[k] for r in rows])), 2)
            for k in ("psnr_between", "psnr_edit", "psnr_edit_swapped")}
    return {"records": rows, "mean": mean}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.toy.order_probe", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy-flux-kontext-v2")
    p.add_argument("--path", default=None, help="a saved folder of that model (a pilot's --save, a run's output)")
    p.add_argument("--checkpoint", default=None, help="a jobs.train checkpoint folder of a run from --model")
    p.add_argument("--text-order", type=float, default=None, help="with --checkpoint: the run's `text_order`")
    p.add_argument("--n", type=int, default=12, help="held-out recolor records")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import torch

    import actors

    from studies.toy.probe_output import write_probe

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        from studies.toy.score_checkpoint import load_checkpoint

        pipe = load_checkpoint(args.checkpoint, args.model, text_order=args.text_order)[0]
    else:
        pipe = actors.load_pipeline(args.model, path=args.path, device="cpu", dtype=torch.float32)
    result = write_probe(args.out, {"model": args.model, "path": args.path, "checkpoint": args.checkpoint,
                                    "n": args.n}, lambda: probe(pipe, args.n))
    print(json.dumps(result["mean"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
