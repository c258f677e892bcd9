"""The run driver's peak memory against the number of records (README "Scaling"): each measurement is a fresh
Python process whose peak RSS (`resource.getrusage`, ru_maxrss) is what it reports.

- `run N`: `dropedit run`'s driver path (config, grid, unit plan, the Ray Data graph, the accounting) on N
  synthetic records x 1 configuration, with an actor that edits nothing (`InstantActor`: the real frame,
  `pipeline.unit_stage.UnitActor`, with an instant edit), on a local Ray cluster. The CPU stages, writes and
  Parquet are the real ones.
- `plan N`: the driver-side work that grows with the records, without editing: the records counted on the
  workers (the automatic unit split's count), the unit plan, the dataset built, then the accounting of N
  result rows (`pipeline.graph.written_counts` over synthetic result files of 10,000 rows each, written by a
  child process, as a run's write tasks would) and the resume's view of them (`pipeline.graph.done_pairs`).

`python -m bench.driver_memory run 1000 10000 plan 1000 1000000` prints one JSON line per measurement."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Mapping

from pipeline.records import utcnow
from pipeline.unit_stage import UnitActor, UnitEdit

FILE_ROWS = 10_000   # synthetic result rows per Parquet file in `plan`


def _manifest(folder: str, records: int) -> str:
    """`records` edit requests sharing one 32x32 image."""
    import io

    import PIL.Image

    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    PIL.Image.new("RGB", (32, 32), (90, 120, 200)).save(buf, format="PNG")
    with open(os.path.join(folder, "source.png"), "wb") as f:
        f.write(buf.getvalue())
    path = os.path.join(folder, "manifest.jsonl")
    with open(path, "w") as f:
        for i in range(records):
            f.write(json.dumps({"id": f"sim-{i:07d}", "image": "source.png", "instruction": "edit"}) + "\n")
    return path


def _config(folder: str, records: int) -> Any:
    from pipeline.config import parse_config

    return parse_config({"input": _manifest(os.path.join(folder, "in"), records), "output": os.path.join(folder, "out"),
                         "models": [{"name": "flux-kontext"}], "policies": ["full"], "resolutions": [1024],
                         "steps": 28, "metrics": {"compute": []},
                         "actors": {"num_gpus": 0, "num_cpus": 0.5, "min_size": 2, "max_size": 2, "batch_size": 1}})


class InstantActor(UnitActor):
    """The real unit frame with an edit that does nothing: the source is the edit, 0 s."""

    def edit(self, config: Any, inputs: dict[str, Any], unit: Mapping[str, Any], budget: Any) -> UnitEdit:
        row = self.ok_row(config, unit, utcnow())
        row.update(runtime_s=0.0, loop_s=0.0)
        return UnitEdit(config, row, emit=True, image=inputs["source"])


def _factory(configs: Any, cfg: Any, run_id: str) -> tuple[type, dict[str, Any]]:
    return InstantActor, dict(configs={c.config_id: c.to_row() for c in configs}, run_id=run_id)


def measure_run(records: int, folder: str, cpus: int = 4) -> dict[str, Any]:
    import ray

    from pipeline.config import expand_run
    from pipeline.graph import run_ablation

    ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    started = time.time()
    summary = run_ablation(expand_run(_config(folder, records)), factory=_factory)
    return {"mode": "run", "records": records, "rows_ok": summary["ok"], "wall_s": round(time.time() - started, 1)}


def write_results(out: str, rows: int, prefix: str) -> None:
    """Synthetic result files: `rows` ok rows of one configuration, FILE_ROWS per file, named with `prefix`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out, exist_ok=True)
    for start in range(0, rows, FILE_ROWS):
        n = min(FILE_ROWS, rows - start)
        pq.write_table(pa.table({"record_id": [f"sim-{i:07d}" for i in range(start, start + n)],
                                 "config_id": ["c0ffee000000"] * n, "status": ["ok"] * n,
                                 "pairing_rerun_s": pa.nulls(n, pa.float64())}),
                       os.path.join(out, f"{prefix}_{start // FILE_ROWS:06d}.parquet"))


def measure_plan(records: int, folder: str, cpus: int = 4) -> dict[str, Any]:
    import ray

    from pipeline.config import expand_run
    from pipeline.graph import done_pairs, model_dataset, results_uri, unit_plans, written_counts
    from pipeline.pools import plan_pools

    ray.init(address="local", num_cpus=cpus, include_dashboard=False)
    run = expand_run(_config(folder, records))
    [[pool]] = plan_pools(run)
    plans = unit_plans(run, [pool])   # max_size 2 < records / 20 at 1k+: the records are counted on the workers
    model_dataset(run.config, pool, {}, "plan", _factory, plans[pool.name])   # built, not run
    prefix = "run-measured"
    subprocess.run([sys.executable, "-c", f"from bench.driver_memory import write_results; "
                    f"write_results({results_uri(run.config)!r}, {records}, {prefix!r})"], check=True)
    counts = written_counts(run.config, prefix)
    done = done_pairs(run.config)
    return {"mode": "plan", "records": records, "counted": plans[pool.name].records, "rows_counted": counts["ok"],
            "done_pairs": done.count}


def current_rss_mb() -> float:
    """This process's resident set now (/proc/self/statm), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssTimeline:
    """The driver's RSS every `every` seconds on a thread, kept to `points` evenly spaced samples: whether it
    grows with the units streamed or levels off."""

    def __init__(self, every: float = 2.0, points: int = 12) -> None:
        self.every, self.points, self.samples = every, points, []
        self.started = time.time()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.samples.append((round(time.time() - self.started), round(current_rss_mb(), 1)))
            time.sleep(self.every)

    def summary(self) -> list[tuple[int, float]]:
        step = max(1, len(self.samples) // self.points)
        return self.samples[::step] + self.samples[-1:]


def child(mode: str, records: int, cpus: int = 4) -> None:
    """One measurement, in this process: prints its JSON line with the process's peak RSS (and, for a run, its
    RSS over time: [seconds, MB] pairs)."""
    from core.malloc_arenas import limit_malloc_arenas

    limit_malloc_arenas()   # as `dropedit` does (jobs/cli.py)
    load = os.getloadavg()[0]
    timeline = RssTimeline()
    with tempfile.TemporaryDirectory(prefix="dropedit-driver-") as folder:
        result = (measure_run if mode == "run" else measure_plan)(records, folder, cpus)
    result["cluster_cpus"] = cpus
    result["rss_timeline_mb"] = timeline.summary()
    result["load_avg_1m"] = [round(load, 1), round(os.getloadavg()[0], 1)]   # the machine's, before and after
    result["driver_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["modules"] = sorted(m for m in ("torch", "diffusers") if m in sys.modules)
    print(json.dumps(result), flush=True)


def main(argv: list[str]) -> int:
    """`[--cpus C] run|plan N [N ...] [run|plan N ...]`: one fresh process per measurement, on a local cluster of
    C logical CPUs (4 by default)."""
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]), int(argv[3]))
        return 0
    cpus = "4"
    if argv[:1] == ["--cpus"]:
        cpus, argv = argv[1], argv[2:]
    mode = None
    for arg in argv:
        if arg in ("run", "plan"):
            mode = arg
            continue
        done = subprocess.run([sys.executable, "-m", "bench.driver_memory", "--child", str(mode), arg, cpus],
                              capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ""})
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        print(done.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
