"""The seeds' claims at toy scale, measured on a trained toy model (`python -m jobs.toy_results` runs it).

One call (`run_study`) for one toy model (`toy-flux-kontext-v2` by default, 256 px, 16x16 tokens; or v1,
`toy-flux-kontext`, 128 px, 8x8): writes the held-out split (`toy.data` seed 1) at the model's size, makes
ToPi's calibration for the model when there is none (`studies.toy.calibration`), fine-tunes the
two Sparse Context copies (`studies.sparse_context`), runs `configs/toy_ablation.yaml` with `dropedit run`'s
machinery (Ray Data, Parquet, resume) and `dropedit report` (the study sets the config's model, size, input,
output, steps and ToPi's calibration file), then runs the matched-budget random arms, which need one budget
per record (the kept-token counts of that record's TokenDrop run, step by step; a pipeline configuration
holds one budget for all records, so these run in-process with the same `Editor` and metric code), scores
every output against the exact targets and writes `docs/toy-results.md` with its tables, plots and picture
grid (`studies.toy.picture_grid`). Re-running skips what is already done; each model has its own working folder
(`default_out`).

Claims checked (TokenDrop, Sec. 3.1, 3.2, 4.1, Appendix D.1):
(a) random drop: background PSNR falls as the drop ratio rises;
(b) at matched per-sample budgets, TokenDrop with the regularizer keeps the background better than random
    drop without it, and than adaptive drop without it (per ω and per blur kernel: the paper's k=11, σ=1
    as given, and scaled to the token grid, `blur: grid`);
(c) random drop with the regularizer collapses toward the source (Proposition 1);
(d) the adaptive keep ratio grows with the edited area (per ω and kernel);
(e) ToPi and SpotEdit variants on the same split;
and Sparse Context's (`studies.sparse_context`): fine-tuning with random reference drop vs without, quality
vs keep ratio per selection strategy, random vs task-aware selection at identical budgets.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from studies.sparse_context import doc as sparse_context_doc
from studies.sparse_context import run as sparse_context_run
from studies.toy.calibration import ensure_calibration
from studies.toy.config import CONFIG, heldout, study_config
from studies.toy.doc import write_doc
from studies.toy.labels import blur_of, label
from studies.toy.matched import matched_arms
from studies.toy.models import (
    DEFAULT_MODEL,
    PROTOCOL_STEPS,
    ToyModel,
    default_out,
    toy_model,
)
from studies.toy.scoring import active_fraction, add_scores, fidelity_to_full


def run_study(config: str | Path = CONFIG, out: str | Path | None = None, docs: str | Path = "docs",
              n: int = 64, steps: int = PROTOCOL_STEPS, threads: int = 1, sparse_context: bool = True,
              multiref_bench: str | Path = "results/bench_multiref/summary.md", model: str = DEFAULT_MODEL,
              size: int | None = None, calibration: str | Path | None = None,
              sparse_config: str | Path | None = None, sparse_records: int | None = None) -> dict[str, Any]:
    """The whole study on one toy model, resumable: data, ToPi's calibration, fine-tunes, the grid and the
    matched arms, scores, the doc. Returns where the doc went, the row count and the seconds it took."""
    import torch

    torch.set_num_threads(threads)
    toy = toy_model(model, size)
    out = Path(out if out is not None else default_out(toy.name))
    data = out / "data"
    heldout(data, n, toy.size)
    started = time.perf_counter()
    # before Ray starts in this process: the fine-tunes run `jobs.train` (its own Ray), calibration in-process
    losses = sparse_context_run.finetune_all(toy.name, out, threads) if sparse_context else {}
    calib = ensure_calibration(toy, out, steps, calibration)
    df, cfg = _claims_grid(config, data, out, steps, toy, calib, threads)
    sparse = sc = None
    if sparse_context:
        sc = add_scores(sparse_context_run.run_grid(data, out, steps, toy, sparse_config, threads,
                                                                sparse_records), data)
        sc["psnr_vs_full"] = fidelity_to_full(sc)
        sc.to_parquet(out / "sparse_scored.parquet")
        bench = Path(multiref_bench)
        sparse = sparse_context_doc.section(sc, losses, Path(docs) / "toy-results",
                                              bench.read_text() if bench.exists() else None, toy)
    from studies.toy.picture_grid import study_grid

    edits = study_grid(df, data, Path(docs) / "toy-results" / "edits.png", sc)
    seconds = time.perf_counter() - started
    write_doc(df, Path(docs), cfg, seconds, sparse, model=toy, out=out, calibration=calib, edits=edits)
    return {"doc": str(Path(docs) / "toy-results.md"), "model": toy.name, "size": toy.size, "rows": len(df),
            "seconds": round(seconds)}


def _claims_grid(config: str | Path, data: Path, out: Path, steps: int, model: ToyModel,
                 calibration: Path | None = None, threads: int | None = None) -> tuple[pd.DataFrame, Any]:
    """TokenDrop's claims: the ablation grid through the pipeline (and its report), the matched-budget arms
    in-process, every row scored; also written to `out/scored.parquet`. Returns the rows and the grid's config."""
    from pipeline.config import expand_run
    from pipeline.graph import run_ablation
    from pipeline.ray_session import init_ray
    from report import load_results, write_report

    cfg = study_config(config, model, data, out / "run", steps, calibration, threads=threads)
    init_ray()
    summary = run_ablation(expand_run(cfg))
    write_report(summary["results"], str(out / "report"))
    df = load_results(summary["results"])
    params = [json.loads(p) for p in df.policy_params]
    df["reg"] = [bool(p.get("reg", False)) for p in params]
    df["ratio"] = [p.get("ratio") for p in params]
    df["omega"] = [p.get("omega") for p in params]
    df["blur"] = [p.get("blur") if pol == "tokendrop" else None for pol, p in zip(df.policy, params)]
    df["budget_free"] = True
    df["label"] = [label(pol, p) for pol, p in zip(df.policy, params)]
    matched = matched_arms(df, data, out, steps, model.name)
    if not matched.empty:
        if "matched_blur" not in matched:
            matched["matched_blur"] = None
        matched = matched.assign(budget_free=False, ratio=None,
                                 label=[label("random", {"budget": 1, "reg": r, "matched_omega": w,
                                                         "matched_blur": blur_of(b)})
                                        for r, w, b in zip(matched.reg, matched.matched_omega, matched.matched_blur)])
        df = pd.concat([df, matched], ignore_index=True)
    df = add_scores(df, data)
    df["psnr_vs_full"] = fidelity_to_full(df)
    df["active_fraction"] = active_fraction(df)
    df.to_parquet(out / "scored.parquet")
    return df, cfg
