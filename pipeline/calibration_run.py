"""ToPi's calibration as one call: full-context edits of a calibration set (in this process or on a Ray Data
actor pool), every layer's context sensitivity averaged, the top-M layers written as JSON (`dropedit calibrate`
and the toy study call it)."""
from __future__ import annotations

import json
import sys
from typing import Any

from pipeline import storage as st
from pipeline.records import RECORD_FIELDS
from pipeline.sources import read_records


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


def calibrate(model: str, input_uri: str, out: str, *, top_m: int = 3, steps: int = 28, seed: int = 0,
              height: int | None = None, width: int | None = None, model_path: str | None = None,
              fmt: str = "auto", limit: int | None = None, workers: int = 0) -> dict[str, Any]:
    """Edit the records of `input_uri` with full context, write the calibration document to `out` (local or
    s3://) and return it. `workers` > 0 runs the edits on that many Ray actors at most."""
    if top_m < 1:
        raise ValueError(f"--top-m must be >= 1, got {top_m}")
    records = read_records(input_uri, fmt)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"no records in {input_uri}")
    actor_args = dict(model=model, model_path=model_path, steps=steps, seed=seed, height=height, width=width)
    rows, arch = _run_ray(actor_args, records, workers) if workers > 0 else _run_local(actor_args, records)
    from policies.calibration import calibration_document

    good = [r for r in rows if r["error"] is None]
    doc = calibration_document(mean_scores(rows), top_m, arch, samples=len(good), steps=steps, model=model)
    doc["errors"] = {r["id"]: r["error"] for r in rows if r["error"] is not None}
    st.write_bytes(out, (json.dumps(doc, indent=1) + "\n").encode())
    return doc
