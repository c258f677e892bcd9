"""`dropedit edit`: one edit from the command line, with a progress bar and one JSON line of results."""
from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from .assignments import parse_assignments


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name, e.g. tiny-flux-kontext, flux-kontext")
    p.add_argument("--model-path", default=None, help="local folder of a diffusers checkpoint")
    p.add_argument("--policy", default="full", help="full | random | tokendrop")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="policy parameter, e.g. --set omega=0.4 (repeatable)")
    p.add_argument("--image", required=True)
    p.add_argument("--reference", action="append", default=[], help="extra reference image (Qwen Edit-Plus)")
    p.add_argument("--instruction", required=True)
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--size", default=None, metavar="WxH", help="output size; default: the model's own")


def _size(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 1024x768, got {text!r}") from None
    return h, w


def run(args: argparse.Namespace) -> int:
    import actors
    import policies

    height, width = _size(args.size)
    policy = policies.make(args.policy, **parse_assignments(args.assignments))
    pipe = actors.load_pipeline(args.model, path=args.model_path)
    editor = actors.Editor(pipe, policy)
    with tqdm(total=args.steps, desc=f"{args.model}/{args.policy}", unit="step", file=sys.stderr) as bar:
        result = editor.edit(args.image, args.instruction, seed=args.seed, steps=args.steps,
                             guidance_scale=args.guidance_scale, height=height, width=width,
                             references=args.reference, on_step=lambda _: bar.update())
    result.image.save(args.out)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps({
        "out": args.out, "model": args.model, "policy": args.policy, "params": policy.params(),
        "width": result.width, "height": result.height, "steps": len(result.trace),
        "runtime_s": round(result.seconds, 4), "keep_ratio_mean": round(result.keep_ratio_mean, 4),
        "device": str(pipe.device), "notes": result.notes,
    }))
    return 0
