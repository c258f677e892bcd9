"""The Sparse Context section of `docs/toy-results.md`: quality per budget and strategy, the decoupling test, the
adaptive budget, per category, the plot and the verdicts, written from the scored rows."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from studies.sparse_context.run import FINETUNES
from studies.toy.findings import finite_mean

MODELS = {"toy": "shipped (never trained with drop)", "toy-ft-nodrop": "fine-tuned further, no drop",
          "toy-ft-drop": "fine-tuned further, random drop"}


STRATEGIES = ("random", "residual", "attention", "saliency")


METRICS = {"psnr_bg": "bg PSNR", "psnr_edit": "edit PSNR vs target", "psnr_vs_full": "PSNR vs its full"}


def _mean(part: pd.DataFrame, col: str) -> float:
    return finite_mean(part[col])


def _fmt(v: float, digits: int = 2) -> str:
    return "–" if not np.isfinite(v) else f"{v:.{digits}f}"


def quality_table(df: pd.DataFrame, metric: str) -> str:
    """Rows: strategy; columns: model x fixed keep ratio; cells: mean `metric`."""
    keeps = sorted(df.keep.dropna().unique(), reverse=True)
    models = [m for m in MODELS if m in set(df.model)]
    head = "| strategy | " + " | ".join(f"{m}, keep {k:.2f}" for m in models for k in keeps) + " |"
    lines = [head, "|---|" + "---|" * (len(models) * len(keeps))]
    full = "| full (every token) | " + " | ".join(
        _fmt(_mean(df[(df.model == m) & (df.policy == "full")], metric)) for m in models for _ in keeps) + " |"
    lines.append(full)
    for s in STRATEGIES:
        cells = [_fmt(_mean(df[(df.model == m) & (df.strategy == s) & (df.keep == k)], metric))
                 for m in models for k in keeps]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def decoupling_table(df: pd.DataFrame) -> str:
    """Best task-aware strategy minus random, at identical budgets, per model (the reviewers' test)."""
    keeps = sorted(df.keep.dropna().unique(), reverse=True)
    models = [m for m in MODELS if m in set(df.model)]
    lines = ["| model | keep | random: edit PSNR | best task-aware | its edit PSNR | gap (dB) | "
             "spread of the 4 strategies (dB) |", "|---|---|---|---|---|---|---|"]
    for m in models:
        for k in keeps:
            means = {s: _mean(df[(df.model == m) & (df.strategy == s) & (df.keep == k)], "psnr_edit")
                     for s in STRATEGIES}
            aware = {s: v for s, v in means.items() if s != "random" and np.isfinite(v)}
            if not aware or not np.isfinite(means["random"]):
                continue
            best = max(aware, key=aware.get)
            spread = max(means.values()) - min(means.values())
            lines.append(f"| {m} | {k:.2f} | {_fmt(means['random'])} | {best} | {_fmt(aware[best])} | "
                         f"{aware[best] - means['random']:+.2f} | {spread:.2f} |")
    return "\n".join(lines)


def adaptive_table(df: pd.DataFrame) -> str:
    models = [m for m in MODELS if m in set(df.model)]
    lines = ["| model | budget | reference kept | bg PSNR | edit PSNR vs target | PSNR vs its full |",
             "|---|---|---|---|---|---|"]
    for m in models:
        for lab in sorted(df[(df.model == m) & df.adaptive].label.unique()):
            part = df[(df.model == m) & (df.label == lab)]
            lines.append(f"| {m} | {lab} | {_fmt(_mean(part, 'reference_kept'), 3)} | {_fmt(_mean(part, 'psnr_bg'))} | "
                         f"{_fmt(_mean(part, 'psnr_edit'))} | {_fmt(_mean(part, 'psnr_vs_full'))} |")
    return "\n".join(lines)


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in MODELS if m in set(df.model)]
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], models):
        for s in STRATEGIES:
            part = df[(df.model == m) & (df.strategy == s) & df.keep.notna()]
            g = part.groupby("keep").psnr_edit.mean().sort_index()
            ax.plot(g.index, g.values, "o-", label=s)
        ax.axhline(_mean(df[(df.model == m) & (df.policy == "full")], "psnr_edit"), color="k", lw=1, label="full")
        ax.set(title=f"{m}: {MODELS[m]}", xlabel="reference tokens kept after warm-up", ylabel="edit PSNR vs target (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _verdict(gains: list[float]) -> str:
    return "**helps**" if all(g > 0 for g in gains) else "**hurts**" if all(g < 0 for g in gains) else "**no consistent effect**"


def findings(df: pd.DataFrame) -> str:
    """Verdicts on the fine-tuning and decoupling claims, computed from the rows: the drop fine-tune against
    the no-drop one on the edit (vs the exact target) and on robustness (vs the same model's `full`)."""
    keeps = sorted(df.keep.dropna().unique(), reverse=True)
    if not {"toy-ft-drop", "toy-ft-nodrop"} <= set(df.model):
        return "- The fine-tuned copies are missing from this run: no verdict."

    def mean(m: str, s: str, k: float, col: str = "psnr_edit") -> float:
        return _mean(df[(df.model == m) & (df.strategy == s) & (df.keep == k)], col)

    lines = []
    for col, what in (("psnr_edit", "edit PSNR vs the target"), ("psnr_vs_full", "PSNR vs its own `full`")):
        for s in STRATEGIES:
            gains = [mean("toy-ft-drop", s, k, col) - mean("toy-ft-nodrop", s, k, col) for k in keeps]
            lines.append(f"- Fine-tuning with random drop vs without, `{s}` selection, {what}: {_verdict(gains)} ("
                         + ", ".join(f"{g:+.2f} dB at keep {k:.2f}" for g, k in zip(gains, keeps)) + ").")
    spread = {m: float(np.mean([max(mean(m, s, k) for s in STRATEGIES) - min(mean(m, s, k) for s in STRATEGIES)
                                for k in keeps])) for m in MODELS if m in set(df.model)}
    ok = spread["toy-ft-drop"] < min(v for m, v in spread.items() if m != "toy-ft-drop")
    lines.append("- Decoupling (after fine-tuning with random drop, the selection rule matters less): "
                 + ("**reproduces**" if ok else "**does not reproduce**") + " (mean spread of the four strategies' "
                 "edit PSNR at identical budgets: " + ", ".join(f"`{m}` {v:.2f} dB" for m, v in spread.items()) + ").")
    full = {m: _mean(df[(df.model == m) & (df.policy == "full")], "psnr_edit") for m in spread}
    lines.append("- With every token (`full`), edit PSNR: " + ", ".join(f"`{m}` {v:.2f} dB" for m, v in full.items())
                 + ": what training with drop costs, or not, when nothing is dropped.")
    return "\n".join(lines)


def _loss_line(label: str, summary: dict[str, Any]) -> str:
    """One fine-tune: steps, wall time and its validation loss at each reference-drop ratio."""
    steps = summary.get("train_config", {}).get("transformer", {}).get("steps", "?")
    sweep = summary.get("val_sweep") or {}
    losses = " / ".join(f"{float(v):.3f}" for v in sweep.values())
    return (f"- `{label}`: {steps} steps in {float(summary.get('wall_s', float('nan'))) / 60:.0f} min; validation "
            f"flow-matching loss with {' / '.join(sweep)} of the source tokens dropped: {losses}\n")


def section(df: pd.DataFrame, losses: dict[str, dict[str, Any]], img: Path, bench: str | None,
            model: Any = None) -> str:
    """The doc section for `docs/toy-results.md` (`model`: the `studies.toy.models.ToyModel` it ran on)."""
    from studies.toy.models import ToyModel

    model = model or ToyModel("toy-flux-kontext", 128)
    plot(df, img / "sparse_context.png")
    n = df[df.policy == "full"].record_id.nunique()
    return f"""## Sparse Context (seed paper 003, "Keep The Essentials")

{_setup(df, losses, n, model)}
### Findings

Computed from the tables below. `residual` and `saliency` keep spatially clustered sets (the edited region,
the objects' edges), the opposite of the uniform masks seen in training; `attention` keeps what the noisy
tokens read, which is spread over the image.

{findings(df)}

### Edit PSNR vs the exact target, per strategy and budget

{quality_table(df, 'psnr_edit')}

### Background PSNR vs the source

{quality_table(df, 'psnr_bg')}

### PSNR vs the same model's `full` output

{quality_table(df, 'psnr_vs_full')}

![sparse context](toy-results/sparse_context.png)

### Random vs task-aware selection at identical budgets

The decoupling claim predicts a small gap (and spread) on `toy-ft-drop`; on `toy` and `toy-ft-nodrop`
the rule may matter more.

{decoupling_table(df)}

### Adaptive budget

{adaptive_table(df)}

### Per category

{per_category(df)}

### Speed: single vs multi-reference

{_speed(bench)}
"""


def _setup(df: pd.DataFrame, losses: dict[str, dict[str, Any]], n: int, model: Any) -> str:
    """The section's opening: the three models, the fine-tunes' losses, the strategies and budgets."""
    configs = FINETUNES.get(model.name, {})
    names = " and ".join(f"`configs/{p.name}`" for p in configs.values()) or "(none)"
    tokens = model.tokens
    return f"""\
Three models on the same {n} held-out records: `toy` is the shipped `{model.name}`; `toy-ft-nodrop` and
`toy-ft-drop` continue its training from the same weights, on the same data, for the same number of steps, and
differ only in the random reference drop ({names}: per sample a ratio from U[0, 0.95], the dropped source tokens
masked out of every attention). The fine-tunes:

{''.join(_loss_line(k, v) for k, v in losses.items())}
`sparse_context` runs 2 full warm-up steps, then keeps one fixed subset of the {tokens} source tokens
({model.grid}x{model.grid}) for the other {int(df.steps.dropna().iloc[0]) - 2} steps: `random` (the training
distribution), `residual` (|x̂0 − z_src| at the end of warm-up), `attention` (attention mass from noisy
queries at warm-up), `saliency` (the source latent's norm about its mean). Every strategy keeps exactly
⌈keep·{tokens}⌉ tokens, so the budgets are identical. PSNR in dB, means over records; `PSNR vs its full`
compares with the same model's `full` output.
"""


def per_category(df: pd.DataFrame, keep: float | None = None) -> str:
    """bg and edit PSNR per category for every model: `full`, each strategy at one fixed budget (`keep`, else
    the middle one of the grid) and the adaptive budgets."""
    from studies.toy.tables import category_table

    keeps = sorted(df.keep.dropna().unique(), reverse=True)
    if keep is None and keeps:
        keep = keeps[len(keeps) // 2]
    rows = []
    for m in [m for m in MODELS if m in set(df.model)]:
        rows.append((f"{m}: full", (df.model == m) & (df.policy == "full")))
        if keep is not None:
            rows += [(f"{m}: {s}, keep {keep:.2f}", (df.model == m) & (df.strategy == s) & (df.keep == keep))
                     for s in STRATEGIES]
        rows += [(f"{m}: {lab}", (df.model == m) & (df.label == lab))
                 for lab in sorted(df[(df.model == m) & df.adaptive].label.unique())]
    return ("bg PSNR vs the source:\n\n" + category_table(df, rows, "psnr_bg")
            + "\n\nEdit PSNR vs the target:\n\n" + category_table(df, rows, "psnr_edit"))


def _speed(bench: str | None) -> str:
    """The multi-reference speed table of the benchmark's summary when there is one, its headings nested here."""
    if bench:
        return ("Timed by the benchmark, not on the toy model (a Kontext model takes one reference): "
                "quoted from its summary.\n\n" + re.sub(r"^#+ ", "#### ", bench.strip(), flags=re.M))
    return ("Not measured for this run: `dropedit bench --model qwen-plus --references 1,3 ...` writes it "
            "(see `docs/benchmark.md`), then re-run this command.")
