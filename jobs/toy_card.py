"""`python -m jobs.toy_card`: evaluate the trained toy model on the held-out split, write its model card.

The held-out split is `toy.data` seed 1; every record is edited with the `full` policy and scored against its
exact target (`toy/card.py` says how). Writes `MODEL_CARD.md`, `loss.png` and `eval.json` into the model folder.
"""
from __future__ import annotations

import argparse
import json
import sys

from toy.card import DEFAULT_MODEL, HELD_OUT_SEED


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="the trained model folder (with loss.json)")
    p.add_argument("--n", type=int, default=80, help="held-out records (categories cycle)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out data seed")
    p.add_argument("--steps", type=int, default=28, help="sampling steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--reuse-eval", action="store_true",
                   help="take the rows of an eval.json with the same n, seed and steps instead of editing again")
    p.add_argument("--note", default="", help="a paragraph on how the run went (e.g. restarts), put under Training")


def run(args: argparse.Namespace) -> int:
    from toy.card import make_card

    print(json.dumps(make_card(args.model, n=args.n, seed=args.seed, steps=args.steps, threads=args.threads,
                               reuse_eval=args.reuse_eval, note=args.note)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.toy_card", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
