"""`python -m simulation.scaling_doc docs/scaling`: docs/scaling/README.md from the `dropedit simulate` runs of
the folder (measured: a Ray run each, on the machine that made them, SYNTHETIC service times) and the
discrete-event model fitted on them (`simulation.calibrate`: PREDICTIONS, labelled so)."""
from __future__ import annotations

import sys
from pathlib import Path

from simulation.calibrate import errors, extrapolate, fit, load_runs, scenario_of, unsplit
from simulation.event_model import Overheads, Prediction, Scenario
from simulation.scaling_table import table

GPUS = (128, 256, 512, 1024)
SPLITS = (1, 2, 3, 4)
SETTINGS = (   # (title, overheads from the fit?, scale 1?, pairing, splits)
    ("scheduling only: no streaming overheads, the floor a real cluster approaches", False, True, "rerun", SPLITS),
    ("the fitted overheads as real seconds (scale 1): this overloaded 2-core machine's overheads on a "
     "cluster, pessimistic", True, True, "rerun", SPLITS),
    ("as `dropedit simulate` would run here: the fitted overheads at the simulator's scale (the ideal "
     "makespan in ~300 s of this machine), comparable with the measured rows", True, False, "rerun", SPLITS),
    ("scheduling only, split parts reading `full` back (`units.pairing: read_back`: no re-run; the waits "
     "for a reference are not modelled)", False, True, "read_back", (1, 2, 4, 8)))


def _fit_table(rows: list[dict]) -> list[str]:
    lines = ["| run | gpus | GPUs per actor | split k | units | fitted on it | gpu_busy measured | gpu_busy model | "
             "busy after load measured | busy after load model | makespan / ideal measured | "
             "makespan / ideal model | makespan error | error, scheduling only |", "|---" * 14 + "|"]
    for e in rows:
        seen = "yes" if e["fitted"] else "no (held out)"
        lines.append(f"| {e['run']} | {e['gpus']} | {e['gpus_per_actor']} | {e['split']} | {e['units']} | {seen} "
                     f"| {e['measured_busy']:.4f} | {e['model_busy']:.4f} "
                     f"| {e['measured_busy_after_load']:.4f} | {e['model_busy_after_load']:.4f} "
                     f"| {e['measured_makespan_over_ideal']:.3f} | {e['model_makespan_over_ideal']:.3f} "
                     f"| {100 * e['makespan_error']:+.1f} % | {100 * e['scheduling_only_error']:+.1f} % |")
    return lines


def _cells(p: Prediction) -> str:
    work = p.ideal_makespan_s * p.gpus - p.extra_gpu_s_for_pairing
    return (f"{p.units} | {p.gpu_busy:.3f} | {p.gpu_busy_after_load:.3f} | {p.makespan_over_ideal:.3f} "
            f"| {p.extra_gpu_s_for_pairing:,.0f} ({100 * p.extra_gpu_s_for_pairing / work:.1f} %)")


def _prediction_table(base: Scenario, overheads: Overheads, scale_one: bool, pairing: str = "rerun",
                      splits: tuple[int, ...] = SPLITS) -> list[str]:
    """Rows (gpus, k): every record split into k units, and the last N records only (as pipeline/unit_plan.py
    splits: one round of an N-GPU pool)."""
    every = extrapolate(base, overheads, GPUS, splits, tail_only=False, scale_one=scale_one, pairing=pairing)
    tail = extrapolate(base, overheads, GPUS, splits, tail_only=True, scale_one=scale_one, pairing=pairing)
    cells = "units | busy | busy after load | makespan / ideal | extra pairing GPU-s"
    lines = [f"| gpus | k | all split: {cells} | last N split: {cells} |", "|---" * 12 + "|"]
    for i, (a, b) in enumerate(zip(every, tail)):
        lines.append(f"| {a.gpus} | {splits[i % len(splits)]} | {_cells(a)} | {_cells(b)} |")
    return lines


def _extrapolations(base: Scenario, overheads: Overheads) -> list[str]:
    out = []
    for title, fitted, scale_one, pairing, splits in SETTINGS:
        out += ["", f"### MODEL PREDICTION, {title}", ""]
        out += _prediction_table(base, overheads if fitted else Overheads(), scale_one, pairing, splits)
    return out


REALISTIC_LOAD_S = (20.0, 30.0)   # an estimate (see _load_notes), not a measurement


def _load_notes(base: Scenario) -> list[str]:
    """What the simulated model load alone costs the goal's figures, and what a realistic load would be."""
    rows = ["| gpus | ideal makespan (model, s) | busy cap, 60 s load | " + " | ".join(
        f"busy cap, {x:g} s load" for x in REALISTIC_LOAD_S) + " |", "|---" * (3 + len(REALISTIC_LOAD_S)) + "|"]
    for p in extrapolate(base, Overheads(), GPUS, [1], tail_only=False, scale_one=True):
        caps = [p.ideal_makespan_s / (p.ideal_makespan_s + x) for x in (base.load_s, *REALISTIC_LOAD_S)]
        rows.append(f"| {p.gpus} | {p.ideal_makespan_s:.0f} | " + " | ".join(f"{c:.3f}" for c in caps) + " |")
    return [
        "## The model load in the goal's arithmetic", "",
        f"`makespan_s` counts a simulated model load of {base.load_s:g} s per actor (all actors load together, "
        "before the first unit); `ideal_makespan_s` (busy GPU-seconds / GPUs) does not. No schedule shortens "
        "the load, so it alone caps `gpu_busy` at ideal / (ideal + load), however well the units are spread. "
        "`gpu_busy_after_load` and `makespan_after_load_over_ideal` (in `dropedit simulate`'s JSON and in the "
        "event model) measure the scheduling over the window after the load. The load stays 60 s in every run "
        "and prediction here: it is the assumption the runs were made under, not tuned to meet the goal.", "",
        *rows, "",
        "A realistic load of FLUX.1-Kontext-dev (~24 GB of bf16 transformer, ~10 GB of text encoders and VAE) "
        "is an ESTIMATE of 20–30 s, not measured here: safetensors read from a node's local NVMe (3–7 GB/s) "
        "straight onto the card (`device_map`, as `actors/` loads checkpoints), plus the actor's start, imports "
        "and CUDA context (~10 s). 60 s is what weights on a network file system (~1 GB/s) or a cold page cache "
        "give; a first download from the Hub takes minutes and is a per-node cost that a warm cache removes.", ""]


def _k_notes() -> list[str]:
    return [
        "## Several logical GPUs per process (128 and 256 GPUs)", "",
        "128 or 256 actor processes (~111 MB private each, plus Ray's workers) do not fit this shared 24 GiB "
        "machine, so the pie_128gpu_* and pie_256gpu_* runs use `dropedit simulate --gpus-per-actor K` "
        "(K = 2, 4: 64 processes, as at 64 GPUs). Each actor asks Ray for `num_gpus=K` (Ray's GPU accounting "
        "is exact: 256 GPUs, 64 actors) and Ray Data runs K of its units at once on the actor's threads "
        "(`max_concurrent_calls_per_actor=K`, true multi-threading; units in flight per actor: K, one per GPU "
        "(`queue_per_gpu` 1, `pipeline.pools.QUEUE_PER_GPU`), in the runs that record it, else Ray Data's 2 K); a running "
        "unit holds one of the actor's K logical GPUs for the whole unit and sleeps its own service times "
        "there, and busy time is counted per logical GPU (the trace names `host:pid/gpuI`). What differs from "
        "one process per GPU: the units waiting at an actor share one queue for its K GPUs (a unit starts on "
        "whichever frees first), a model load counts K, and a killed actor "
        "takes K GPUs' units with it. The event model schedules the same way (`gpus_per_actor`); its "
        "extrapolations below assume one process per GPU and one unit in flight per GPU, as the graph now runs "
        "on a real cluster. These runs are held out of "
        "the fit.", ""]


def _goal_table(runs: dict[str, dict]) -> list[str]:
    """The issue's goal (>= 0.90 busy, makespan <= 1.10 x ideal, <= 5 % extra GPU work for pairing) against
    the measured runs at 128 GPUs and more, with and without the model load."""
    lines = ["| run | pairing | scale | units | gpu_busy | makespan / ideal | busy after load | after load / ideal "
             "| extra pairing | load_avg_1m |", "|---" * 10 + "|"]
    for name, r in sorted(runs.items(), key=lambda kv: (kv[1]["gpus"], kv[0])):
        if r["gpus"] < 128:
            continue
        work = r["ideal_makespan_s"] * r["gpus"] - r.get("extra_gpu_s_for_pairing", 0.0)
        load = " → ".join(f"{v:g}" for v in r.get("load_avg_1m", []))
        pairing = r.get("pairing", "rerun") if (r.get("split_parts") or 1) > 1 else "no split"
        lines.append(f"| {name} | {pairing} | {r['scale']:.2f} | {r['units']} | {r['gpu_busy']:.3f} | {r['makespan_s'] / r['ideal_makespan_s']:.3f} "
                     f"| {r['gpu_busy_after_load']:.3f} | {r['makespan_after_load_over_ideal']:.3f} "
                     f"| {100 * r.get('extra_gpu_s_for_pairing', 0.0) / work:.1f} % | {load} |")
    return ["## The goal at 128 and 256 GPUs (measured)", "",
            "Goal: ≥ 0.90 busy, makespan ≤ 1.10 × ideal, ≤ 5 % extra GPU work for pairing. Measured on this "
            "shared, overloaded 2-core machine (its load beside each run), with the 60 s load counted and "
            "without it:", "", *lines, ""]


def document(folder: Path) -> str:
    runs = load_runs(folder)
    overheads = fit(unsplit(runs))
    fitted = errors(runs, overheads)
    worst = max(abs(e["makespan_error"]) for e in fitted if e["fitted"])
    held = [abs(e["makespan_error"]) for e in fitted if not e["fitted"]]
    floor = [abs(e["scheduling_only_error"]) for e in fitted if not e["fitted"]]
    held_text = (f" Largest makespan error on the {len(held)} held-out runs (split units, several GPUs per "
                 f"process): {100 * max(held):.1f} %; with no overheads at all (the scheduling alone) "
                 f"{100 * max(floor):.1f} %. The overheads are this machine's under the load its fitting runs "
                 "had (the load_avg_1m column above): a loaded machine's fixed delay, which the held-out runs, "
                 "made under less load, did not all pay." if held else "")
    base = scenario_of(next(iter(unsplit(runs).values())))
    lines = ["# Scaling: `dropedit simulate` runs and the discrete-event model", "",
             "Generated by `python -m simulation.scaling_doc docs/scaling` from the runs `run.sh` makes. Measured "
             "rows are Ray runs on a shared 2-core machine with the SYNTHETIC model (service times from the cost "
             "model, FLUX.1-Kontext-dev at 400 TFLOP/s, lognormal σ 0.15 plus 2 % 3× stragglers, 60 s load); "
             "model rows are PREDICTIONS of `simulation/event_model.py`.", "",
             "## Measured runs", "", table(folder), "", *_goal_table(runs), *_load_notes(base), *_k_notes(),
             "## The discrete-event model, fitted on the measured pie_*gpu_1024 runs", "",
             f"Fitted overheads, wall seconds of this machine: dispatch {overheads.dispatch_s:.4f} per unit "
             f"(serial, the driver's), gap {overheads.gap_s:.4f} per unit on its actor, fixed "
             f"{overheads.fixed_s:.2f} per run (the first dispatch's delay and the end after the last unit). "
             f"Largest makespan error on the runs it saw: {100 * worst:.1f} %.{held_text}", "",
             *_fit_table(fitted),
             "", "## Extrapolation (model predictions; 700 records × 20 configurations, 1024², 60 s load)",
             *_extrapolations(base, overheads), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/scaling")
    text = document(target)
    (target / "README.md").write_text(text)
    print(text)
