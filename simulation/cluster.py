"""`dropedit simulate CONFIG --gpus N`: the ablation graph of `dropedit run`, on a local Ray cluster with N
logical GPUs, each actor holding a SYNTHETIC model (`simulation.synthetic_model`) whose edits take the FLOP model's time
for the real architecture at an assumed throughput, scaled down so a PIE-Bench-sized run takes minutes.

Every time printed is in simulated seconds (wall seconds / scale). `makespan_s` is the simulated model load
(`load_s`) plus the wall time from the pool's start (every actor loaded: they wait for each other, as actors
starting together on a cluster would, see `simulation.synthetic_model`) to the last row written, divided by the scale:
what comes before (starting Ray, planning the dataset, this machine starting 32+ actor processes on a few
cores) is left out, since the scale would multiply seconds into minutes; `makespan_with_startup_s` counts
everything. What it keeps still overstates a real cluster's overhead: the CPU stages and Ray's scheduling
share this machine's cores with the actors."""
from __future__ import annotations

import io
import json
import os
import random
import resource
import time
from typing import Any

import PIL.Image

from simulation.ledger import SimLedger
from simulation.service_times import edit_seconds, simulated_factory
from pipeline import storage as st
from pipeline.config import RunConfig, expand_run, load_config
from pipeline.configuration import ExpandedRun
from pipeline.resume import read_results

DEFAULTS = dict(tflops=400.0, load_s=60.0, noise=0.15, target_wall_s=300.0)
# measured (README "Scaling"): a synthetic actor process holds ~111 MB of private memory (RSS ~200 MB, shared
# libraries counted); the driver, Ray's own processes and the CPU stages ~2 GB more
ACTOR_PRIVATE_MB, FIXED_MB = 115, 2048


def memory_shortfall(gpus: int) -> str | None:
    """Why `gpus` actor processes (one per logical GPU, or per `--gpus-per-actor` of them) would not fit this machine's available memory (None: they fit, or the
    machine does not say): an out-of-memory kill could hit other people's processes."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None
    need = gpus * ACTOR_PRIVATE_MB + FIXED_MB
    if need <= avail:
        return None
    return (f"{gpus} actor processes need ~{need} MB ({ACTOR_PRIVATE_MB} MB each + {FIXED_MB} MB), this machine has "
            f"{avail} MB available (--no-memory-check to try anyway)")


def synthetic_manifest(folder: str, records: int) -> str:
    """`records` edit requests sharing one small image (the synthetic model never looks at it)."""
    os.makedirs(folder, exist_ok=True)
    image = os.path.join(folder, "source.png")
    buf = io.BytesIO()
    PIL.Image.new("RGB", (32, 32), (90, 120, 200)).save(buf, format="PNG")
    st.write_bytes(image, buf.getvalue())
    path = os.path.join(folder, "manifest.jsonl")
    with open(path, "w") as f:
        for i in range(records):
            f.write(json.dumps({"id": f"sim-{i:06d}", "image": "source.png", "instruction": "simulated edit"}) + "\n")
    return path


def simulation_config(config: str, overrides: list[str], gpus: int, output: str, records: int | None,
                      configurations: int | None, fault_rate: float, batch_size: int,
                      per_actor: int = 1) -> RunConfig:
    """The user's config with the synthetic input, `per_actor` GPUs per actor (as many units at once), N GPUs
    in all, no metrics, faults."""
    import policies

    actors = gpus // per_actor
    sets = [*overrides, f"output={output}", f"actors.num_gpus={per_actor}", "actors.num_cpus=0",
            f"actors.concurrency={per_actor}", f"actors.min_size={actors}", f"actors.max_size={actors}",
            f"actors.batch_size={batch_size}", "metrics.compute=[]",
            f"storage.inject_write_faults={fault_rate}"]
    if fault_rate:   # enough attempts that injected faults are absorbed (0.2 ** 8 = 3e-6 per write), quickly
        sets += ["storage.retries=8", "storage.retry_base_delay_s=0.02"]
    if records is not None:
        sets.append(f"input={synthetic_manifest(os.path.join(output, 'sim_input'), records)}")
    if configurations == 1:
        sets.append("policies=[full]")
    elif configurations is not None:   # full + random arms at evenly spread keep ratios
        ratios = [round(0.1 + 0.85 * i / max(configurations - 2, 1), 4) for i in range(configurations - 1)]
        sets.append(f"policies=[full, {{name: random, ratio: {json.dumps(ratios)}}}]")
    return load_config(config, sets, known_policies=set(policies.REGISTRY))


def ideal_work(run: ExpandedRun, tflops: float, records: int) -> float:
    """GPU-seconds the grid needs without noise (for the time scale and the kill times)."""
    return records * sum(edit_seconds(c, tflops) for c in run.configurations)


def row_accounting(results: str, storage: Any, expected: int) -> dict[str, int]:
    table = read_results(results, storage, columns=["config_id", "record_id", "status"])
    df = table.to_pandas() if table is not None else None
    if df is None:
        return {"rows_ok": 0, "rows_error": 0, "rows_lost": expected, "rows_duplicated": 0}
    pairs = df.drop_duplicates(["config_id", "record_id"])
    return {"rows_ok": int((pairs["status"] == "ok").sum()), "rows_error": int((pairs["status"] != "ok").sum()),
            "rows_lost": max(expected - len(pairs), 0), "rows_duplicated": len(df) - len(pairs)}


def _kill_times(kills: int, horizon: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.1, 0.9) * horizon for _ in range(kills)]


def node_kill_plan(node_kills: int, gpus: int, per_node: int, horizon: float, seed: int) -> dict[int, float]:
    """`node_kills` distinct simulated nodes (of `per_node` GPUs) -> a kill time in the middle 80 % of the run."""
    nodes = -(-gpus // per_node)
    if node_kills > nodes:
        raise ValueError(f"--kill-nodes {node_kills}: only {nodes} simulated nodes of {per_node} GPUs")
    rng = random.Random(f"nodes-{seed}")
    return {n: rng.uniform(0.1, 0.9) * horizon for n in rng.sample(range(nodes), node_kills)}


def write_trace(path: str, trace: list, gpus: int, scale: float) -> None:
    """The per-unit trace as JSON lines (a header, then actor, unit, begun, ended, editing seconds)."""
    with open(path, "w") as f:
        f.write(json.dumps({"gpus": gpus, "scale": scale, "columns": ["actor", "unit", "begun_s", "ended_s",
                                                                       "busy_s"]}) + "\n")
        for item in trace:
            f.write(json.dumps(list(item)) + "\n")


def simulate(cfg: RunConfig, gpus: int, records: int, *, tflops: float, load_s: float, noise: float,
             scale: float | None, kills: int, seed: int = 0, node_kills: int = 0, per_node: int = 8,
             trace: str | None = None, per_actor: int = 1) -> dict[str, Any]:
    """Run the simulation on the current (local, N-GPU) Ray cluster; returns the measured figures."""
    import ray

    from pipeline.graph import run_ablation
    from pipeline.pools import QUEUE_PER_GPU

    run = expand_run(cfg)   # once: the work estimate, the graph and the counts share it
    work = ideal_work(run, tflops, records)
    scale = scale or DEFAULTS["target_wall_s"] / (work / gpus + load_s)
    ledger_name = f"dropedit-sim-ledger-{os.getpid()}-{time.time_ns()}"
    ledger = SimLedger.options(name=ledger_name).remote(
        _kill_times(kills, work / gpus, seed), gpus, node_kill_plan(node_kills, gpus, per_node, work / gpus, seed),
        per_node)
    factory = simulated_factory(ledger_name, tflops, load_s, scale, noise, per_actor)
    load_before = os.getloadavg()[0]
    started = time.time()
    summary = run_ablation(run, factory=factory)
    ended = time.time()
    counts = ray.get(ledger.counts.remote())
    if trace:
        write_trace(trace, ray.get(ledger.unit_trace.remote()), gpus, scale)
    configurations = len(run.configurations)
    first_ready = counts["all_ready"] or started
    makespan = load_s + (ended - first_ready) / scale
    return {"gpus": gpus, "records": records, "configurations": configurations, "units": counts["units"],
            "makespan_s": round(makespan, 1), "ideal_makespan_s": round(counts["busy_s"] / gpus, 1),
            "gpu_busy": round(counts["busy_s"] / (gpus * makespan), 4),
            **after_load(counts["busy_s"], gpus, makespan, load_s),
            "model_loads": counts["model_loads"], "actors": gpus // per_actor, "gpus_per_actor": per_actor,
            "queue_per_gpu": QUEUE_PER_GPU,
            "actor_kills": counts["actor_kills"],
            "node_kills": counts["node_kills"],
            "extra_gpu_s_for_pairing": round(counts["extra_gpu_s_for_pairing"], 1), "pairing": cfg.units.pairing,
            **row_accounting(summary["results"], cfg.storage, records * configurations),
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "makespan_with_startup_s": round((ended - started) / scale, 1),
            "startup_wall_s": round(first_ready - started, 1), "scale": scale, "wall_s": round(ended - started, 1),
            "tflops": tflops, "load_s": load_s, "noise": noise,
            "edit_s": [round(edit_seconds(c, tflops), 3) for c in run.configurations],
            **split_of(summary), "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "write_fault_rate": cfg.storage.inject_write_faults}


def after_load(busy_s: float, gpus: int, makespan: float, load_s: float) -> dict[str, float]:
    """The scheduling's own efficiency: busy and makespan / ideal over the window after the model load, which
    `gpu_busy` and `makespan_s` count (a fixed `load_s` that no scheduling shortens)."""
    window, ideal = makespan - load_s, busy_s / gpus
    return {"gpu_busy_after_load": round(busy_s / (gpus * window), 4) if window > 0 else 0.0,
            "makespan_after_load_over_ideal": round(window / ideal, 4) if ideal > 0 else 0.0}


def split_of(summary: dict[str, Any]) -> dict[str, Any]:
    """The first model entry's unit split, as the graph planned it (`split_parts` 1: one unit per record), for
    the event model; {} from a graph that does not plan splits."""
    plans = list((summary.get("unit_plans") or {}).values())
    if not plans:
        return {}
    return {"split_parts": plans[0].get("parts", 1), "split_records": plans[0].get("tail")}


def table(result: dict[str, Any]) -> str:
    """The figures as a two-column Markdown table."""
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.items()]
    return "\n".join(lines)
