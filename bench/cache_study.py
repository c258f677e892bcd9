"""The study of issue 19: temporal caches alone, pruning policies alone, every cache composed with the pruning
policies, and the peers (cache-dit with and without TaylorSeer; RegionE where it can run), on the toy model's
demo records, each configuration measured like `bench.caches` measures it (whose functions run the edits).

    python -m bench.cache_study [--out docs/cache-study] [--steps 28] [--records N] [--threads 1]

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
from types import SimpleNamespace
from typing import Any, Callable, Iterable

import numpy as np
import PIL.Image

from costs import flops, real

from . import caches

ROOT = Path(__file__).resolve().parents[1]
CACHES = ("first-block:threshold=0.05", "first-block:threshold=0.12", "first-block:threshold=0.18",
          "first-block:threshold=0.2", "first-block:threshold=0.25",
          "magcache:threshold=0.06", "magcache:threshold=0.12", "magcache:threshold=0.25",
          "taylorseer:interval=3", "taylorseer:interval=5", "taylorseer:interval=8")
PROJECTED_NOISY = flops.image_tokens(1024)   # FLUX.1-Kontext-dev at 1024²: 64² noisy tokens (and as many source)
TOPI = "exempt_layers=1;top_m=2"   # the toy's 6 blocks: 1 exempt front block (the paper: 10 of 57)
POLICIES = ("tokendrop[omega=0]", "tokendrop[omega=0.4]", "random[ratio=0.25]", "random[ratio=0.5]",
            f"topi[tau=0.85;{TOPI}]", f"topi[tau=0.5;{TOPI}]", "spotedit[tau=0.2]", "spotedit[tau=0.5]")
PEERS = ("peer:cache-dit|", "peer:cache-dit[taylorseer=true]|", "peer:regione|")
# compositions: every cache at a middle setting, then at a faster one, with one setting of every policy
COMPOSE_CACHES = (("first-block:threshold=0.12", "magcache:threshold=0.25", "taylorseer:interval=3"),
                  ("first-block:threshold=0.25", "taylorseer:interval=5"))
COMPOSE_POLICIES = ("tokendrop[omega=0]", "random[ratio=0.5]", f"topi[tau=0.85;{TOPI}]", "spotedit[tau=0.2]")


def grid() -> tuple[str, ...]:
    """Every configuration of the study, in run order (the ones the verdicts need first)."""
    out = ["full|", *(f"full|{c}" for c in CACHES), *(f"{p}|" for p in POLICIES), *PEERS]
    for group in COMPOSE_CACHES:
        out += [f"{p}|{c}" for c in group for p in COMPOSE_POLICIES]
    return tuple(out)


def family(config: str) -> str:
    """full | cache | pruning | cache+pruning | peer."""
    what, _, cache = config.partition("|")
    if what.startswith("peer:"):
        return "peer"
    policy = what.partition("[")[0]
    if policy == "full":
        return "cache" if cache else "full"
    return "cache+pruning" if cache else "pruning"


def parts(config: str) -> tuple[str, str] | None:
    """A composition's two parts as configurations: (the policy alone, the cache alone); None otherwise."""
    if family(config) != "cache+pruning":
        return None
    what, _, cache = config.partition("|")
    return f"{what}|", f"full|{cache}"


def unavailable(config: str) -> str | None:
    """Why a peer cannot run on this machine (None when it can, and for our own configurations)."""
    what = config.partition("|")[0]
    if not what.startswith("peer:"):
        return None
    from actors import peers

    return peers.available().get(what[5:].partition("[")[0], "unknown peer")


# ---- resume ------------------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every per-record row written so far (a torn last line, from an interrupted write, is ignored)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def finished(rows: Iterable[dict[str, Any]], model: str, steps: int, records: Iterable[str]) -> set[str]:
    """Configurations with a row for every one of `records` at this model and step count."""
    want, seen = set(records), {}
    for r in rows:
        if r.get("model") == model and r.get("steps") == steps:
            seen.setdefault(r["config"], set()).add(r["record"])
    return {c for c, got in seen.items() if want <= got}


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """One configuration's rows, appended together and flushed to disk (a rerun then skips it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
        f.flush()


def pending(configs: Iterable[str], rows: list[dict[str, Any]], model: str, steps: int,
            records: Iterable[str]) -> list[str]:
    """The configurations still to run: not finished, and runnable here."""
    done = finished(rows, model, steps, list(records))
    return [c for c in configs if c not in done and unavailable(c) is None]


# ---- measuring ---------------------------------------------------------------------------------------------------
class Record:
    """One demo record: its source, target, mask (PNG files) and its uncached `full` edit (computed once)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from pipeline.images import mask_from_image

        def load(name: str) -> np.ndarray:
            return np.asarray(PIL.Image.open(ROOT / "configs" / spec[name]).convert("RGB"), np.float64) / 255

        self.spec, self.id = spec, spec["id"]
        self.source, self.target = load("image"), load("target")
        self.mask = mask_from_image(PIL.Image.open(ROOT / "configs" / spec["mask"])) if spec.get("mask") else None
        self.full_pixels: np.ndarray | None = None


def background_mse(pixels: np.ndarray, record: Record) -> float | None:
    """Mean squared error of the edit's background against the source (PIE-Bench: the mask-zeroed images);
    None where the record has no mask or its mask covers the whole image."""
    if record.mask is None or record.mask.all():
        return None
    from metrics.pixel import background_metrics

    return float(background_metrics(pixels, record.source, record.mask)["mse_bg"])


def scaled(trace: Iterable[Any], noisy: int = PROJECTED_NOISY) -> list[SimpleNamespace]:
    """The trace with every token count scaled to `noisy` noisy tokens (1024²: 4096), the same shares kept,
    computed and skipped: what the same plans would cost at the real model's resolution (a projection)."""
    out = []
    for s in trace:
        k = noisy / s.noisy

        def n(v: int | None) -> int | None:
            return None if v is None else round(v * k)

        out.append(SimpleNamespace(noisy=noisy, total=n(s.total), kept=n(s.kept), active=n(getattr(s, "active", None)),
                                   keys=n(getattr(s, "keys", None)), from_layer=getattr(s, "from_layer", 0),
                                   cache_calls=tuple(getattr(s, "cache_calls", ()))))
    return out


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
    values["flop_1024"] = flops.predicted_speedup(arch, scaled(r["trace"]), text, r.get("source_cached", False))
    return {"config": config, "record": record.id, "category": record.spec.get("category"),
            "mse_bg": background_mse(r["pixels"], record), "seconds": r["seconds"], "reference_seconds": wall,
            "cpu_seconds": r["cpu_seconds"], "reference_cpu_seconds": cpu, "cpu_speedup": cpu / r["cpu_seconds"],
            "config_first": config_first and reference is not None, **values}


def run(out: Path, model: str = "toy-flux-kontext-v2", steps: int = 28, records: int | None = None,
        configs: Iterable[str] | None = None, threads: int = 1,
        log: Callable[[str], None] | None = None) -> list[str]:
    """Run every pending configuration, appending its rows to OUT/rows.jsonl as it finishes; returns the
    configurations run (none when everything is there)."""
    specs = [json.loads(line) for line in (ROOT / "configs" / "demo_manifest.jsonl").read_text().splitlines()
             if line.strip()][:records]
    path = out / "rows.jsonl"
    todo = pending(configs or grid(), read_rows(path), model, steps, [s["id"] for s in specs])
    if not todo:
        return []
    log = log or (lambda message: print(message, flush=True))
    import actors
    import torch

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
    from . import cache_study_doc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "cache-study")
    p.add_argument("--model", default="toy-flux-kontext-v2")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--records", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", action="append", default=None, help="run only these (default: the whole grid)")
    p.add_argument("--no-run", action="store_true", help="only regenerate the table, plot and docs from the rows")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if not args.no_run:
        ran = run(args.out, args.model, args.steps, args.records, args.config, args.threads)
        print(f"ran {len(ran)} configuration(s) in {time.perf_counter() - t0:.0f} s")
    cache_study_doc.write(args.out, args.model, args.steps, readme=args.readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
