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
from typing import Any

from pipeline import storage as st
from pipeline.records import RECORD_FIELDS
from pipeline.sources import read_records

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


def mean_scores(rows: list[dict[str, Any]]) -> list[float]:
    good = [r["scores"] for r in rows if r["error"] is None]
    if not good:
        raise ValueError("no calibration record could be edited: "
                         + "; ".join(f"{r['id']}: {r['error']}" for r in rows[:5]))
    return [sum(col) / len(good) for col in zip(*good)]


def _run_local(actor_args: dict[str, Any], records: list[dict[str, Any]]) -> tuple[list[dict], dict]:
    from pipeline.calibration_stage import CalibrationActor

    actor = CalibrationActor(**actor_args)
    rows = []
    for i, rec in enumerate(records):
        rows.append(actor.row(rec))
        print(f"calibrate: {i + 1}/{len(records)} {rows[-1]['id']}"
              + (f" error: {rows[-1]['error']}" if rows[-1]["error"] else ""), file=sys.stderr)
    return rows, actor.architecture


def _run_ray(actor_args: dict[str, Any], records: list[dict[str, Any]], workers: int) -> tuple[list[dict], dict]:
    import ray

    from pipeline.calibration_stage import CalibrationActor

    from pipeline.ray_session import init_ray

    init_ray()
    items = [{k: rec.get(k) for k in RECORD_FIELDS} for rec in records]
    data = ray.data.from_items(items).map_batches(
        CalibrationActor, fn_constructor_kwargs=actor_args, batch_size=1, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers))
    rows = data.take_all()
    return rows, json.loads(rows[0]["architecture"])   # every actor loaded the same model


def run(args: argparse.Namespace) -> int:
    if args.top_m < 1:
        raise ValueError(f"--top-m must be >= 1, got {args.top_m}")
    height, width = _size(args.size)
    records = read_records(args.input, args.format)
    if args.limit is not None:
        records = records[: args.limit]
    if not records:
        raise ValueError(f"no records in {args.input}")
    actor_args = dict(model=args.model, model_path=args.model_path, steps=args.steps, seed=args.seed,
                      height=height, width=width)
    rows, arch = (_run_ray(actor_args, records, args.workers) if args.workers > 0
                  else _run_local(actor_args, records))
    from policies.calibration import calibration_document

    good = [r for r in rows if r["error"] is None]
    doc = calibration_document(mean_scores(rows), args.top_m, arch, samples=len(good), steps=args.steps,
                               model=args.model)
    doc["errors"] = {r["id"]: r["error"] for r in rows if r["error"] is not None}
    st.write_bytes(args.out, (json.dumps(doc, indent=1) + "\n").encode())
    print(json.dumps({"out": args.out, "layers": doc["layers"], "samples": doc["samples"],
                      "errors": len(doc["errors"]), "architecture": arch}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.calibrate", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
