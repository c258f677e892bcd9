"""`python -m simulation.calibrate docs/scaling`: fit the discrete-event model's overheads
(`simulation.event_model.Overheads`, wall seconds) on the `dropedit simulate` runs of a folder, print its error
on each run it saw, and extrapolate. The model's numbers are PREDICTIONS; the runs' are measurements (on the
machine that ran them, with the SYNTHETIC model's service times)."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from pipeline.pools import QUEUE_PER_GPU
from simulation.event_model import QUEUE, Overheads, Prediction, Scenario, predict

SEEDS = 8
BOUNDS = (2.0, 20.0, 200.0)   # upper bounds of dispatch_s, gap_s, fixed_s (wall seconds): far above what was seen


def scenario_of(run: dict) -> Scenario:
    """The event model's scenario of one `dropedit simulate` JSON line (which records its edit times)."""
    return Scenario(gpus=run["gpus"], records=run["records"], edit_s=tuple(run["edit_s"]), load_s=run["load_s"],
                    noise=run.get("noise", 0.15), scale=run["scale"], split_parts=run.get("split_parts") or 1,
                    split_records=run.get("split_records"), gpus_per_actor=run.get("gpus_per_actor") or 1,
                    queue=run.get("queue_per_gpu") or QUEUE,   # runs before queue_per_gpu was recorded: Ray's 2
                    pairing=run.get("pairing") or "rerun")     # runs before read back: re-run


def load_runs(folder: Path, pattern: str = "pie_*gpu_1024*.json") -> dict[str, dict]:
    """name -> JSON line of each run the model can read (with `edit_s`, no faults injected)."""
    runs = {}
    for path in sorted(folder.glob(pattern)):
        run = json.loads(path.read_text().strip().splitlines()[-1])
        if "edit_s" in run and not run.get("actor_kills") and not run.get("node_kills") \
                and not run.get("write_fault_rate"):
            runs[path.stem] = run
    return runs


def loss(overheads: Overheads, scenarios: Sequence[Scenario], measured: Sequence[float],
         seeds: int = SEEDS) -> float:
    """Mean squared log error of the makespans."""
    errs = [math.log(predict(replace(s, overheads=overheads), seeds).makespan_s / m)
            for s, m in zip(scenarios, measured)]
    return sum(e * e for e in errs) / len(errs)


def pattern_search(f: Callable[[list[float]], float], start: list[float], bounds: Sequence[float],
                   steps: int = 60) -> list[float]:
    """Hooke-Jeeves-like search on [0, bound] per coordinate: try +/- a step on each, halve it when none helps."""
    x, best = list(start), f(start)
    step = [max(v, b / 256) / 2 for v, b in zip(x, bounds)]
    for _ in range(steps):
        improved = False
        for i in range(len(x)):
            for sign in (1, -1):
                trial = list(x)
                trial[i] = min(max(trial[i] + sign * step[i], 0.0), bounds[i])
                if trial != x and (value := f(trial)) < best:
                    x, best, improved = trial, value, True
                    break
        if not improved:
            step = [s / 2 for s in step]
            if max(s / b for s, b in zip(step, bounds)) < 1e-4:
                break
    return x


def grid_start(f: Callable[[list[float]], float], bounds: Sequence[float], points: int = 5) -> list[float]:
    """The best point of a coarse grid (0 and log-spaced fractions of each bound): the loss has plateaus and
    steps (units are discrete), so a local search alone can stop far from the fit."""
    axes = [[0.0] + [b * 4.0 ** -(points - 2 - i) for i in range(points - 1)] for b in bounds]
    grid = [[a, b, c] for a in axes[0] for b in axes[1] for c in axes[2]]
    return min(grid, key=f)


def unsplit(runs: dict[str, dict]) -> dict[str, dict]:
    """The runs the model is fitted on: one unit per record, one GPU per actor process. The split runs and those
    with several logical GPUs per process (128, 256 GPUs) are held out, to test its predictions."""
    return {name: r for name, r in runs.items()
            if (r.get("split_parts") or 1) == 1 and (r.get("gpus_per_actor") or 1) == 1}


def after_load_of(run: dict) -> tuple[float, float]:
    """A run's busy and makespan / ideal over the window after its model load (runs made before these keys
    existed: from their makespan, ideal and load, 60 s then)."""
    window = run["makespan_s"] - run.get("load_s", 60.0)
    return run["ideal_makespan_s"] / window, window / run["ideal_makespan_s"]


def fit(runs: dict[str, dict], seeds: int = SEEDS) -> Overheads:
    """The overheads that make the model's makespans closest to the runs' (in log terms)."""
    scenarios = [scenario_of(r) for r in runs.values()]
    measured = [r["makespan_s"] for r in runs.values()]

    def f(x: list[float]) -> float:
        return loss(Overheads(*x), scenarios, measured, seeds)

    return Overheads(*pattern_search(f, grid_start(f, BOUNDS), BOUNDS))


def errors(runs: dict[str, dict], overheads: Overheads, seeds: int = SEEDS) -> list[dict]:
    """Per run: measured and predicted busy and makespan / ideal, and the makespan's relative error."""
    out = []
    for name, run in runs.items():
        p = predict(replace(scenario_of(run), overheads=overheads), seeds)
        floor = predict(scenario_of(run), seeds)   # the scheduling alone, no streaming overheads
        busy_after, over_after = after_load_of(run)
        out.append({"run": name, "gpus": run["gpus"], "units": run["units"], "split": run.get("split_parts") or 1,
                    "gpus_per_actor": run.get("gpus_per_actor") or 1, "fitted": name in unsplit({name: run}),
                    "measured_busy": run["gpu_busy"],
                    "model_busy": round(p.gpu_busy, 4),
                    "measured_busy_after_load": round(busy_after, 4),
                    "model_busy_after_load": round(p.gpu_busy_after_load, 4),
                    "measured_after_load_over_ideal": round(over_after, 3),
                    "model_after_load_over_ideal": round(p.makespan_after_load_over_ideal, 3),
                    "measured_makespan_over_ideal": round(run["makespan_s"] / run["ideal_makespan_s"], 3),
                    "model_makespan_over_ideal": round(p.makespan_over_ideal, 3),
                    "makespan_error": round(p.makespan_s / run["makespan_s"] - 1, 4),
                    "scheduling_only_error": round(floor.makespan_s / run["makespan_s"] - 1, 4)})
    return out


def here_scale(base: Scenario, gpus: int, target_wall_s: float = 300.0) -> float:
    """The scale `dropedit simulate` would pick for `gpus` (its default: the ideal makespan takes ~300 s)."""
    work = base.records * sum(base.edit_s)
    return target_wall_s / (work / gpus + base.load_s)


def extrapolate(base: Scenario, overheads: Overheads, gpus: Sequence[int], splits: Sequence[int],
                tail_only: bool, scale_one: bool, seeds: int = SEEDS, pairing: str = "rerun") -> list[Prediction]:
    """Predictions of `base` on other pool sizes and unit splits: the last `gpus` records split (tail_only,
    one round of the pool, as `pipeline.unit_plan` splits) or every record; at scale 1 (overheads as real
    seconds) or at the scale the simulator would use here; split parts re-running `full` or reading it back."""
    out = []
    for n in gpus:
        for k in splits:
            s = replace(base, gpus=n, overheads=overheads, split_parts=k, split_records=n if tail_only else None,
                        scale=1.0 if scale_one else here_scale(base, n), queue=QUEUE_PER_GPU,   # the graph's
                        pairing=pairing)
            out.append(predict(s, seeds))
    return out


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "docs/scaling")
    runs = load_runs(folder)
    if not runs:
        print(f"no calibration runs (pie_*gpu_1024*.json with edit_s) in {folder}", file=sys.stderr)
        return 2
    overheads = fit(unsplit(runs))
    print(json.dumps({"overheads_wall_s": overheads.as_list(), "errors": errors(runs, overheads)}))
    base = scenario_of(next(iter(runs.values())))
    for p in extrapolate(base, overheads, [512, 1024], [1], tail_only=False, scale_one=True):
        print(f"MODEL PREDICTION, {p.gpus} GPUs at scale 1: busy {p.gpu_busy:.3f}, "
              f"makespan {p.makespan_over_ideal:.3f} x ideal; after the {p.load_s:g} s load: busy "
              f"{p.gpu_busy_after_load:.3f}, {p.makespan_after_load_over_ideal:.3f} x ideal")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
