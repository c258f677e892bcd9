"""`python -m jobs.toy_results`: the seeds' claims at toy scale, measured on a trained toy model.

One command behind `docs/toy-results.md`, on `--model` (default `toy-flux-kontext-v2`, 256 px, 16x16 tokens;
`toy-flux-kontext` is v1, 128 px, 8x8): writes the held-out split at the model's size, makes ToPi's
calibration for the model when it has none, fine-tunes the two Sparse Context copies, runs
`configs/toy_ablation.yaml` and `configs/toy_sparse_context.yaml` (set for the model) with `dropedit run`'s
machinery, runs the matched-budget random arms, scores every output against the exact targets and writes the
doc with its tables, plots and picture grid (`studies/toy/run.py` says what is checked). Re-running skips what is
already done; each model works in its own folder (results/toy-v2, results/toy for v1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from studies.toy.config import CONFIG
from studies.toy.models import DEFAULT_MODEL


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="shipped toy model: toy-flux-kontext-v2 (256 px) or toy-flux-kontext (v1, 128 px)")
    p.add_argument("--size", type=int, default=None,
                   help="image side; default: the model's trained size (its dropedit.json)")
    p.add_argument("--config", default=str(CONFIG),
                   help="ablation grid (model, size, input, output, steps and ToPi's calibration are set here)")
    p.add_argument("--sparse-config", default=None, help="Sparse Context grid (default configs/toy_sparse_context.yaml)")
    p.add_argument("--calibration", default=None,
                   help="ToPi calibration file; default configs/calibration/MODEL.json, made when missing")
    p.add_argument("--out", default=None,
                   help="working folder: data, Parquet, images, report (default results/toy-v2; v1: results/toy)")
    p.add_argument("--docs", default="docs", help="where toy-results.md and its plots go")
    p.add_argument("--n", type=int, default=64, help="held-out records")
    p.add_argument("--steps", type=int, default=28, help="sampling steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads in this process and the fine-tunes")
    p.add_argument("--no-sparse-context", action="store_true",
                   help="skip the Sparse Context part (its two fine-tunes and its 3-model grid)")
    p.add_argument("--sparse-records", type=int, default=None,
                   help="run the Sparse Context grid (3 models x 15 settings) on the split's first N records "
                        "(a multiple of 8 keeps the categories balanced; default: all --n)")
    p.add_argument("--multiref-bench", default="results/bench_multiref/summary.md",
                   help="the multi-reference speed table (python -m jobs.bench --references) to quote")


def run(args: argparse.Namespace) -> int:
    from studies.toy.run import run_study

    print(json.dumps(run_study(args.config, args.out, args.docs, n=args.n, steps=args.steps, threads=args.threads,
                               sparse_context=not args.no_sparse_context, multiref_bench=args.multiref_bench,
                               model=args.model, size=args.size, calibration=args.calibration,
                               sparse_config=args.sparse_config, sparse_records=args.sparse_records)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.toy_results", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sys.exit(main())
