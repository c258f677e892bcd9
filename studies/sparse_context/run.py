"""Sparse Context at toy scale (seed 003), the part of the toy study (`studies.toy`) that trains.

1. Fine-tunes the shipped toy model twice, from the same weights on the same data for the same steps, with
   and without random reference-token drop (`python -m jobs.train` with the model's configs in `FINETUNES`,
   into the study's `out/finetune/{nodrop,drop}`; skipped when the output exists, resumed when interrupted).
2. Runs `configs/toy_sparse_context.yaml` (the shipped model and both copies; the four selection strategies
   at identical fixed budgets, and the adaptive budget), set for the model by `studies.toy.config.study_config`,
   through `dropedit run`'s machinery.
3. Scores the outputs against the exact targets and writes the doc section with its tables and plot.

Claims checked: dropping reference tokens keeps quality at a reduced budget; fine-tuning with random drop
makes the model robust to it; and (the reviewers' test) on the fine-tuned model, random and task-aware
selection at identical budgets give the same quality, i.e. training decouples the model from the rule.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from core.resources import resource

CONFIG = resource("configs", "toy_sparse_context.yaml")


# The two fine-tunes per toy model: same start, data and steps; only the random reference drop differs.
FINETUNES: dict[str, dict[str, Path]] = {
    "toy-flux-kontext": {"toy-ft-nodrop": resource("configs", "finetune_toy_nodrop.yaml"),
                         "toy-ft-drop": resource("configs", "finetune_toy_drop.yaml")},
    "toy-flux-kontext-v2": {"toy-ft-nodrop": resource("configs", "finetune_toy_v2_nodrop.yaml"),
                            "toy-ft-drop": resource("configs", "finetune_toy_v2_drop.yaml")},
}


def finetune_dir(out: Path, label: str) -> Path:
    """Where the study keeps a fine-tuned copy: `out/finetune/drop`, `out/finetune/nodrop`."""
    return Path(out) / "finetune" / label.removeprefix("toy-ft-")


def finetune(config: Path, threads: int, output: Path | None = None) -> dict[str, Any]:
    """Train one copy (into `output` when given, else the config's) unless its pipeline folder exists;
    returns its `loss.json` summary. Re-running resumes from the run's last checkpoint."""
    from finetune.config import load_config

    out = Path(output) if output is not None else Path(load_config(str(config)).output)
    if not (out / "model_index.json").exists():
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        # its own process: Ray Train starts and stops its own local cluster there
        subprocess.run([sys.executable, "-m", "jobs.train", str(config), "--set", f"output={out}",
                        "--set", f"threads={threads}"], check=True, env=env)
    return json.loads((out / "loss.json").read_text())


def finetune_configs(model: str) -> dict[str, Path]:
    if model not in FINETUNES:
        raise ValueError(f"no Sparse Context fine-tune configs for {model!r}; known: {', '.join(FINETUNES)}")
    return FINETUNES[model]


def finetune_all(model: str, out: Path, threads: int) -> dict[str, dict[str, Any]]:
    return {label: finetune(config, threads, finetune_dir(out, label))
            for label, config in finetune_configs(model).items()}


def run_grid(data: Path, out: Path, steps: int, model: Any, config: str | Path | None = None,
             threads: int | None = None, records: int | None = None) -> pd.DataFrame:
    """The grid's rows (resumable) on `model` (a `studies.toy.models.ToyModel`) and its two fine-tuned copies, with
    the selection parameters as columns; on the split's first `records` records when given (all otherwise)."""
    from pipeline.config import expand_run
    from pipeline.graph import run_ablation
    from pipeline.ray_session import init_ray
    from report import load_results
    from studies.toy.config import study_config

    finetuned = {label: finetune_dir(out, label) for label in finetune_configs(model.name)}
    cfg = study_config(config or CONFIG, model, data, out / "sparse", steps, finetuned=finetuned, threads=threads,
                       manifest=first_records(data, records))
    init_ray()
    summary = run_ablation(expand_run(cfg))
    df = load_results(summary["results"])
    params = [json.loads(p) for p in df.policy_params]
    df["strategy"] = [p.get("strategy", "full") for p in params]
    df["keep"] = [None if p.get("adaptive") or "keep" not in p else float(p["keep"]) for p in params]
    df["adaptive"] = [bool(p.get("adaptive", False)) for p in params]
    df["label"] = [sc_label(pol, p) for pol, p in zip(df.policy, params)]
    df["reference_kept"] = reference_kept(df)
    return df


def first_records(data: Path, records: int | None) -> str:
    """The manifest name holding the split's first `records` records (written beside `manifest.jsonl`, so its
    relative image paths hold; the split cycles through the categories, so a multiple of 8 is balanced)."""
    lines = (Path(data) / "manifest.jsonl").read_text().splitlines()
    if records is None or records >= len(lines):
        return "manifest.jsonl"
    if records < 1:
        raise ValueError(f"records must be at least 1, got {records}")
    name = f"manifest-first{records}.jsonl"
    (Path(data) / name).write_text("\n".join(lines[:records]) + "\n")
    return name


def sc_label(policy: str, params: dict[str, Any]) -> str:
    if policy != "sparse_context":
        return policy
    if params.get("adaptive"):
        return f"{params['strategy']}, adaptive (mass {params['mass']})"
    return f"{params['strategy']}, keep {float(params['keep']):.2f}"


def reference_kept(df: pd.DataFrame) -> pd.Series:
    """Share of reference tokens the selection kept after warm-up (the last step's keep ratio)."""
    return pd.Series([None if k is None or len(k) == 0 else float(k[-1]) for k in df.keep_ratio_per_step],
                     index=df.index, dtype="float64")
