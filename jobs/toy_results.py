"""`python -m jobs.toy_results`: the seeds' claims at toy scale, measured on the trained toy model.

One command behind `docs/toy-results.md`: writes the held-out split, fine-tunes the two Sparse Context copies,
runs `configs/toy_ablation.yaml` and `configs/toy_sparse_context.yaml` with `dropedit run`'s machinery, runs
the matched-budget random arms, scores every output against the exact targets and writes the doc with its
tables and plots (`toy/results.py` says what is checked). Re-running skips what is already done.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from toy.results import CONFIG, ROOT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=str(CONFIG), help="ablation grid (input/output/steps are set here)")
    p.add_argument("--out", default="results/toy", help="working folder: data, Parquet, images, report")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="where toy-results.md and its plots go")
    p.add_argument("--n", type=int, default=64, help="held-out records")
    p.add_argument("--steps", type=int, default=28, help="sampling steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads in this process and the fine-tunes")
    p.add_argument("--no-sparse-context", action="store_true",
                   help="skip the Sparse Context part (its two fine-tunes take ~30 min on one thread)")
    p.add_argument("--multiref-bench", default="results/bench_multiref/summary.md",
                   help="the multi-reference speed table (python -m jobs.bench --references) to quote")


def run(args: argparse.Namespace) -> int:
    from toy.results import run_study

    print(json.dumps(run_study(args.config, args.out, args.docs, n=args.n, steps=args.steps, threads=args.threads,
                               sparse_context=not args.no_sparse_context, multiref_bench=args.multiref_bench)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.toy_results", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sys.exit(main())
