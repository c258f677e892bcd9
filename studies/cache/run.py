"""The study of issue 19: temporal caches alone, pruning policies alone, every cache composed with the pruning
policies, and the peers (cache-dit with and without TaylorSeer; RegionE where it can run), on the toy model's
demo records, each configuration measured like `studies.cache.compare` measures it (whose functions run the edits).

    python -m studies.cache.run [--out docs/cache-study] [--steps 28] [--records N] [--threads 1]

Resumable: each configuration's per-record rows are appended to OUT/rows.jsonl when the configuration finishes,
and a rerun skips the configurations already there (same model and steps). Then the table (OUT/table.md,
OUT/table.csv), the Pareto plot (OUT/pareto.png), docs/cache-study.md and README.md's section between the
`cache-study` markers are regenerated from every row in the file (`--no-run` only regenerates them).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import PIL.Image

from costs import flops, real
from costs.ideal_speedup import project
from costs.roofline import STATIC_CONTEXT_POLICIES, roofline_speedup
from core.resources import resource
from studies.cache import compare as caches
from studies.cache.grid import (
    PROJECTED_NOISY,
    append_rows,
    family,
    grid,
    pending,
    read_rows,
)

CONFIGS = resource("configs")
# ---- measuring ---------------------------------------------------------------------------------------------------
class Record:
    """One demo record: its source, target, mask (PNG files) and its uncached `full` edit (computed once)."""

    def __init__(self, spec: dict[str, Any], base: Path = CONFIGS) -> None:
        from pipeline.images import mask_from_image

        def load(name: str) -> np.ndarray:
            return np.asarray(PIL.Image.open(base / spec[name]).convert("RGB"), np.float64) / 255

        self.spec, self.id, self.base = spec, spec["id"], base
        self.source, self.target = load("image"), load("target")
        self.mask = mask_from_image(PIL.Image.open(base / spec["mask"])) if spec.get("mask") else None
        self.full_pixels: np.ndarray | None = None


def background_mse(pixels: np.ndarray, record: Record) -> float | None:
    """Mean squared error of the edit's background against the source (PIE-Bench: the mask-zeroed images);
    None where the record has no mask or its mask covers the whole image."""
    if record.mask is None or record.mask.all():
        return None
    from metrics.pixel import background_metrics

    return float(background_metrics(pixels, record.source, record.mask)["mse_bg"])


def measure(pipe: Any, config: str, record: Record, steps: int, config_first: bool = False) -> dict[str, Any]:
    """One configuration on one record. Ours: paired with an uncached `full` edit of the same record run back to
    back with it on the same thread, before it or (`config_first`) after it; a peer: with the pipeline's own call
    without it, run before it (inside `caches.run_config`). Wall and process CPU time both."""
    reference = None
    if family(config) != "peer" and not config_first:
        reference = caches.run_config(pipe, "full|", record.spec, steps)
    r = caches.run_config(pipe, config, record.spec, steps)
    if family(config) != "peer" and config_first:
        reference = caches.run_config(pipe, "full|", record.spec, steps)
    if record.full_pixels is None:
        record.full_pixels = (reference or caches.run_config(pipe, "full|", record.spec, steps))["pixels"]
    wall = r["reference_seconds"] if reference is None else reference["seconds"]
    cpu = r["reference_cpu_seconds"] if reference is None else reference["cpu_seconds"]
    kontext = real("FLUX.1-Kontext-dev")
    arch, text = kontext.arch, kontext.text()
    values = caches.record_values(r, record.full_pixels, record.target, wall, arch, text)
    projected, cached = project(r["trace"], PROJECTED_NOISY), r.get("source_cached", False)
    values["flop_1024"] = flops.predicted_speedup(arch, projected, text, cached)
    # the same projection on the H100 roofline (bytes moved too); statistics and cache bookkeeping not in a trace
    static = config.split("|")[0].split(":")[0] in STATIC_CONTEXT_POLICIES
    values["roofline_1024"] = roofline_speedup(arch, projected, text, cached, blend=not static)
    return {"config": config, "record": record.id, "category": record.spec.get("category"),
            "mse_bg": background_mse(r["pixels"], record), "seconds": r["seconds"], "reference_seconds": wall,
            "cpu_seconds": r["cpu_seconds"], "reference_cpu_seconds": cpu, "cpu_speedup": cpu / r["cpu_seconds"],
            "config_first": config_first and reference is not None, **values}


def run(out: Path, model: str = "toy-flux-kontext-v2", steps: int = 28, records: int | None = None,
        configs: Iterable[str] | None = None, threads: int = 1,
        log: Callable[[str], None] | None = None) -> list[str]:
    """Run every pending configuration, appending its rows to OUT/rows.jsonl as it finishes; returns the
    configurations run (none when everything is there)."""
    specs = [json.loads(line) for line in (CONFIGS / "demo_manifest.jsonl").read_text().splitlines()
             if line.strip()][:records]
    path = out / "rows.jsonl"
    todo = pending(configs or grid(), read_rows(path), model, steps, [s["id"] for s in specs])
    if not todo:
        return []
    log = log or (lambda message: print(message, flush=True))
    import torch

    import actors

    torch.set_num_threads(threads)   # paired timings on a shared CPU: one thread each
    pipe = actors.load_pipeline(model, device="cpu")
    recs = [Record(s) for s in specs]
    for i, config in enumerate(todo, 1):
        t0 = time.perf_counter()
        # the pair's order alternates over the records, so that an order effect cancels in the median
        rows = [{"model": model, "steps": steps, "threads": threads,
                 "load1": os.getloadavg()[0], **measure(pipe, config, rec, steps, config_first=k % 2 == 1)}
                for k, rec in enumerate(recs)]
        append_rows(path, rows)
        log(f"[{i}/{len(todo)}] {config}: {time.perf_counter() - t0:.0f} s")
    return todo


def main(argv: list[str] | None = None) -> int:
    from studies.cache import doc as cache_study_doc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs") / "cache-study")
    p.add_argument("--model", default="toy-flux-kontext-v2")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--records", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", action="append", default=None, help="run only these (default: the whole grid)")
    p.add_argument("--no-run", action="store_true", help="only regenerate the table, plot and docs from the rows")
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if not args.no_run:
        ran = run(args.out, args.model, args.steps, args.records, args.config, args.threads)
        print(f"ran {len(ran)} configuration(s) in {time.perf_counter() - t0:.0f} s")
    cache_study_doc.write(args.out, args.model, args.steps, readme=args.readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
