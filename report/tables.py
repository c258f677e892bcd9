"""The report's table and summary.md, and `write_report`, which writes everything.

Parts: names of configurations (labels), paired speedups and their caveats (speed), reasons for missing
metrics (notes), plots (plots), the image grids (grid)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

import metrics

from .labels import config_labels, config_order
from .notes import identical_lines, missing_metric_lines
from .speed import STATS, speed_notes, speedup_stats

GROUP = ["model", "policy", "policy_params", "height", "width"]
TABLE_FIELDS = ("model", "height", "width")   # a table row spans seeds: only these may go into its name


def report_metrics() -> list[str]:
    """The numbers the table averages: every registered metric's reported columns (`metrics`), read now."""
    return metrics.reported_columns()


def load_results(results: str, storage: Any = None) -> pd.DataFrame:
    from pipeline.resume import latest_rows, read_results

    table = read_results(results, storage)
    if table is None:
        raise ValueError(f"no Parquet results under {results!r}")
    return latest_rows(table).to_pandas()


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """`table_label` names a table row (any seed); `config_label` one configuration (adds seed, steps)."""
    df = df.copy()
    for metric in report_metrics():   # results written before a metric existed: its column is all n/a
        if metric not in df:
            df[metric] = np.nan
    df["table_label"] = config_labels(df, TABLE_FIELDS)
    df["config_label"] = config_labels(df)
    return df


def finite_mean(values: pd.Series) -> float:
    """Mean over finite values: an output identical to its reference has PSNR = ∞ (counted in the notes)."""
    finite = values[np.isfinite(values.astype(float))]
    return float(finite.mean()) if len(finite) else float("nan")


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per model x policy x size: edits, errors, times, paired speedup vs full, keep ratio and metrics.

    The speedup is the median over records of full's time / this configuration's time on the same record,
    seed and steps (`loop_s`, the denoising loop; `runtime_s` where missing), with p25, p75 and n."""
    df = df if "table_label" in df else _with_labels(df)
    ok, measured = df[df["status"] == "ok"].copy(), report_metrics()
    if "loop_s" not in ok or ok["loop_s"].isna().all():
        ok["loop_s"] = ok["runtime_s"]
    agg = ok.groupby(GROUP, dropna=False).agg(
        label=("table_label", "first"), edits=("record_id", "count"), runtime_s=("runtime_s", "mean"),
        loop_s=("loop_s", "median"), keep_ratio=("keep_ratio_mean", "mean"),
        **{m: (m, finite_mean) for m in measured}).reset_index()
    errors = df[df["status"] != "ok"].groupby(GROUP, dropna=False).agg(
        errors=("record_id", "count"), error_label=("table_label", "first")).reset_index()
    agg = agg.merge(errors, on=GROUP, how="outer")   # a configuration whose every edit failed still shows
    agg["label"] = agg["label"].fillna(agg["error_label"])
    agg = agg.fillna({"errors": 0, "edits": 0}).astype({"errors": int, "edits": int})
    agg = agg.merge(speedup_stats(df, GROUP)[GROUP + STATS], on=GROUP, how="left")
    agg["speedup_n"] = agg["speedup_n"].fillna(0).astype(int)   # no pair is a count of 0, not a missing number
    cols = ["label"] + GROUP + ["edits", "errors", "runtime_s", "loop_s"] + STATS + ["keep_ratio"] + measured
    order = {label: i for i, label in enumerate(config_order(agg, "label"))}
    agg = agg.sort_values(["model", "height", "width", "label"],
                          key=lambda col: col.map(order) if col.name == "label" else col)
    return agg[cols].reset_index(drop=True)


def markdown(table: pd.DataFrame, df: pd.DataFrame) -> str:
    """summary.md: the table (n/a = not computed), why each n/a, and how far to trust the speedups."""
    shown = table.drop(columns=["policy", "policy_params"]).astype(object)
    shown = shown.where(shown.notna(), None)   # tabulate prints None as missingval, NaN as "nan"
    parts = ["# dropedit report", "", shown.to_markdown(index=False, floatfmt=".4g", missingval="n/a"), ""]
    notes = missing_metric_lines(df, report_metrics(), "table_label") + identical_lines(df, "table_label")
    if notes:
        parts += ["## Metrics not computed (n/a above)", "",
                  "No number is filled in; means are over the edits that have the metric.", "", *notes, ""]
    stats = speedup_stats(df, GROUP + ["table_label"]).rename(columns={"table_label": "label"})
    order = {label: i for i, label in enumerate(config_order(table, "label"))}
    stats = stats.sort_values("label", key=lambda col: col.map(order))
    parts += ["## Speedups", *_paragraphs(speed_notes(stats)), ""]
    return "\n".join(parts)


def _paragraphs(lines: list[str]) -> list[str]:
    # bullets stay one list; every other line is its own paragraph
    out: list[str] = []
    for line in lines:
        out += [line] if line.startswith("- ") and out and out[-1].startswith("- ") else ["", line]
    return out


def write_report(results: str, out: str, storage: Any = None, sheet_records: int = 8) -> dict[str, str]:
    """Write summary.md/.csv, the two plots, the labelled grid and the keep-mask sheet; return their paths."""
    from .grid import write_grids
    from .plots import keep_ratio_plot, speedup_plot

    os.makedirs(out, exist_ok=True)
    df = _with_labels(load_results(results, storage))
    table = summary_table(df)
    files = {"markdown": os.path.join(out, "summary.md"), "csv": os.path.join(out, "summary.csv")}
    text = markdown(table, df)
    with open(files["markdown"], "w") as f:
        f.write(text)
    table.to_csv(files["csv"], index=False)
    print(text.replace("  \n", "\n"))
    order = config_order(table, "label")
    for path in (speedup_plot(table, order, out), keep_ratio_plot(df, order, out, "table_label")):
        files[os.path.basename(path)] = path
    grids = write_grids(df, results, out, sheet_records, storage)
    if "images" in grids:
        files["contact_sheet"] = grids["images"]
    if "masks" in grids:
        files["masks"] = grids["masks"]
    return files
