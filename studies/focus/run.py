"""The focus study: every configuration of `studies.focus.grid` on the demo records and held-out toy records,
one row per (configuration, record) appended to OUT/rows.jsonl as each configuration finishes (a rerun resumes),
then the page (`studies.focus.doc`).

    python -m studies.focus.run [--out docs/focus-study] [--heldout 40] [--threads 1] [--no-run]

The first `--paired` records (the demo's) also run an uncached `full` edit back to back with each configuration
(alternating which goes first), for the CPU-time ratio.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Iterable

from studies.cache.grid import append_rows, read_rows, unavailable

from . import grid as study
from .measure import load_lpips, measure
from .records import study_records

MODEL, STEPS, SIZE = "toy-flux-kontext-v2", 28, 256


def done(rows: list[dict], model: str, records: Iterable[str]) -> set[str]:
    want, seen = set(records), {}
    for r in rows:
        if r.get("model") == model:
            seen.setdefault(r["config"], set()).add(r["record"])
    return {c for c, got in seen.items() if want <= got}


def run(out: Path, records: list, configs: Iterable[str], model: str = MODEL, steps: int = STEPS,
        threads: int = 1, paired: int = 5, log: Callable[[str], None] = print) -> list[str]:
    """Run every configuration without rows for all `records`; returns those run."""
    path = out / "rows.jsonl"
    finished = done(read_rows(path), model, [r.id for r in records])
    todo = [c for c in configs if c not in finished and unavailable(c) is None]
    if not todo:
        return []
    import torch

    import actors

    torch.set_num_threads(threads)
    pipe = actors.load_pipeline(model, device="cpu")
    lpips, why = load_lpips()
    for i, config in enumerate(todo, 1):
        t0 = time.perf_counter()
        try:
            rows = [{"model": model, "steps": steps, "threads": threads, "load1": os.getloadavg()[0],
                     "lpips_status": why,
                     **measure(pipe, config, rec, steps, lpips, paired=k < paired, config_first=k % 2 == 1)}
                    for k, rec in enumerate(records)]
        except ValueError as err:   # a policy or cache this model cannot run (said so, the rest goes on)
            log(f"[{i}/{len(todo)}] {config}: refused: {err}")
            continue
        append_rows(path, rows)
        log(f"[{i}/{len(todo)}] {config}: {time.perf_counter() - t0:.0f} s")
    return todo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs") / "focus-study")
    p.add_argument("--work", type=Path, default=Path("results") / "focus-study",
                   help="where the held-out records are written (not committed)")
    p.add_argument("--heldout", type=int, default=40)
    p.add_argument("--paired", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", action="append", default=None, help="run only these (default: the whole grid)")
    p.add_argument("--model", default=MODEL, help=f"{MODEL} (the study), or tiny-qwen-image-edit (the Qwen family "
                   "on random weights: fidelity and FLOP shares only), written to its own page")
    p.add_argument("--no-run", action="store_true", help="only regenerate the page from the rows")
    args = p.parse_args(argv)
    out, doc = args.out, Path("docs") / "focus-study.md"
    if args.model != MODEL:
        out, doc = args.out / args.model, Path("docs") / f"focus-study-{args.model}.md"
    if not args.no_run:
        records = study_records(args.work, args.heldout, SIZE)
        ran = run(out, records, args.config or study.grid(), model=args.model, threads=args.threads,
                  paired=args.paired, log=lambda m: print(m, flush=True))
        print(f"ran {len(ran)} configuration(s)", flush=True)
    from .page import write

    write(out, args.model, doc=doc, readme=Path("README.md") if args.model == MODEL else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
