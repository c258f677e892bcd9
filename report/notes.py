"""Why a metric has no number: one sentence per (metric, reason) for summary.md.

The table shows `n/a` where a metric could not be computed; a reader needs the reason next to it (no LPIPS
weights, no ground-truth mask, `full` is its own reference, the edit failed). The reasons come from the rows
(each metric's status column, read by the metric's own `why_missing`, and `error`), never from guesses about
numbers."""
from __future__ import annotations

from collections import defaultdict

import pandas as pd

import metrics

from .labels import config_order

Entry = tuple[str, int, int]   # (configuration, edits without the metric, ok edits)


def row_reason(row: pd.Series, column: str) -> str:
    """Why metric column `column` is missing on one ok row: the metric that declares it reads its row."""
    try:
        metric = metrics.metric_of(column)
    except KeyError:
        return "not computed"
    return metric.why_missing(row, column)


def missing_metric_lines(df: pd.DataFrame, columns: list[str], label_col: str = "config_label") -> list[str]:
    """Markdown bullets: every metric that is n/a for some edits, for which configurations and why."""
    found: dict[tuple[str, str], list[Entry]] = defaultdict(list)   # (metric, reason) -> configurations
    labels = config_order(df, label_col)
    for label in labels:
        rows = df[df[label_col] == label]
        ok = rows[rows["status"] == "ok"]
        if ok.empty:
            first = rows["error"].dropna().astype(str).head(1).tolist()
            reason = "every edit failed" + (f" (first error: {first[0][:160]})" if first else "")
            found[("every metric", reason)].append((label, len(rows), len(rows)))
            continue
        for metric in columns:
            nan = ok[ok[metric].isna()] if metric in ok else ok
            if nan.empty:
                continue
            for reason, k in nan.apply(lambda r: row_reason(r, metric), axis=1).value_counts(sort=False).items():
                found[(metric, reason)].append((label, int(k), len(ok)))
    return _merge_lines(found, n_configs=len(labels))


def identical_lines(df: pd.DataFrame, label_col: str = "config_label") -> list[str]:
    """PSNR is infinite where an output equals its reference exactly (e.g. a policy that kept every token
    matches `full`): such edits are left out of the table's mean, and this says how many."""
    lines = []
    for metric in ("psnr_vs_full", "psnr_bg"):
        if metric not in df:
            continue
        ok = df[(df["status"] == "ok") & df[metric].notna()]
        for label in config_order(ok, label_col):
            values = ok.loc[ok[label_col] == label, metric]
            k = int((values == float("inf")).sum())
            if k:
                lines.append(f"- `{metric}` of {label}: {k} of {len(values)} edits are identical to the reference "
                             "(PSNR = ∞); the mean is over the others" + (" (none left: n/a)" if k == len(values)
                                                                            else "") + ".")
    return lines


def _merge_lines(found: dict[tuple[str, str], list[Entry]], n_configs: int) -> list[str]:
    # metrics with the same reason for the same configurations share one line
    merged: dict[tuple[str, tuple[Entry, ...]], list[str]] = defaultdict(list)
    for (metric, reason), entries in found.items():
        merged[(reason, tuple(entries))].append(metric)
    lines = []
    for (reason, entries), columns in merged.items():
        names = ", ".join(m if m == "every metric" else f"`{m}`" for m in columns)
        counts = {(k, n) for _, k, n in entries}
        if len(entries) == n_configs and len(counts) == 1:
            k, n = counts.pop()
            scope = "every configuration" + ("" if k == n else f" ({k} of {n} edits each)")
        else:
            scope = "; ".join(f"{label} ({k} of {n} edits)" for label, k, n in entries)
        lines.append(f"- {names}: n/a for {scope}. Why: {reason}.")
    return lines
