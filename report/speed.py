"""Speedups from a run's own timings: each configuration's edit paired with `full` on the same record.

The pipeline runs a record's `full` and its variants back to back on one actor (`pipeline.units`) and puts the
ratio in the row (`speedup_vs_full`); rows written before that are paired here by record. A run is still not
a benchmark (the machine may be doing other work), so a single pair's ratio can be far off: the report gives
the median of per-record ratios with its spread and count, and says when not to trust it; `dropedit bench` is
where speed is measured."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

# A row and its `full` reference must agree on all of these to form a pair.
PAIR_KEYS = ["record_id", "model", "height", "width", "seed", "steps", "guidance_scale"]
MIN_PAIRS = 5           # fewer pairs than this: the median says little
MAX_REL_IQR = 0.20      # p25-p75 wider than this fraction of the median: too noisy to quote
MAX_GAP_S = 300.0       # pair members started further apart than this: the machine may have changed
STATS = ["speedup_median", "speedup_p25", "speedup_p75", "speedup_n"]


def paired_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ok edit that has an ok `full` partner: `ratio` = full time / this time.

    Times are the denoising loop (`loop_s`) when both have one, else the whole edit (`runtime_s`).
    Also `gap_s` (seconds between the two starts) and `same_device`."""
    ok = df[df["status"] == "ok"]
    keys = [k for k in PAIR_KEYS if k in ok]
    cols = keys + [c for c in ("loop_s", "runtime_s", "started_at", "device") if c in ok]
    full = ok.loc[ok["policy"] == "full", cols].drop_duplicates(keys)
    pairs = ok.merge(full, on=keys, how="inner", suffixes=("", "_full"))
    loop = _col(pairs, "loop_s"), _col(pairs, "loop_s_full")
    run = _col(pairs, "runtime_s"), _col(pairs, "runtime_s_full")
    use_loop = loop[0].notna() & loop[1].notna() & (loop[0] > 0)
    mine = np.where(use_loop, loop[0], run[0])
    ref = np.where(use_loop, loop[1], run[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        pairs["ratio"] = np.where(mine > 0, ref / mine, np.nan)
    in_unit = _col(pairs, "speedup_vs_full")   # timed in the same unit on the same actor: the better pair
    pairs["ratio"] = np.where(in_unit.notna(), in_unit, pairs["ratio"])
    pairs["gap_s"] = _gap_seconds(pairs)
    a, b = _col(pairs, "device"), _col(pairs, "device_full")
    pairs["same_device"] = a.isna() | b.isna() | (a.astype(object) == b.astype(object))   # unknown is no evidence
    return pairs[np.isfinite(pairs["ratio"].astype(float))]


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(np.nan, index=df.index)


def _gap_seconds(pairs: pd.DataFrame) -> pd.Series:
    if "started_at" not in pairs or "started_at_full" not in pairs:
        return pd.Series(np.nan, index=pairs.index)
    a = pd.to_datetime(pairs["started_at"], utc=True)
    b = pd.to_datetime(pairs["started_at_full"], utc=True)
    return (a - b).abs().dt.total_seconds()


def speedup_stats(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of `by`: median, p25, p75 and count of the paired ratios, the largest start gap and
    whether any pair ran on two devices. Groups without a pair are absent."""
    pairs = paired_ratios(df)
    if pairs.empty:
        return pd.DataFrame(columns=[*by, *STATS, "max_gap_s", "devices_differ"])
    grouped = pairs.groupby(list(by), dropna=False)
    out = grouped["ratio"].agg(
        speedup_median="median", speedup_p25=lambda r: r.quantile(0.25),
        speedup_p75=lambda r: r.quantile(0.75), speedup_n="count")
    out["max_gap_s"] = grouped["gap_s"].max()
    out["devices_differ"] = ~grouped["same_device"].all()
    return out.reset_index()


def trust_problems(row: pd.Series) -> list[str]:
    """Why one configuration's speedup cannot be trusted (empty: no reason found)."""
    problems = []
    n, median = int(row["speedup_n"]), float(row["speedup_median"])
    if n < MIN_PAIRS:
        problems.append(f"only {n} paired record{'s' if n != 1 else ''} (< {MIN_PAIRS})")
    spread = float(row["speedup_p75"]) - float(row["speedup_p25"])
    if median > 0 and spread > MAX_REL_IQR * median:
        problems.append(f"p25-p75 spread {spread:.2f} is {spread / median:.0%} of the median (> {MAX_REL_IQR:.0%})")
    if bool(row.get("devices_differ", False)):
        problems.append("pairs ran on different devices")
    gap = row.get("max_gap_s")
    if gap is not None and np.isfinite(gap) and gap > MAX_GAP_S:
        problems.append(f"pairs started up to {gap / 60:.0f} min apart")
    return problems


def speed_notes(stats: pd.DataFrame, label_col: str = "label") -> list[str]:
    """Markdown lines: how the speedups were made, one per configuration, a warning per untrustworthy one,
    the caveat about where they were timed, and the machine the report (not the run) is on."""
    lines = ["Speedup = median over records of (full time / configuration time) on the same record, seed "
             "and steps; denoising loop only (`loop_s`; whole edit where missing); n = paired records."]
    warnings = []
    for _, row in stats.iterrows():
        if row.get("policy") == "full":
            lines.append(f"- {row[label_col]}: the reference (1.00x by definition, n={int(row['speedup_n'])})")
            continue
        lines.append(f"- {row[label_col]}: {row['speedup_median']:.2f}x (p25-p75 {row['speedup_p25']:.2f}-"
                     f"{row['speedup_p75']:.2f}, n={int(row['speedup_n'])})")
        problems = trust_problems(row)
        if problems:
            warnings.append(f"WARNING: the speedup of {row[label_col]} ({row['speedup_median']:.2f}x) cannot be "
                            f"trusted: {'; '.join(problems)}.")
    if stats.empty:
        lines.append("- no configuration has a `full` edit of the same record to compare with")
    lines += warnings
    if not stats.empty:
        lines.append("Each pair ran back to back on one actor (a record's `full` and its other configurations form "
                     "one unit of work; rows from runs before that are paired by record across actors and times), "
                     "on a machine that may have been loaded by other work; they are not a benchmark. Speed is "
                     "measured with `dropedit bench`.")
    lines.append(machine_line())
    return lines


def machine_line() -> str:
    """CPUs and load *now*; said so, since the timings were taken earlier under an unknown load."""
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:   # not every platform has a load average
        load = "unknown"
    return (f"This report was written on a machine with {os.cpu_count()} CPUs and load average {load} "
            "(1/5/15 min) at report time; that is not necessarily the machine or the load the timings saw.")
