"""The report's two plots, one colour and marker per configuration, the same in both and in a legend."""
from __future__ import annotations

import os
from itertools import cycle

import numpy as np
import pandas as pd

MARKERS = "osD^vP*Xh<>p"


def styles(labels: list[str]) -> dict[str, dict[str, object]]:
    """label -> matplotlib colour and marker, distinct for up to 10 labels; `full` (the reference) black."""
    import matplotlib

    colours = cycle(matplotlib.colormaps["tab10"].colors)
    markers = cycle(MARKERS)
    out: dict[str, dict[str, object]] = {}
    for label in labels:
        colour, marker = next(colours), next(markers)
        out[label] = {"color": "black" if label.split(" ")[0] == "full" else colour, "marker": marker}
    return out


def speedup_plot(table: pd.DataFrame, order: list[str], out: str, label_col: str = "label") -> str:
    """speedup_vs_psnr_bg.png (see `speedup_figure`)."""
    return _save(speedup_figure(table, order, label_col), os.path.join(out, "speedup_vs_psnr_bg.png"))


def speedup_figure(table: pd.DataFrame, order: list[str], label_col: str = "label"):
    """Background PSNR against the paired speedup, p25-p75 as horizontal bars, one point per configuration."""
    fig, ax = _figure()
    style, skipped = styles(order), []
    for label in order:
        row = table[table[label_col] == label].iloc[0]
        x, y = row.get("speedup_median", np.nan), row.get("psnr_bg", np.nan)
        if not (np.isfinite(x) and np.isfinite(y)):
            skipped.append(label)
            continue
        xerr = [[x - row["speedup_p25"]], [row["speedup_p75"] - x]]
        ax.errorbar(x, y, xerr=xerr, linestyle="none", markersize=8, capsize=3,
                    label=f"{label} (n={int(row['speedup_n'])} pairs)", **style[label])
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("speedup vs full (×; median of per-record loop-time ratios, bars p25–p75)")
    ax.set_ylabel("background PSNR vs source (dB)")
    ax.set_title("Quality vs speed (run timings, not a benchmark)", fontsize=10)
    if skipped:   # say what is missing instead of silently dropping it
        ax.text(0.01, 0.01, "not plotted (no speedup or no background PSNR): " + ", ".join(skipped),
                transform=ax.transAxes, fontsize=7, va="bottom", wrap=True)
    _legend(ax)
    return fig


def keep_ratio_plot(df: pd.DataFrame, order: list[str], out: str, label_col: str = "config_label") -> str:
    """keep_ratio_per_step.png (see `keep_ratio_figure`)."""
    return _save(keep_ratio_figure(df, order, label_col), os.path.join(out, "keep_ratio_per_step.png"))


def keep_ratio_figure(df: pd.DataFrame, order: list[str], label_col: str = "config_label"):
    """Mean fraction of source tokens kept at each step, one line per configuration (shaded: min-max)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure()
    style = styles(order)
    ok = df[df["status"] == "ok"]
    for label in order:
        steps = [np.asarray(v, float) for v in ok.loc[ok[label_col] == label, "keep_ratio_per_step"]
                 if v is not None and len(v)]
        if not steps:
            continue
        length = min(len(s) for s in steps)   # configurations of one label share `steps`; guard anyway
        values = np.stack([s[:length] for s in steps])
        x = np.arange(1, length + 1)
        ax.plot(x, values.mean(0), label=f"{label} (n={len(steps)} edits)", linewidth=1.5, markersize=4,
                **style[label])
        if len(steps) > 1:
            ax.fill_between(x, values.min(0), values.max(0), color=style[label]["color"], alpha=0.15)
    ax.set_xlabel("denoising step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("source tokens kept (fraction, mean over records)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title("Kept source tokens per step (shaded: min-max over records)", fontsize=10)
    _legend(ax)
    return fig


def _legend(ax) -> None:
    # outside the axes, so it never hides a point
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _figure(width: float = 7.5, height: float = 4.5):
    # a Figure not registered with pyplot: nothing to close, no GUI backend needed
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
