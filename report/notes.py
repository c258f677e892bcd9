"""Why a metric has no number: one sentence per (metric, reason) for summary.md.

The table shows `n/a` where a metric could not be computed; a reader needs the reason next to it (no LPIPS
weights, no ground-truth mask, `full` is its own reference, the edit failed). The reasons come from the rows
(`lpips_status`, `clip_status`, `structure_status`, `judge_status`, `error`), never from guesses about numbers."""
from __future__ import annotations

import re
from collections import defaultdict

import pandas as pd

from .labels import config_order

BACKGROUND = ("psnr_bg", "ssim_bg", "mse_bg")
VS_FULL = ("psnr_vs_full", "ssim_vs_full", "lpips_vs_full")
NO_MASK = ("no background to score: the record has no ground-truth mask, or its mask covers the whole image "
           "(a global edit such as grayscale), or `background` is not in metrics.compute")
NO_FULL = "no `full` output of the same record to compare with (or `vs_full` not in metrics.compute)"
CLIP = ("clip_whole", "clip_edited")
JUDGE = ("judge_sc", "judge_pq", "judge_overall", "judge_imgedit_avg")
Entry = tuple[str, int, int]   # (configuration, edits without the metric, ok edits)
# lpips_status joins per-target messages as "bg: ...; vs_full: ..." (pipeline/edit_stage.py)
_PART = re.compile(r"; (?=(?:bg|vs_full): )")


def lpips_reason(status: object, metric: str) -> str:
    """The part of an `lpips_status` that concerns `metric` (`lpips_bg` or `lpips_vs_full`)."""
    if not isinstance(status, str) or not status.strip():
        return "no reason recorded (empty lpips_status)"
    target = "bg" if metric == "lpips_bg" else "vs_full"
    parts = _PART.split(status)
    mine = [p.split(": ", 1)[1] for p in parts if p.startswith(f"{target}: ")]
    plain = [p for p in parts if not p.startswith(("bg: ", "vs_full: "))]
    return "; ".join(mine or plain or parts)


def status_reason(status: object, metric: str, column: str) -> str:
    """Why `metric` is missing, from its `*_status` column; "ok; clip_edited: <why>" names one metric only."""
    if not isinstance(status, str) or not status.strip():
        return f"no reason recorded (no {column}: rows written before the metric existed?)"
    prefix = f"ok; {metric}: "
    return status[len(prefix):] if status.startswith(prefix) else status


def row_reason(row: pd.Series, metric: str) -> str:
    """Why `metric` is missing on one ok row."""
    if metric in VS_FULL and row.get("policy") == "full":
        return "full is the reference"
    if metric == "lpips_bg" and pd.isna(row.get("psnr_bg")):
        return NO_MASK
    if metric in CLIP:
        return "CLIP " + status_reason(row.get("clip_status"), metric, "clip_status")
    if metric in JUDGE:
        return judge_reason(row, metric)
    if metric == "structure_distance":
        return "structure distance " + status_reason(row.get("structure_status"), metric, "structure_status")
    if metric.startswith("lpips"):
        return "LPIPS " + lpips_reason(row.get("lpips_status"), metric)
    if metric in BACKGROUND:
        return NO_MASK
    if metric in VS_FULL:
        reason = lpips_reason(row.get("lpips_status"), "lpips_vs_full")
        return reason if reason.startswith("no full output") else NO_FULL
    return "not computed"


def judge_reason(row: pd.Series, metric: str) -> str:
    """Why a judge score is missing: its `judge_status`, or the other protocol's score when the judge was ok."""
    status, protocol = row.get("judge_status"), row.get("judge_protocol")
    if status == "ok" and isinstance(protocol, str):
        other = "viescore" if metric == "judge_imgedit_avg" else "imgedit"
        if other == protocol:
            return f"the VLM judge ran the {protocol} protocol (metrics.judge.protocol), which has no `{metric}`"
    return "VLM judge " + status_reason(status, metric, "judge_status")


def missing_metric_lines(df: pd.DataFrame, metrics: list[str], label_col: str = "config_label") -> list[str]:
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
        for metric in metrics:
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
    for (reason, entries), metrics in merged.items():
        names = ", ".join(m if m == "every metric" else f"`{m}`" for m in metrics)
        counts = {(k, n) for _, k, n in entries}
        if len(entries) == n_configs and len(counts) == 1:
            k, n = counts.pop()
            scope = "every configuration" + ("" if k == n else f" ({k} of {n} edits each)")
        else:
            scope = "; ".join(f"{label} ({k} of {n} edits)" for label, k, n in entries)
        lines.append(f"- {names}: n/a for {scope}. Why: {reason}.")
    return lines
