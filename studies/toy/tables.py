"""The study's Markdown tables: per configuration, per category, per TokenDrop variant."""
from __future__ import annotations

import math

import pandas as pd

from studies.toy import findings as toy_findings
from studies.toy.labels import (
    label,
    matched_label,
    method_labels,
    td_rows,
    variant_name,
)
from studies.toy.scoring import correlation

COLUMNS = {"keep_ratio_mean": "keep ratio", "psnr_bg": "bg PSNR ↑", "psnr_edit": "edit PSNR vs target ↑",
           "psnr_mask_vs_source": "in-mask PSNR vs source", "psnr_vs_full": "PSNR vs full ↑"}


def table(df: pd.DataFrame, labels: list[str], cols: dict[str, str] = COLUMNS) -> str:
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


def _per_category(df: pd.DataFrame, omega: float, blur: str | None = None) -> str:
    td_lab = label("tokendrop", {"omega": omega, "reg": True, "blur": blur})
    m_lab = matched_label(omega, blur, False)
    cats = df.groupby(["category", "label"]).agg(keep=("keep_ratio_mean", "mean"), bg=("psnr_bg", "mean"),
                                                 edit=("psnr_edit", "mean")).reset_index()
    lines = [f"| category | full: edit PSNR | TokenDrop {variant_name(omega, blur)}+reg: keep ratio | bg PSNR | "
             "edit PSNR | random at its budget, no reg: bg PSNR | edit PSNR |", "|---|---|---|---|---|---|---|"]
    for cat in sorted(df.category.dropna().unique()):
        def get(lab: str, col: str) -> str:
            v = cats[(cats.category == cat) & (cats.label == lab)][col]
            return "–" if v.empty or pd.isna(v.iloc[0]) else f"{v.iloc[0]:.2f}"
        lines.append(f"| {cat} | {get('full', 'edit')} | {get(td_lab, 'keep')} | {get(td_lab, 'bg')} | "
                     f"{get(td_lab, 'edit')} | {get(m_lab, 'bg')} | {get(m_lab, 'edit')} |")
    return "\n".join(lines)


def every_method_per_category(df: pd.DataFrame) -> str:
    rows = [(lab, df.label == lab) for lab in method_labels(df)]
    return ("### Every method: bg PSNR vs the source\n\n" + category_table(df, rows, "psnr_bg")
            + "\n\n### Every method: edit PSNR vs the target\n\n" + category_table(df, rows, "psnr_edit"))


def other_methods(df: pd.DataFrame) -> str:
    labels = sorted(df[df.policy.isin(["topi", "spotedit"])].label.unique())
    if not labels:
        return "No ToPi or SpotEdit rows in this run's grid."
    cols = dict(COLUMNS)
    cols["active_fraction"] = "active noisy"
    return table(df, ["full"] + labels, cols)


def per_variant(df: pd.DataFrame, omega: float, blur: str | None = None) -> dict[str, str]:
    """The pieces of the doc for one TokenDrop (ω, kernel): matched-budget table, correlation row,
    per-category table, and the verdict on claim (d)."""
    td = td_rows(df, omega, blur)
    local = td[~td.category.isin(["grayscale", "invert", "background"])]
    pr, sr = correlation(td.mask_fraction.to_numpy(float), td.keep_ratio_mean.to_numpy(float))
    lpr, lsr = correlation(local.mask_fraction.to_numpy(float), local.keep_ratio_mean.to_numpy(float))
    name = variant_name(omega, blur)
    return {
        "matched": f"### {name}\n\n" + table(df, [
            "full", label("tokendrop", {"omega": omega, "reg": True, "blur": blur}),
            matched_label(omega, blur, False), matched_label(omega, blur, True),
            label("tokendrop", {"omega": omega, "reg": False, "blur": blur})]),
        "verdict": toy_findings.keep_vs_area(omega, pr, lpr, blur),
        "corr": (f"| {omega} | {blur or 'paper'} | {td.keep_ratio_mean.mean():.3f} | {pr:.2f} | {sr:.2f} | "
                 f"{local.keep_ratio_mean.mean():.3f} | {lpr:.2f} | {lsr:.2f} |"),
        "per_cat": f"### TokenDrop {name}\n\n" + _per_category(df, omega, blur),
    }
