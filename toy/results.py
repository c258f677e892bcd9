"""The seeds' claims at toy scale, measured on a trained toy model (`python -m jobs.toy_results` runs it).

One call (`run_study`) for one toy model (`toy-flux-kontext-v2` by default, 256 px, 16x16 tokens; or v1,
`toy-flux-kontext`, 128 px, 8x8): writes the held-out split (`toy.data` seed 1) at the model's size, makes
ToPi's calibration for the model when there is none (`jobs.calibrate`, `ensure_calibration`), fine-tunes the
two Sparse Context copies (`toy.sparse_context_study`), runs `configs/toy_ablation.yaml` with `dropedit run`'s
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
and Sparse Context's (`toy.sparse_context_study`): fine-tuning with random reference drop vs without, quality
vs keep ratio per selection strategy, random vs task-aware selection at identical budgets.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from studies.toy import findings as toy_findings
from toy import sparse_context_study

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "toy_ablation.yaml"
CALIBRATIONS = ROOT / "configs" / "calibration"   # shipped ToPi calibrations, one per model: <name>.json
DEFAULT_MODEL = "toy-flux-kontext-v2"
PROTOCOL_STEPS = 28                                 # Kontext's sampling steps: the study's and the calibration's
# ToPi calibration set (as v1's shipped file was made): 16 records of toy.data seed 7, the top 2 of 6 layers
CALIBRATION_SEED, CALIBRATION_RECORDS, CALIBRATION_TOP_M = 7, 16, 2
PATCH = 16                                          # pixels per token side: Flux's 8x VAE and 2x2 patches


@dataclass(frozen=True)
class ToyModel:
    """The toy model a study runs on: its registered name and the image side it was trained at."""

    name: str
    size: int

    @property
    def grid(self) -> int:
        return self.size // PATCH

    @property
    def tokens(self) -> int:
        """Tokens per image (source or noisy)."""
        return self.grid * self.grid

    @property
    def card(self) -> str:
        return f"models/{self.name}/MODEL_CARD.md"


def toy_model(name: str = DEFAULT_MODEL, size: int | None = None) -> ToyModel:
    """`name` with its trained size: `size` when given, else the first of the sizes its folder's
    `dropedit.json` lists (`actors.model_defaults`)."""
    from actors.loading import SHIPPED
    from actors.model_defaults import read_defaults

    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not a shipped toy model; accepted: {', '.join(SHIPPED)}")
    if size is None:
        folder = SHIPPED[name]
        if not (folder / "model_index.json").is_file():
            raise ValueError(f"model {name!r} is not in {folder} yet (train it first: python -m jobs.train ...)")
        trained = read_defaults(folder).default_size
        if trained is None:
            raise ValueError(f"{folder / 'dropedit.json'} names no trained size: pass --size")
        if trained[0] != trained[1]:
            raise ValueError(f"{name!r} was trained at {trained[1]}x{trained[0]}; the study is square only")
        size = trained[0]
    if size < PATCH or size % PATCH:
        raise ValueError(f"size must be a multiple of {PATCH}, got {size}")
    return ToyModel(name, int(size))


def default_out(name: str) -> str:
    """The working folder of a model's study: v1 keeps results/toy, every other model its own."""
    return "results/toy" if name == "toy-flux-kontext" else f"results/{name.replace('toy-flux-kontext-', 'toy-')}"


def _portable(path: Path) -> str:
    """`path` relative to the working directory when under it (rows and config ids stay the same when the
    checkout moves), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def study_config(config: str | Path, model: ToyModel, data: Path, output: Path, steps: int,
                 calibration: str | Path | None = None, finetuned: dict[str, Path] | None = None,
                 threads: int | None = None, manifest: str = "manifest.jsonl") -> Any:
    """A grid config (`configs/toy_ablation.yaml`, `configs/toy_sparse_context.yaml`) set for `model`: every
    model entry runs `model.name` (an entry whose label is in `finetuned` loads that folder instead of its
    own path), the only resolution is the model's size; input, output and steps are the study's; ToPi
    entries without explicit layers (or with `auto`) read `calibration`, which the study passes by name:
    v1 and v2 share a transformer config, so `layers: auto` could not tell their calibrations apart.
    `threads`: the edit actor's CPUs (Ray gives it as many torch threads); `manifest`: which manifest in
    `data` (a subset written beside the split keeps its relative image paths)."""
    import yaml

    import policies
    from pipeline.config import parse_config

    raw = yaml.safe_load(Path(config).read_text())
    raw.update(input=str(data / manifest), output=str(output), steps=int(steps),
               resolutions=[[model.size, model.size]])
    if threads is not None:
        raw["actors"] = {**(raw.get("actors") or {}), "num_cpus": int(threads)}
    entries = []
    for entry in raw["models"]:
        entry = {**entry, "name": model.name}
        if finetuned and entry.get("label") in finetuned:
            entry["path"] = str(finetuned[entry["label"]])
        entries.append(entry)
    raw["models"] = entries
    if calibration is not None:
        raw["policies"] = [{**p, "layers": _portable(Path(calibration))}
                           if isinstance(p, dict) and p.get("name") == "topi" and p.get("layers", "auto") == "auto"
                           else p for p in raw["policies"]]
    return parse_config(raw, known_policies=policies.REGISTRY)


def ensure_calibration(model: ToyModel, out: Path, steps: int, path: str | Path | None = None) -> Path:
    """ToPi's calibration file for `model` (made by `jobs.calibrate` as v1's was: 16 records of toy.data
    seed 7 at the model's size, full context, the top 2 layers), made when missing: the shipped
    `configs/calibration/<name>.json` when there is one; else written there at the protocol's 28 steps, or
    under `out` at other step counts (a quick check does not ship a calibration). `path` overrides."""
    from policies.calibration import read_calibration
    from toy.data import write_dataset

    shipped = CALIBRATIONS / f"{model.name}.json"
    if path is None:
        path = shipped if shipped.exists() or steps == PROTOCOL_STEPS else out / "calibration" / f"{model.name}.json"
    path = Path(path)
    if path.exists():
        doc = read_calibration(path)
        if doc.get("model") not in (None, model.name):
            raise ValueError(f"{path} is the calibration of {doc.get('model')!r}, not of {model.name!r}")
        return path
    data = out / "calibration" / "data"
    if not (data / "manifest.jsonl").exists():
        write_dataset(data, CALIBRATION_RECORDS, seed=CALIBRATION_SEED, size=model.size)
    from jobs import calibrate

    path.parent.mkdir(parents=True, exist_ok=True)
    calibrate.main(["--model", model.name, "--input", str(data / "manifest.jsonl"), "--out", str(path),
                    "--top-m", str(CALIBRATION_TOP_M), "--steps", str(steps), "--size", f"{model.size}x{model.size}"])
    return path


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


def _kernel(blur: str | None) -> str:
    return f", {blur} kernel" if blur else ""


def label(policy: str, params: dict[str, Any]) -> str:
    """A configuration's name in tables and findings. TokenDrop's blur (`paper`, `grid`) is named when the
    configuration sets it; the matched random arms name their TokenDrop's ω and blur (`matched_blur`)."""
    reg = params.get("reg")
    if policy == "full":
        return "full"
    if policy == "random":
        if params.get("budget") is not None:
            blur = params.get("matched_blur")
            return (f"random, budget of TokenDrop ω={params['matched_omega']}{f' ({blur} kernel)' if blur else ''}, "
                    f"{'with' if reg else 'no'} reg")
        return f"random {params['ratio']:.2f}, {'with' if reg else 'no'} reg"
    if policy == "tokendrop":
        return f"TokenDrop ω={params['omega']}{_kernel(params.get('blur'))}, {'with' if reg else 'no'} reg"
    if policy == "topi":
        return f"ToPi τ={params['tau']}, {params.get('mode', 'prune')}"   # rows hold the configured params
    if policy == "spotedit":
        return f"SpotEdit τ={params['tau']}, {params.get('fusion', 'spotfusion')}"
    return policy


def _blur_of(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def tokendrop_variants(df: pd.DataFrame) -> list[tuple[float, str | None]]:
    """(ω, blur) of every TokenDrop configuration that ran, ω then the paper's kernel first."""
    td = df[df.policy == "tokendrop"]
    blur = td["blur"] if "blur" in td else pd.Series(None, index=td.index, dtype=object)
    pairs = {(float(w), _blur_of(b)) for w, b in zip(td.omega, blur) if w is not None and not pd.isna(w)}
    order = {None: 0, "paper": 1, "grid": 2}
    return sorted(pairs, key=lambda p: (p[0], order.get(p[1], 3), str(p[1])))


def _is(series: pd.Series, value: Any) -> pd.Series:
    """Elementwise equality that counts None/NaN as equal to None."""
    if value is None:
        return series.isna()
    return series == value


def matched_arms(df: pd.DataFrame, data: Path, out: Path, steps: int, model: str = DEFAULT_MODEL,
                 model_path: str | Path | None = None) -> pd.DataFrame:
    """Random drop with each record's own TokenDrop(+reg) budget (per ω and blur kernel), with and without
    the regularizer, on `model` (loaded by name, from `model_path` when given)."""
    from PIL import Image

    import policies
    from actors import Editor, load_pipeline

    path = out / "matched.parquet"
    done = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    if not done.empty and "matched_blur" not in done:
        done["matched_blur"] = None
    td = df[(df.policy == "tokendrop") & df.reg & (df.status == "ok")]
    td_blur = td["blur"] if "blur" in td else pd.Series(None, index=td.index, dtype=object)

    def is_done(r: Any, blur: str | None, reg: bool) -> bool:
        return not done.empty and bool(((done.record_id == r.record_id) & (done.reg == reg)
                                        & (done.matched_omega == r.omega) & _is(done.matched_blur, blur)).any())

    todo = [(r, _blur_of(b), reg) for r, b in zip(td.itertuples(), td_blur) for reg in (False, True)
            if not is_done(r, _blur_of(b), reg)]
    if not todo:
        return done
    index = manifest_index(data)
    pipe = load_pipeline(model, path=model_path, device="cpu")
    rows = [] if done.empty else done.to_dict("records")
    for i, (r, blur, reg) in enumerate(todo):
        rec = index[r.record_id]
        total = int(r.height // PATCH * r.width // PATCH)
        budget = [int(round(k * total)) for k in r.keep_ratio_per_step]
        policy = policies.make("random", budget=budget, reg=reg)
        with Image.open(data / rec["image"]) as src:
            result = Editor(pipe, policy).edit(src.convert("RGB"), rec["instruction"], seed=int(r.seed),
                                               steps=steps, height=int(r.height), width=int(r.width))
        edited_dir = out / "matched" / (f"omega{r.omega}" + (f"-{blur}" if blur else "")) / ("reg" if reg else "noreg")
        edited_dir.mkdir(parents=True, exist_ok=True)
        out_uri = str(edited_dir / f"{r.record_id}.png")
        result.image.save(out_uri)
        rows.append({"record_id": r.record_id, "model": r.model, "category": r.category, "policy": "random", "reg": reg,
                     "policy_params": json.dumps(policy.params(), sort_keys=True), "status": "ok",
                     "output_uri": out_uri, "keep_ratio_mean": result.keep_ratio_mean,
                     "runtime_s": result.seconds, "height": r.height, "width": r.width, "seed": r.seed,
                     "tokendrop_keep_ratio": r.keep_ratio_mean, "matched_omega": r.omega, "matched_blur": blur})
        print(f"[matched {i + 1}/{len(todo)}] {r.record_id} ω={r.omega} blur={blur} reg={reg} "
              f"keep {result.keep_ratio_mean:.2f}", file=sys.stderr, flush=True)
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


def category_table(df: pd.DataFrame, rows: list[tuple[str, pd.Series]], metric: str) -> str:
    """Rows: (name, boolean row selector); columns: the categories present (toy.data's order), then all;
    cells: the finite mean of `metric` (– where undefined, e.g. bg PSNR of grayscale and invert)."""
    from toy.data import CATEGORIES

    present = set(df.category.dropna())
    cats = [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))
    lines = ["| configuration | " + " | ".join(cats) + " | all |", "|---|" + "---|" * (len(cats) + 1)]
    for name, sel in rows:
        part = df[sel]
        if part.empty:
            continue
        cells = []
        for c in cats + [None]:
            v = toy_findings.finite_mean((part if c is None else part[part.category == c])[metric])
            cells.append("–" if math.isnan(v) else f"{v:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _variant_name(omega: float, blur: str | None) -> str:
    return f"ω={omega}{_kernel(blur)}"


def _td_rows(df: pd.DataFrame, omega: float, blur: str | None, reg: bool = True) -> pd.DataFrame:
    blur_col = df["blur"] if "blur" in df else pd.Series(None, index=df.index, dtype=object)
    return df[(df.policy == "tokendrop") & (df.reg == reg) & (df.omega == omega) & _is(blur_col, blur)]


def plots(df: pd.DataFrame, out: Path) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    variants = tokendrop_variants(df)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, metric in zip(axes, ("psnr_bg", "psnr_edit")):
        for reg, style in ((False, "o-"), (True, "s--")):
            part = df[(df.policy == "random") & (df.reg == reg) & df.budget_free]
            g = part.groupby("ratio")[metric].mean()
            ax.plot(g.index, g.values, style, label=f"random, {'with' if reg else 'no'} reg")
        full = df[df.policy == "full"][metric].mean()
        ax.axhline(full, color="k", lw=1, label="full")
        for i, (omega, blur) in enumerate(variants):
            for reg, marker in ((True, "*"), (False, "P")):
                part = _td_rows(df, omega, blur, reg)
                ax.plot(1 - part.keep_ratio_mean.mean(), part[metric].mean(), marker, ms=12, color=f"C{i + 2}",
                        label=f"TokenDrop {_variant_name(omega, blur)}, {'with' if reg else 'no'} reg (mean drop)")
        ax.set(xlabel="drop ratio (mean over steps)", ylabel="dB",
               title={"psnr_bg": "background PSNR vs source", "psnr_edit": "PSNR inside mask vs target"}[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    paths["ratio"] = str(out / "drop_ratio.png")
    fig.savefig(paths["ratio"], dpi=110)
    plt.close(fig)

    omegas = sorted({w for w, _ in variants})
    blurs = list(dict.fromkeys(b for _, b in variants))
    fig, axes = plt.subplots(max(1, len(blurs)), max(1, len(omegas)), figsize=(5.5 * max(1, len(omegas)),
                             4 * max(1, len(blurs))), squeeze=False)
    for (omega, blur) in variants:
        ax = axes[blurs.index(blur)][omegas.index(omega)]
        td = _td_rows(df, omega, blur)
        for cat, part in td.groupby("category"):
            ax.scatter(part.mask_fraction, part.keep_ratio_mean, s=18, label=cat)
        x, y = td.mask_fraction.to_numpy(float), td.keep_ratio_mean.to_numpy(float)
        if len(x) > 1 and np.ptp(x) > 0:
            a, b = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 10)
            ax.plot(xs, a * xs + b, "r-", lw=1.5, label="least squares")
        ax.set(xlabel="edited area (mask fraction)", ylabel="mean keep ratio",
               title=f"TokenDrop ({_variant_name(omega, blur)}, reg): keep ratio vs edit area")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths["area"] = str(out / "keep_vs_area.png")
    fig.savefig(paths["area"], dpi=110)
    plt.close(fig)
    return paths


def correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Pearson r, Spearman ρ); NaN where fewer than 2 points or a constant series."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(x, y)[0, 1]), float(np.corrcoef(rx, ry)[0, 1])


# ------------------------------------------------------------------ the study

def run_study(config: str | Path = CONFIG, out: str | Path | None = None, docs: str | Path = ROOT / "docs",
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
    losses = sparse_context_study.finetune_all(toy.name, out, threads) if sparse_context else {}
    calib = ensure_calibration(toy, out, steps, calibration)
    df, cfg = _claims_grid(config, data, out, steps, toy, calib, threads)
    sparse = sc = None
    if sparse_context:
        sc = add_scores(sparse_context_study.run_grid(data, out, steps, toy, sparse_config, threads,
                                                                sparse_records), data)
        sc["psnr_vs_full"] = fidelity_to_full(sc)
        sc.to_parquet(out / "sparse_scored.parquet")
        bench = Path(multiref_bench)
        sparse = sparse_context_study.section(sc, losses, Path(docs) / "toy-results",
                                              bench.read_text() if bench.exists() else None, toy)
    from studies.toy.picture_grid import study_grid

    edits = study_grid(df, data, Path(docs) / "toy-results" / "edits.png", sc)
    seconds = time.perf_counter() - started
    write_doc(df, Path(docs), cfg, seconds, sparse, model=toy, out=out, calibration=calib, edits=edits)
    return {"doc": str(Path(docs) / "toy-results.md"), "model": toy.name, "size": toy.size, "rows": len(df),
            "seconds": round(seconds)}


def heldout(data: Path, n: int, size: int) -> Path:
    """The held-out split (toy.data seed 1) at the model's size, written once; a split written at another
    size is refused (each model has its own working folder)."""
    from PIL import Image

    from toy.data import write_dataset

    manifest = data / "manifest.jsonl"
    if not manifest.exists():
        return write_dataset(data, n, seed=1, size=size)
    first = json.loads(manifest.read_text().splitlines()[0])
    with Image.open(data / first["image"]) as im:
        if im.size != (size, size):
            raise ValueError(f"{data} holds {im.width}x{im.height} records, the model edits {size}x{size}: "
                             "use another --out")
    return manifest


def _claims_grid(config: str | Path, data: Path, out: Path, steps: int, model: ToyModel,
                 calibration: Path | None = None, threads: int | None = None) -> tuple[pd.DataFrame, Any]:
    """TokenDrop's claims: the ablation grid through the pipeline (and its report), the matched-budget arms
    in-process, every row scored; also written to `out/scored.parquet`. Returns the rows and the grid's config."""
    from pipeline.ray_session import init_ray
    from report import load_results, write_report
    from pipeline.graph import run_ablation

    cfg = study_config(config, model, data, out / "run", steps, calibration, threads=threads)
    init_ray()
    summary = run_ablation(cfg)
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
                                                         "matched_blur": _blur_of(b)})
                                        for r, w, b in zip(matched.reg, matched.matched_omega, matched.matched_blur)])
        df = pd.concat([df, matched], ignore_index=True)
    df = add_scores(df, data)
    df["psnr_vs_full"] = fidelity_to_full(df)
    df["active_fraction"] = active_fraction(df)
    df.to_parquet(out / "scored.parquet")
    return df, cfg


def _matched_label(omega: float, blur: str | None, reg: bool) -> str:
    return label("random", {"budget": 1, "reg": reg, "matched_omega": omega, "matched_blur": blur})


def _per_category(df: pd.DataFrame, omega: float, blur: str | None = None) -> str:
    td_lab = label("tokendrop", {"omega": omega, "reg": True, "blur": blur})
    m_lab = _matched_label(omega, blur, False)
    cats = df.groupby(["category", "label"]).agg(keep=("keep_ratio_mean", "mean"), bg=("psnr_bg", "mean"),
                                                 edit=("psnr_edit", "mean")).reset_index()
    lines = [f"| category | full: edit PSNR | TokenDrop {_variant_name(omega, blur)}+reg: keep ratio | bg PSNR | "
             "edit PSNR | random at its budget, no reg: bg PSNR | edit PSNR |", "|---|---|---|---|---|---|---|"]
    for cat in sorted(df.category.dropna().unique()):
        def get(lab: str, col: str) -> str:
            v = cats[(cats.category == cat) & (cats.label == lab)][col]
            return "–" if v.empty or pd.isna(v.iloc[0]) else f"{v.iloc[0]:.2f}"
        lines.append(f"| {cat} | {get('full', 'edit')} | {get(td_lab, 'keep')} | {get(td_lab, 'bg')} | "
                     f"{get(td_lab, 'edit')} | {get(m_lab, 'bg')} | {get(m_lab, 'edit')} |")
    return "\n".join(lines)


def method_labels(df: pd.DataFrame) -> list[str]:
    """Every configuration's label in the doc's order: full, random by ratio, TokenDrop and its matched arms
    per (ω, kernel), ToPi, SpotEdit."""
    random_labels = [label("random", {"ratio": r, "reg": reg}) for reg in (False, True)
                     for r in sorted(df[(df.policy == "random") & df.ratio.notna()].ratio.unique())]
    td = []
    for omega, blur in tokendrop_variants(df):
        td += [label("tokendrop", {"omega": omega, "reg": True, "blur": blur}),
               label("tokendrop", {"omega": omega, "reg": False, "blur": blur}),
               _matched_label(omega, blur, False), _matched_label(omega, blur, True)]
    others = sorted(df[df.policy.isin(["topi", "spotedit"])].label.unique())
    present = set(df.label)
    return [lab for lab in ["full"] + random_labels + td + others if lab in present]


def _every_method_per_category(df: pd.DataFrame) -> str:
    rows = [(lab, df.label == lab) for lab in method_labels(df)]
    return ("### Every method: bg PSNR vs the source\n\n" + category_table(df, rows, "psnr_bg")
            + "\n\n### Every method: edit PSNR vs the target\n\n" + category_table(df, rows, "psnr_edit"))


def _other_methods(df: pd.DataFrame) -> str:
    labels = sorted(df[df.policy.isin(["topi", "spotedit"])].label.unique())
    if not labels:
        return "No ToPi or SpotEdit rows in this run's grid."
    cols = dict(COLUMNS)
    cols["active_fraction"] = "active noisy"
    return _table(df, ["full"] + labels, cols)


def _per_variant(df: pd.DataFrame, omega: float, blur: str | None = None) -> dict[str, str]:
    """The pieces of the doc for one TokenDrop (ω, kernel): matched-budget table, correlation row,
    per-category table, and the verdict on claim (d)."""
    td = _td_rows(df, omega, blur)
    local = td[~td.category.isin(["grayscale", "invert", "background"])]
    pr, sr = correlation(td.mask_fraction.to_numpy(float), td.keep_ratio_mean.to_numpy(float))
    lpr, lsr = correlation(local.mask_fraction.to_numpy(float), local.keep_ratio_mean.to_numpy(float))
    name = _variant_name(omega, blur)
    return {
        "matched": f"### {name}\n\n" + _table(df, [
            "full", label("tokendrop", {"omega": omega, "reg": True, "blur": blur}),
            _matched_label(omega, blur, False), _matched_label(omega, blur, True),
            label("tokendrop", {"omega": omega, "reg": False, "blur": blur})]),
        "verdict": toy_findings.keep_vs_area(omega, pr, lpr, blur),
        "corr": (f"| {omega} | {blur or 'paper'} | {td.keep_ratio_mean.mean():.3f} | {pr:.2f} | {sr:.2f} | "
                 f"{local.keep_ratio_mean.mean():.3f} | {lpr:.2f} | {lsr:.2f} |"),
        "per_cat": f"### TokenDrop {name}\n\n" + _per_category(df, omega, blur),
    }


def kernels_used(model: ToyModel, df: pd.DataFrame | None = None) -> dict[str, tuple[int, float]]:
    """TokenDrop's (kernel, σ) per `blur` on this model's grid: what the rows applied when they say, else
    what `policies.tokendrop` computes (the paper's 11 and 1.0; `grid` scaled by grid / 64)."""
    from policies.tokendrop import grid_scaled_blur

    used = {"paper": (11, 1.0), "grid": grid_scaled_blur(11, 1.0, (model.grid, model.grid))}
    if df is not None and "policy_applied" in df:
        for pol, applied, blur in zip(df.policy, df.policy_applied, df.get("blur", [None] * len(df))):
            if pol == "tokendrop" and isinstance(applied, str):
                a = json.loads(applied)
                if "kernel" in a:
                    used[_blur_of(blur) or "paper"] = (int(a["kernel"]), float(a["blur_sigma"]))
    return used


def write_doc(df: pd.DataFrame, docs: Path, cfg: Any, seconds: float, sparse: str | None = None,
              model: ToyModel | None = None, out: str | Path = "results/toy", calibration: str | Path | None = None,
              edits: dict[str, Any] | None = None) -> None:
    """`docs/toy-results.md` and its plots (in `docs/toy-results/`)."""
    model = model or ToyModel("toy-flux-kontext", 128)
    paths = plots(df, docs / "toy-results")
    variants = tokendrop_variants(df)
    parts = [_per_variant(df, omega, blur) for omega, blur in variants]
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
    calib = _portable(Path(calibration)) if calibration is not None else f"configs/calibration/{model.name}.json"
    doc = json.loads(Path(calibration).read_text()) if calibration is not None and Path(calibration).is_file() else {}
    made = (f"{doc.get('samples', '?')} records at {doc.get('steps', '?')} steps, full context, layers "
            f"{doc.get('layers', '?')} (the top {doc.get('top_m', '?')} of {len(doc.get('scores', [])) or '?'})"
            if doc else f"{CALIBRATION_RECORDS} records of `toy.data` seed {CALIBRATION_SEED}, full context, the top "
                        f"{CALIBRATION_TOP_M} layers")
    nl = "\n"
    return f"""## (a) Random drop: background PSNR against the drop ratio

{_table(df, ['full'] + [lab for lab in random_labels if 'no reg' in lab])}

![drop ratio](toy-results/{Path(paths['ratio']).name})

## (b) Matched per-sample budgets

The random arms keep exactly as many source tokens per step as TokenDrop (with reg) kept on the same record,
for each ω and blur kernel; "TokenDrop, no reg" chooses its own budget (its own x̂0 differs), so compare its
keep ratio too.

{(nl + nl).join(p['matched'] for p in parts)}

## (c) Random drop with the regularizer (Proposition 1)

{_table(df, ['full'] + [lab for lab in random_labels if 'with reg' in lab])}

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

{_other_methods(df)}

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

{_every_method_per_category(df)}

"""
