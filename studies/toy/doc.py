"""`docs/toy-results.md`: the claims' sections, their tables, plots and verdicts, written from the scored rows."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from studies.toy import findings as toy_findings
from studies.toy.calibration import (
    CALIBRATION_RECORDS,
    CALIBRATION_SEED,
    CALIBRATION_TOP_M,
)
from studies.toy.labels import kernels_used, label, tokendrop_variants
from studies.toy.models import DEFAULT_MODEL, PATCH, ToyModel, portable
from studies.toy.plots import plots
from studies.toy.tables import (
    every_method_per_category,
    other_methods,
    per_variant,
    table,
)


def write_doc(df: pd.DataFrame, docs: Path, cfg: Any, seconds: float, sparse: str | None = None,
              model: ToyModel | None = None, out: str | Path = "results/toy", calibration: str | Path | None = None,
              edits: dict[str, Any] | None = None) -> None:
    """`docs/toy-results.md` and its plots (in `docs/toy-results/`)."""
    model = model or ToyModel("toy-flux-kontext", 128)
    paths = plots(df, docs / "toy-results")
    variants = tokendrop_variants(df)
    parts = [per_variant(df, omega, blur) for omega, blur in variants]
    findings = ([toy_findings.random_drop(df, label)]
                + [toy_findings.matched_budgets(df, label, omega, blur) for omega, blur in variants]
                + [toy_findings.kernels(df, label, variants)]
                + [toy_findings.proposition_1(df, label)] + [p["verdict"] for p in parts]
                + [toy_findings.other_methods(df)])
    nl = "\n"
    text = (_intro(df, cfg, findings, model, out, variants) + _claim_sections(df, paths, parts, model, calibration)
            + _edits_section(edits) + _per_category_section(df, parts)
            + f"{sparse or '## Sparse Context' + nl + nl + 'Not run this time (`--no-sparse-context`).'}\n")
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "toy-results.md").write_text(text)


def _intro(df: pd.DataFrame, cfg: Any, findings: list[str], model: ToyModel | None = None,
           out: str | Path = "results/toy", variants: list[tuple[float, str | None]] | None = None) -> str:
    """The doc's title, what was measured and how, and the findings."""
    model = model or ToyModel("toy-flux-kontext", 128)
    n = df[df.policy == "full"].record_id.nunique()
    nl = "\n"
    used = kernels_used(model, df)
    blurs = [b or "paper" for b in dict.fromkeys(b for _, b in (variants or []))] or ["paper"]
    kernel_text = "; ".join(
        f"`blur: {b}`: k={used[b][0]}, σ={used[b][1]:g}" + (" (the paper's, specified for FLUX's 64x64 grid at "
                                                             "1024², used as given)" if b == "paper" else
                                                             f" (the paper's scaled by {model.grid}/64 to this grid)")
        for b in blurs if b in used)
    command = "python -m jobs.toy_results" + ("" if model.name == DEFAULT_MODEL else f" --model {model.name}")
    return f"""# The seeds' claims on the toy model

Measured by `{command}` ({len(df)} edits, {df.runtime_s.sum() / 60:.0f} min of edit time on the
shared 2-core CPU machine): the trained `{model.name}` (see `{model.card}`) on the held-out split of `toy.data`
(seed 1, {n} records, the 8 categories in turn), {model.size}x{model.size}, {cfg.steps} steps, edit seed 0. The grid
is `configs/toy_ablation.yaml` (model, size, input, output and steps set by the study), run through
`dropedit run`'s machinery (its Parquet and report land in `{out}/`); the matched-budget random arms take
each record's own per-step kept-token counts from its TokenDrop (with reg) run and run in-process with the
same `Editor`. PSNR in dB, means over records:
`bg PSNR` is background vs the source (PIE-Bench convention, undefined for grayscale and invert, whose mask is the
whole image); `edit PSNR vs target` is inside the mask against the exact target; `in-mask PSNR vs source` is
inside the mask against the source (higher = the edit moved less); `PSNR vs full` compares with the `full`
output of the same record. The token grid is {model.grid}x{model.grid} = {model.tokens} source tokens, so one token is
{100 / model.tokens:.2g}% of the image ({PATCH} px per token side, as FLUX at 1024²). TokenDrop runs its first 2 steps
with every token (the Kontext default), so its keep ratio is at least 2/{cfg.steps}. Its blur of the difference
map runs at two kernels: {kernel_text}.

## Findings

Computed from the tables below by `studies/toy/findings.py`:

{nl.join(f for f in findings if f)}

"""


def _claim_sections(df: pd.DataFrame, paths: dict[str, str], parts: list[dict[str, str]],
                    model: ToyModel | None = None, calibration: str | Path | None = None) -> str:
    """Sections (a) to (e), each with its table and plot."""
    model = model or ToyModel("toy-flux-kontext", 128)
    random_labels = [label("random", {"ratio": r, "reg": reg}) for reg in (False, True)
                     for r in sorted(df[df.policy == "random"].ratio.dropna().unique())]
    calib = portable(Path(calibration)) if calibration is not None else f"configs/calibration/{model.name}.json"
    doc = json.loads(Path(calibration).read_text()) if calibration is not None and Path(calibration).is_file() else {}
    made = (f"{doc.get('samples', '?')} records at {doc.get('steps', '?')} steps, full context, layers "
            f"{doc.get('layers', '?')} (the top {doc.get('top_m', '?')} of {len(doc.get('scores', [])) or '?'})"
            if doc else f"{CALIBRATION_RECORDS} records of `toy.data` seed {CALIBRATION_SEED}, full context, the top "
                        f"{CALIBRATION_TOP_M} layers")
    nl = "\n"
    return f"""## (a) Random drop: background PSNR against the drop ratio

{table(df, ['full'] + [lab for lab in random_labels if 'no reg' in lab])}

![drop ratio](toy-results/{Path(paths['ratio']).name})

## (b) Matched per-sample budgets

The random arms keep exactly as many source tokens per step as TokenDrop (with reg) kept on the same record,
for each ω and blur kernel; "TokenDrop, no reg" chooses its own budget (its own x̂0 differs), so compare its
keep ratio too.

{(nl + nl).join(p['matched'] for p in parts)}

## (c) Random drop with the regularizer (Proposition 1)

{table(df, ['full'] + [lab for lab in random_labels if 'with reg' in lab])}

Proposition 1 predicts that random masks plus the regularizer pull the trajectory back to the source: higher
in-mask PSNR vs the source and lower edit PSNR vs the target than the same ratio without it (table (a)).

## (d) Adaptive keep ratio against the edited area

TokenDrop with reg, one point per record; correlation of the mean keep ratio with the mask fraction (Pearson r,
Spearman ρ), over all records and over the local edits only (recolor, remove, add, move, resize):

| ω | kernel | keep ratio, all | r, all | ρ, all | keep ratio, local | r, local | ρ, local |
|---|---|---|---|---|---|---|---|
{nl.join(p['corr'] for p in parts)}

![keep ratio vs area](toy-results/{Path(paths['area']).name})

## (e) ToPi and SpotEdit on the same split

ToPi (`layers` = this model's calibration `{calib}`, made by `dropedit calibrate` at {model.size}x{model.size}
on {made}; 1 exempt front layer, an anchor every 10 steps): its keep ratio is the share of source tokens that layers after the
exempt front see, on average over steps. SpotEdit (the paper's VAE-feature selector, SpotFusion, condition
cache, 4 full initial steps and the scaled resets): it keeps every source token but lets only the edited noisy
tokens query; `active noisy` is the mean share of noisy tokens that ran, 1.0 in full steps.

{other_methods(df)}

"""


def _edits_section(edits: dict[str, Any] | None) -> str:
    if not edits:
        return ""
    return f"""## Representative edits

One held-out record per category (the first, by id, that every configuration shown edited): the source, the
exact target, `full`, then one configuration per method (`studies/toy/picture_grid.py`).

![edits](toy-results/{Path(edits['path']).name})

"""


def _per_category_section(df: pd.DataFrame, parts: list[dict[str, str]]) -> str:
    nl = "\n"
    return f"""## Per category

{(nl + nl).join(p['per_cat'] for p in parts)}

{every_method_per_category(df)}

"""
