"""The seeds' claims at toy scale, measured on the trained toy model (`python -m jobs.toy_results` runs it).

One call (`run_study`): writes the held-out split (`toy.data` seed 1), fine-tunes the two Sparse Context
copies (`toy.sparse_context_study`), runs `configs/toy_ablation.yaml` with `dropedit run`'s machinery (Ray
Data, Parquet, resume) and `dropedit report`, then runs the matched-budget random arms, which need one budget
per record (the kept-token counts of that record's TokenDrop run, step by step; a pipeline configuration
holds one budget for all records, so these run in-process with the same `Editor` and metric code), scores
every output against the exact targets and writes `docs/toy-results.md` with its tables and plots.
Re-running skips what is already done.

Claims checked (TokenDrop, Sec. 3.1, 3.2, 4.1, Appendix D.1):
(a) random drop: background PSNR falls as the drop ratio rises;
(b) at matched per-sample budgets, TokenDrop with the regularizer keeps the background better than random
    drop without it, and than adaptive drop without it;
(c) random drop with the regularizer collapses toward the source (Proposition 1);
(d) the adaptive keep ratio grows with the edited area;
(e) ToPi and SpotEdit variants on the same split;
and Sparse Context's (`toy.sparse_context_study`): fine-tuning with random reference drop vs without, quality
vs keep ratio per selection strategy, random vs task-aware selection at identical budgets.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toy import findings as toy_findings
from toy import sparse_context_study

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "toy_ablation.yaml"


def _psnr_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _load(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def score(edited: np.ndarray, source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Metrics against what is known exactly (PSNR in dB; PIE-Bench background convention for psnr_bg)."""
    from pipeline.metrics import background_metrics, psnr

    return {
        "psnr_bg": background_metrics(edited, source, mask)["psnr_bg"],
        "psnr_edit": _psnr_or_none(psnr(edited, target, mask)),          # inside the mask vs the target
        "psnr_mask_vs_source": _psnr_or_none(psnr(edited, source, mask)),  # inside the mask vs the source
        "psnr_target": _psnr_or_none(psnr(edited, target)),
    }


def manifest_index(data: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def add_scores(df: pd.DataFrame, data: Path) -> pd.DataFrame:
    """Target-based metrics and the mask fraction for every ok row (read from the written images)."""
    from pipeline.images import mask_from_image
    from PIL import Image

    index = manifest_index(data)
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    extra = []
    for row in df.itertuples():
        rec = index[row.record_id]
        if row.record_id not in cache:
            with Image.open(data / rec["mask"]) as m:
                mask = mask_from_image(m)
            cache[row.record_id] = (_load(data / rec["image"]), _load(data / rec["target"]), mask)
        source, target, mask = cache[row.record_id]
        s = score(_load(row.output_uri), source, target, mask) if row.status == "ok" else {}
        s["mask_fraction"] = float(mask.mean())
        extra.append(s)
    out = df.reset_index(drop=True).copy()
    for key in ("psnr_edit", "psnr_mask_vs_source", "psnr_target", "mask_fraction"):
        out[key] = [e.get(key) for e in extra]
    # rows of the in-process arms have no pipeline psnr_bg: the same function scores them here
    bg = pd.to_numeric(out["psnr_bg"], errors="coerce") if "psnr_bg" in out else pd.Series(np.nan, index=out.index)
    out["psnr_bg"] = [e.get("psnr_bg") if pd.isna(v) else v for v, e in zip(bg, extra)]
    return out


def label(policy: str, params: dict[str, Any]) -> str:
    reg = params.get("reg")
    if policy == "full":
        return "full"
    if policy == "random":
        if params.get("budget") is not None:
            return f"random, budget of TokenDrop ω={params['matched_omega']}, {'with' if reg else 'no'} reg"
        return f"random {params['ratio']:.2f}, {'with' if reg else 'no'} reg"
    if policy == "tokendrop":
        return f"TokenDrop ω={params['omega']}, {'with' if reg else 'no'} reg"
    if policy == "topi":
        return f"ToPi τ={params['tau']}, {params.get('mode', 'prune')}"   # rows hold the configured params
    if policy == "spotedit":
        return f"SpotEdit τ={params['tau']}, {params.get('fusion', 'spotfusion')}"
    return policy


def matched_arms(df: pd.DataFrame, data: Path, out: Path, steps: int) -> pd.DataFrame:
    """Random drop with each record's own TokenDrop(+reg) budget (per ω), with and without the regularizer."""
    from PIL import Image

    import policies
    from actors import Editor, load_pipeline

    path = out / "matched.parquet"
    done = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    td = df[(df.policy == "tokendrop") & df.reg & (df.status == "ok")]
    todo = [(r, reg) for r in td.itertuples() for reg in (False, True)
            if done.empty or not ((done.record_id == r.record_id) & (done.reg == reg)
                                  & (done.matched_omega == r.omega)).any()]
    if not todo:
        return done
    index = manifest_index(data)
    pipe = load_pipeline("toy-flux-kontext", device="cpu")
    rows = [] if done.empty else done.to_dict("records")
    for i, (r, reg) in enumerate(todo):
        rec = index[r.record_id]
        total = int(r.height // 16 * r.width // 16)
        budget = [int(round(k * total)) for k in r.keep_ratio_per_step]
        policy = policies.make("random", budget=budget, reg=reg)
        result = Editor(pipe, policy).edit(Image.open(data / rec["image"]), rec["instruction"], seed=int(r.seed),
                                           steps=steps, height=int(r.height), width=int(r.width))
        edited_dir = out / "matched" / f"omega{r.omega}" / ("reg" if reg else "noreg")
        edited_dir.mkdir(parents=True, exist_ok=True)
        out_uri = str(edited_dir / f"{r.record_id}.png")
        result.image.save(out_uri)
        rows.append({"record_id": r.record_id, "model": r.model, "category": r.category, "policy": "random", "reg": reg,
                     "policy_params": json.dumps(policy.params(), sort_keys=True), "status": "ok",
                     "output_uri": out_uri, "keep_ratio_mean": result.keep_ratio_mean,
                     "runtime_s": result.seconds, "height": r.height, "width": r.width, "seed": r.seed,
                     "tokendrop_keep_ratio": r.keep_ratio_mean, "matched_omega": r.omega})
        print(f"[matched {i + 1}/{len(todo)}] {r.record_id} ω={r.omega} reg={reg} keep {result.keep_ratio_mean:.2f}",
              file=sys.stderr, flush=True)
        pd.DataFrame(rows).to_parquet(path)
    return pd.DataFrame(rows)


def fidelity_to_full(df: pd.DataFrame) -> pd.Series:
    """PSNR of each output against the `full` output of the same record (for the in-process rows too)."""
    from pipeline.metrics import psnr

    # each model entry against its own `full` (a fine-tuned copy is another model)
    full = {(r.model, r.record_id): r.output_uri for r in df[(df.policy == "full") & (df.status == "ok")].itertuples()}
    vals = []
    for r in df.itertuples():
        ref = full.get((r.model, r.record_id))
        if r.policy == "full" or ref is None or r.status != "ok":
            vals.append(None)
        else:
            vals.append(_psnr_or_none(psnr(_load(r.output_uri), _load(ref))))
    return pd.Series(vals, index=df.index, dtype="float64")


def active_fraction(df: pd.DataFrame) -> pd.Series:
    """SpotEdit: mean over steps of the share of noisy tokens that got queries (1 where a step ran fully)."""
    vals = []
    for r in df.itertuples():
        steps = getattr(r, "active_per_step", None)
        noisy = (int(r.height) // 16) * (int(r.width) // 16)   # Flux: 8x VAE, 2x2 patches
        listed = isinstance(steps, (list, tuple, np.ndarray)) and len(steps) > 0   # in-process rows: NaN
        vals.append(float(np.mean(steps)) / noisy if listed else None)
    return pd.Series(vals, index=df.index, dtype="float64")


# ------------------------------------------------------------------ tables and plots

COLUMNS = {"keep_ratio_mean": "keep ratio", "psnr_bg": "bg PSNR ↑", "psnr_edit": "edit PSNR vs target ↑",
           "psnr_mask_vs_source": "in-mask PSNR vs source", "psnr_vs_full": "PSNR vs full ↑"}


def _table(df: pd.DataFrame, labels: list[str], cols: dict[str, str] = COLUMNS) -> str:
    lines = ["| policy | n | " + " | ".join(cols.values()) + " |", "|---|---|" + "---|" * len(cols)]
    for lab in labels:
        part = df[df.label == lab]
        if part.empty:
            continue
        cells = []
        for c in cols:
            v = toy_findings.finite_mean(part[c])
            cells.append("–" if math.isnan(v) else f"{v:.3f}" if c == "keep_ratio_mean" else f"{v:.2f}")
        lines.append(f"| {lab} | {len(part)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(df: pd.DataFrame, out: Path) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("psnr_bg", "psnr_edit")):
        for reg, style in ((False, "o-"), (True, "s--")):
            part = df[(df.policy == "random") & (df.reg == reg) & df.budget_free]
            g = part.groupby("ratio")[metric].mean()
            ax.plot(g.index, g.values, style, label=f"random, {'with' if reg else 'no'} reg")
        full = df[df.policy == "full"][metric].mean()
        ax.axhline(full, color="k", lw=1, label="full")
        for omega in sorted(df[df.policy == "tokendrop"].omega.dropna().unique()):
            for reg, marker in ((True, "*"), (False, "P")):
                part = df[(df.policy == "tokendrop") & (df.reg == reg) & (df.omega == omega)]
                ax.plot(1 - part.keep_ratio_mean.mean(), part[metric].mean(), marker, ms=12,
                        label=f"TokenDrop ω={omega}, {'with' if reg else 'no'} reg (mean drop)")
        ax.set(xlabel="drop ratio (mean over steps)", ylabel="dB",
               title={"psnr_bg": "background PSNR vs source", "psnr_edit": "PSNR inside mask vs target"}[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths["ratio"] = str(out / "drop_ratio.png")
    fig.savefig(paths["ratio"], dpi=110)
    plt.close(fig)

    omegas = sorted(df[df.policy == "tokendrop"].omega.dropna().unique())
    fig, axes = plt.subplots(1, len(omegas), figsize=(5.5 * len(omegas), 4), squeeze=False)
    for ax, omega in zip(axes[0], omegas):
        td = df[(df.policy == "tokendrop") & df.reg & (df.omega == omega)]
        for cat, part in td.groupby("category"):
            ax.scatter(part.mask_fraction, part.keep_ratio_mean, s=18, label=cat)
        x, y = td.mask_fraction.to_numpy(float), td.keep_ratio_mean.to_numpy(float)
        if len(x) > 1 and np.ptp(x) > 0:
            a, b = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 10)
            ax.plot(xs, a * xs + b, "r-", lw=1.5, label="least squares")
        ax.set(xlabel="edited area (mask fraction)", ylabel="mean keep ratio",
               title=f"TokenDrop (ω={omega}, reg): keep ratio vs edit area")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths["area"] = str(out / "keep_vs_area.png")
    fig.savefig(paths["area"], dpi=110)
    plt.close(fig)
    return paths


def correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Pearson r, Spearman ρ)."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(x, y)[0, 1]), float(np.corrcoef(rx, ry)[0, 1])


# ------------------------------------------------------------------ the study

def run_study(config: str | Path = CONFIG, out: str | Path = "results/toy", docs: str | Path = ROOT / "docs",
              n: int = 64, steps: int = 28, threads: int = 1, sparse_context: bool = True,
              multiref_bench: str | Path = "results/bench_multiref/summary.md") -> dict[str, Any]:
    """The whole study, resumable: data, fine-tunes, the grid and the matched arms, scores, the doc. Returns
    where the doc went, the row count and the seconds it took."""
    import torch

    from toy.data import write_dataset

    torch.set_num_threads(threads)
    out = Path(out)
    data = out / "data"
    if not (data / "manifest.jsonl").exists():
        write_dataset(data, n, seed=1)
    started = time.perf_counter()
    losses = sparse_context_study.finetune_all(threads) if sparse_context else {}   # before Ray starts here
    df, cfg = _claims_grid(config, data, out, steps)
    sparse = None
    if sparse_context:
        sc = add_scores(sparse_context_study.run_grid(data, out, steps), data)
        sc["psnr_vs_full"] = fidelity_to_full(sc)
        sc.to_parquet(out / "sparse_scored.parquet")
        bench = Path(multiref_bench)
        sparse = sparse_context_study.section(sc, losses, Path(docs) / "toy-results",
                                              bench.read_text() if bench.exists() else None)
    seconds = time.perf_counter() - started
    write_doc(df, Path(docs), cfg, seconds, sparse)
    return {"doc": str(Path(docs) / "toy-results.md"), "rows": len(df), "seconds": round(seconds)}


def _claims_grid(config: str | Path, data: Path, out: Path, steps: int) -> tuple[pd.DataFrame, Any]:
    """TokenDrop's claims: the ablation grid through the pipeline (and its report), the matched-budget arms
    in-process, every row scored; also written to `out/scored.parquet`. Returns the rows and the grid's config."""
    import policies
    from pipeline.ray_session import init_ray
    from report import load_results, write_report
    from pipeline.config import load_config
    from pipeline.graph import run_ablation

    cfg = load_config(str(config), [f"input={data / 'manifest.jsonl'}", f"output={out / 'run'}",
                                    f"steps={steps}"], known_policies=policies.REGISTRY)
    init_ray()
    summary = run_ablation(cfg)
    write_report(summary["results"], str(out / "report"))
    df = load_results(summary["results"])
    params = [json.loads(p) for p in df.policy_params]
    df["reg"] = [bool(p.get("reg", False)) for p in params]
    df["ratio"] = [p.get("ratio") for p in params]
    df["omega"] = [p.get("omega") for p in params]
    df["budget_free"] = True
    df["label"] = [label(pol, p) for pol, p in zip(df.policy, params)]
    matched = matched_arms(df, data, out, steps)
    if not matched.empty:
        matched = matched.assign(budget_free=False, ratio=None,
                                 label=[label("random", {"budget": 1, "reg": r, "matched_omega": w})
                                        for r, w in zip(matched.reg, matched.matched_omega)])
        df = pd.concat([df, matched], ignore_index=True)
    df = add_scores(df, data)
    df["psnr_vs_full"] = fidelity_to_full(df)
    df["active_fraction"] = active_fraction(df)
    df.to_parquet(out / "scored.parquet")
    return df, cfg


def _per_category(df: pd.DataFrame, omega: float) -> str:
    td_lab = label("tokendrop", {"omega": omega, "reg": True})
    m_lab = label("random", {"budget": 1, "reg": False, "matched_omega": omega})
    cats = df.groupby(["category", "label"]).agg(keep=("keep_ratio_mean", "mean"), bg=("psnr_bg", "mean"),
                                                 edit=("psnr_edit", "mean")).reset_index()
    lines = [f"| category | full: edit PSNR | TokenDrop ω={omega}+reg: keep ratio | bg PSNR | edit PSNR | "
             "random at its budget, no reg: bg PSNR | edit PSNR |", "|---|---|---|---|---|---|---|"]
    for cat in sorted(df.category.dropna().unique()):
        def get(lab: str, col: str) -> str:
            v = cats[(cats.category == cat) & (cats.label == lab)][col]
            return "–" if v.empty or pd.isna(v.iloc[0]) else f"{v.iloc[0]:.2f}"
        lines.append(f"| {cat} | {get('full', 'edit')} | {get(td_lab, 'keep')} | {get(td_lab, 'bg')} | "
                     f"{get(td_lab, 'edit')} | {get(m_lab, 'bg')} | {get(m_lab, 'edit')} |")
    return "\n".join(lines)


def _other_methods(df: pd.DataFrame) -> str:
    labels = sorted(df[df.policy.isin(["topi", "spotedit"])].label.unique())
    if not labels:
        return "No ToPi or SpotEdit rows in this run's grid."
    cols = dict(COLUMNS)
    cols["active_fraction"] = "active noisy"
    return _table(df, ["full"] + labels, cols)


def _per_omega(df: pd.DataFrame, omega: float) -> dict[str, str]:
    """The pieces of the doc for one TokenDrop ω: matched-budget table, correlation row, per-category table,
    and the verdict on claim (d)."""
    td = df[(df.policy == "tokendrop") & df.reg & (df.omega == omega)]
    local = td[~td.category.isin(["grayscale", "invert", "background"])]
    pr, sr = correlation(td.mask_fraction.to_numpy(float), td.keep_ratio_mean.to_numpy(float))
    lpr, lsr = correlation(local.mask_fraction.to_numpy(float), local.keep_ratio_mean.to_numpy(float))
    return {
        "matched": f"### ω = {omega}\n\n" + _table(df, [
            "full", label("tokendrop", {"omega": omega, "reg": True}),
            label("random", {"budget": 1, "reg": False, "matched_omega": omega}),
            label("random", {"budget": 1, "reg": True, "matched_omega": omega}),
            label("tokendrop", {"omega": omega, "reg": False})]),
        "verdict": toy_findings.keep_vs_area(omega, pr, lpr),
        "corr": (f"| {omega} | {td.keep_ratio_mean.mean():.3f} | {pr:.2f} | {sr:.2f} | "
                 f"{local.keep_ratio_mean.mean():.3f} | {lpr:.2f} | {lsr:.2f} |"),
        "per_cat": f"### ω = {omega}\n\n" + _per_category(df, omega),
    }


def write_doc(df: pd.DataFrame, docs: Path, cfg: Any, seconds: float, sparse: str | None = None) -> None:
    """`docs/toy-results.md` and its plots (in `docs/toy-results/`)."""
    paths = plots(df, docs / "toy-results")
    omegas = sorted(df[df.policy == "tokendrop"].omega.dropna().unique())
    parts = [_per_omega(df, omega) for omega in omegas]
    findings = ([toy_findings.random_drop(df, label)]
                + [toy_findings.matched_budgets(df, label, omega) for omega in omegas]
                + [toy_findings.proposition_1(df, label)] + [p["verdict"] for p in parts]
                + [toy_findings.other_methods(df)])
    nl = "\n"
    text = (_intro(df, cfg, findings) + _claim_sections(df, paths, parts)
            + f"{sparse or '## Sparse Context' + nl + nl + 'Not run this time (`--no-sparse-context`).'}\n")
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "toy-results.md").write_text(text)


def _intro(df: pd.DataFrame, cfg: Any, findings: list[str]) -> str:
    """The doc's title, what was measured and how, and the findings."""
    n = df[df.policy == "full"].record_id.nunique()
    nl = "\n"
    return f"""# The seeds' claims on the toy model

Measured by `python -m jobs.toy_results` ({len(df)} edits, {df.runtime_s.sum() / 60:.0f} min of edit time on the
shared 2-core CPU machine, one torch thread): the trained
`toy-flux-kontext` (see `models/toy-flux-kontext/MODEL_CARD.md`) on the held-out split of `toy.data`
(seed 1, {n} records, the 8 categories in turn), 128x128, {cfg.steps} steps, edit seed 0. The grid is
`configs/toy_ablation.yaml`, run through `dropedit run`'s machinery (its Parquet and report land in
`results/toy/`); the matched-budget random arms take each record's own per-step kept-token counts from its
TokenDrop (with reg) run and run in-process with the same `Editor`. PSNR in dB, means over records:
`bg PSNR` is background vs the source (PIE-Bench convention, undefined for grayscale and invert, whose mask is the
whole image); `edit PSNR vs target` is inside the mask against the exact target; `in-mask PSNR vs source` is
inside the mask against the source (higher = the edit moved less); `PSNR vs full` compares with the `full`
output of the same record. The token grid is 8x8 = 64 source tokens, so one token is 1.6% of the image.
TokenDrop runs its first 2 steps with every token (the Kontext default), so its keep ratio is at least 2/{cfg.steps}.

## Findings

Computed from the tables below by `toy/findings.py`:

{nl.join(f for f in findings if f)}

"""


def _claim_sections(df: pd.DataFrame, paths: dict[str, str], parts: list[dict[str, str]]) -> str:
    """Sections (a) to (e) and the per-category tables, each with its table and plot."""
    random_labels = [label("random", {"ratio": r, "reg": reg}) for reg in (False, True)
                     for r in sorted(df[df.policy == "random"].ratio.dropna().unique())]
    nl = "\n"
    return f"""## (a) Random drop: background PSNR against the drop ratio

{_table(df, ['full'] + [lab for lab in random_labels if 'no reg' in lab])}

![drop ratio](toy-results/{Path(paths['ratio']).name})

## (b) Matched per-sample budgets

The random arms keep exactly as many source tokens per step as TokenDrop (with reg) kept on the same record;
"TokenDrop, no reg" chooses its own budget (its own x̂0 differs), so compare its keep ratio too.

{(nl + nl).join(p['matched'] for p in parts)}

## (c) Random drop with the regularizer (Proposition 1)

{_table(df, ['full'] + [lab for lab in random_labels if 'with reg' in lab])}

Proposition 1 predicts that random masks plus the regularizer pull the trajectory back to the source: higher
in-mask PSNR vs the source and lower edit PSNR vs the target than the same ratio without it (table (a)).

## (d) Adaptive keep ratio against the edited area

TokenDrop with reg, one point per record; correlation of the mean keep ratio with the mask fraction (Pearson r,
Spearman ρ), over all records and over the local edits only (recolor, remove, add, move, resize):

| ω | keep ratio, all | r, all | ρ, all | keep ratio, local | r, local | ρ, local |
|---|---|---|---|---|---|---|
{nl.join(p['corr'] for p in parts)}

![keep ratio vs area](toy-results/{Path(paths['area']).name})

## (e) ToPi and SpotEdit on the same split

ToPi (`layers: auto` = the shipped calibration `configs/calibration/toy-flux-kontext.json`, 1 exempt front
layer, an anchor every 10 steps): its keep ratio is the share of source tokens that layers after the exempt
front see, on average over steps. SpotEdit (the paper's VAE-feature selector, SpotFusion, condition cache,
4 full initial steps and the scaled resets): it keeps every source token but lets only the edited noisy tokens
query; `active noisy` is the mean share of noisy tokens that ran, 1.0 in full steps.

{_other_methods(df)}

## Per category

{(nl + nl).join(p['per_cat'] for p in parts)}

"""
