"""`python -m jobs.make_toy_data --out DIR --n N --seed S`: write procedural edit records as a manifest.

DIR gets `manifest.jsonl` (id, image, instruction, mask, category, target; paths relative to DIR) and the
PNGs under `source/`, `target/`, `mask/`. Record i of seed S is always the same record (see
`toy.data`); the held-out split of the toy model is seed 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from toy.data import CATEGORIES, write_dataset


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, required=True, help="number of records (categories cycle)")
    p.add_argument("--seed", type=int, default=1, help="data set seed (training uses 0, the held-out split 1)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.size < 32 or args.size % 16:
        raise ValueError(f"--size must be a multiple of 16 and >= 32, got {args.size}")
    manifest = write_dataset(args.out, args.n, args.seed, args.size)
    counts = Counter(CATEGORIES[i % len(CATEGORIES)] for i in range(args.n))
    print(json.dumps({"manifest": str(manifest), "records": args.n, "seed": args.seed, "size": args.size,
                      "categories": dict(counts)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_toy_data", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as err:
        print(f"make_toy_data: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
