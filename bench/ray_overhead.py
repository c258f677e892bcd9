"""Pipeline overhead: edits per second through the Ray Data graph against a bare `Editor` loop, same records.

Both sides read the records with the pipeline's own readers and use the same named model, policy (`full`),
size and steps. The Ray side writes what a real run writes (PNG, mask overlay, Parquet) but computes no
metrics. Steady state on both sides is taken from the finishing times of the edits after the first one, so
that Ray's start-up, the actor's model load and the first edit's warm-up are reported apart from it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core.resources import resource

DEMO_MANIFEST = resource("configs", "demo_manifest.jsonl")


def demo_records(count: int, folder: Path) -> str:
    """`count` records cycling over the shipped demo images (distinct ids), as a local manifest."""
    demo = [json.loads(line) for line in DEMO_MANIFEST.read_text().splitlines() if line.strip()]
    out = folder / "bench_manifest.jsonl"
    with out.open("w") as f:
        for i in range(count):
            rec = {k: v for k, v in demo[i % len(demo)].items() if k not in ("mask", "target")}
            rec["id"] = f"{rec['id']}-{i}"
            rec["image"] = str((DEMO_MANIFEST.parent / rec["image"]).resolve())
            f.write(json.dumps(rec) + "\n")
    return str(out)


def steady_rate(finished: list[float]) -> float | None:
    """Edits per second between the first and the last finishing time (the first edit's warm-up left out)."""
    finished = sorted(finished)
    if len(finished) < 2 or finished[-1] <= finished[0]:
        return None
    return (len(finished) - 1) / (finished[-1] - finished[0])


def bare_loop(input_uri: str, model: str, size: int, steps: int) -> dict[str, Any]:
    """The same records through `Editor` in one process: reading, editing, nothing written."""
    import torch

    import actors
    import policies
    from pipeline.sources import read_records, record_image

    records = read_records(input_uri)
    t0 = time.perf_counter()
    pipe = actors.load_pipeline(model)
    load = time.perf_counter() - t0
    finished, start = [], time.perf_counter()
    for rec in records:
        actors.Editor(pipe, policies.make("full")).edit(record_image(rec), rec["instruction"], seed=0,
                                                        steps=steps, height=size, width=size)
        finished.append(time.perf_counter())
    loop = finished[-1] - start
    return {"edits": len(records), "load_s": load, "loop_s": loop, "edits_per_s": len(records) / loop,
            "edits_per_s_with_load": len(records) / (load + loop), "steady_edits_per_s": steady_rate(finished),
            "device": str(pipe.device), "torch_threads": torch.get_num_threads()}


def ray_run(input_uri: str, model: str, size: int, steps: int, num_cpus: float, num_gpus: float,
            output: str) -> dict[str, Any]:
    """The same records through `run_ablation` with one actor; Ray must be initialised by the caller."""
    from pipeline.config import parse_config
    from pipeline.config import expand_run
    from pipeline.graph import run_ablation

    cfg = parse_config({
        "input": input_uri, "output": output, "models": [{"name": model}], "policies": [{"name": "full"}],
        "resolutions": [size], "seeds": [0], "steps": steps, "metrics": {"compute": []},
        "actors": {"num_gpus": num_gpus, "num_cpus": num_cpus, "min_size": 1, "max_size": 1, "batch_size": 1}})
    t0 = time.perf_counter()
    summary = run_ablation(expand_run(cfg))
    wall = time.perf_counter() - t0
    rows = pq.read_table(os.path.join(output, "results")).to_pylist() if "://" not in output else []
    ok = [r for r in rows if r["status"] == "ok"]
    return {"edits": summary["edited"], "ok": len(ok), "run_s": wall,
            "edits_per_s": summary["edited"] / wall if wall > 0 else None,
            "steady_edits_per_s": steady_rate([r["finished_at"].timestamp() for r in ok]),
            "actor_num_cpus": num_cpus, "actor_num_gpus": num_gpus,
            "errors": sorted({r["error"] for r in rows if r["status"] != "ok"})}


def pipeline_overhead(records: int, model: str, size: int, steps: int, num_cpus: float, num_gpus: float = 0,
                      input_uri: str | None = None, output: str | None = None,
                      bare_on_ray: bool = False) -> dict[str, Any]:
    """Bare loop first (as a Ray task with the actor's resources when `bare_on_ray`), then the Ray graph."""
    import ray

    from pipeline.ray_session import init_ray

    with tempfile.TemporaryDirectory(prefix="dropedit-bench-") as tmp:
        uri = input_uri or demo_records(records, Path(tmp))
        if bare_on_ray:
            init_ray()
            task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(bare_loop)
            bare = ray.get(task.remote(uri, model, size, steps))
        else:
            bare = bare_loop(uri, model, size, steps)
        started_here = not ray.is_initialized()
        t0 = time.perf_counter()
        init_ray()
        init = time.perf_counter() - t0 if started_here else None
        try:
            ray_side = ray_run(uri, model, size, steps, num_cpus, num_gpus, output or os.path.join(tmp, "out"))
        finally:
            if started_here:
                ray.shutdown()   # we started it: leave the machine as we found it
    ray_side["ray_init_s"] = init
    ratio = {}
    if ray_side["edits_per_s"]:
        ratio["end_to_end"] = ray_side["edits_per_s"] / bare["edits_per_s_with_load"]
    if ray_side["steady_edits_per_s"] and bare["steady_edits_per_s"]:
        ratio["steady"] = ray_side["steady_edits_per_s"] / bare["steady_edits_per_s"]
    return {"model": model, "size": size, "steps": steps, "records": bare["edits"], "input": input_uri or "demo",
            "bare": bare, "ray": ray_side, "ratio": ratio}
