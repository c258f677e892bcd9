"""`dropedit calibrate`: ToPi's representative layers (Eq. 4-5) from full-context edits of a calibration set.

Writes every layer's context sensitivity S(ℓ) (mean over records and steps of Σ_heads Σ_noisy queries
Σ_source keys A) and the top-M layers as JSON, tagged with the transformer's class, depth and config
hash; the `topi` policy refuses a file made for another config. `--workers N` runs the edits on a Ray
Data actor pool (as ablations do); without it they run in this process.
"""
from __future__ import annotations

import argparse
import json
import sys

from .edit import _size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name, e.g. tiny-flux-kontext, flux-kontext")
    p.add_argument("--model-path", default=None, help="checkpoint folder (local or s3://)")
    p.add_argument("--input", required=True, help="manifest / benchmark file of calibration records")
    p.add_argument("--format", default="auto", help="input format: auto, manifest, pie, gedit, imgedit")
    p.add_argument("--out", required=True, help="calibration JSON to write (local or s3://)")
    p.add_argument("--top-m", type=int, default=3, help="representative layers to keep (Eq. 5)")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default=None, metavar="WxH", help="edit size; default: the model's own")
    p.add_argument("--limit", type=int, default=None, help="use the first N records only")
    p.add_argument("--workers", type=int, default=0, help="Ray actors; 0 = edit in this process")


def run(args: argparse.Namespace) -> int:
    from pipeline.calibration_run import calibrate

    height, width = _size(args.size)
    doc = calibrate(args.model, args.input, args.out, top_m=args.top_m, steps=args.steps, seed=args.seed,
                    height=height, width=width, model_path=args.model_path, fmt=args.format, limit=args.limit,
                    workers=args.workers)
    print(json.dumps({"out": args.out, "layers": doc["layers"], "samples": doc["samples"],
                      "errors": len(doc["errors"]), "architecture": doc["architecture"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.calibrate", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
