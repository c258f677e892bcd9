"""The study page's tables: local and global edits, focus's edit quality per category, the ablation and the
compositions (`studies.focus.page` puts them together)."""
from __future__ import annotations

import math
from typing import Any, Sequence

from studies.cache.pareto import composes

from . import grid, verdicts
from .summary import aggregate

Row = dict[str, Any]
BEGIN, END = "<!-- focus-study:begin -->", "<!-- focus-study:end -->"
LOCAL_CATEGORIES = ("add", "move", "recolor", "resize", "remove")


def _db(v: float) -> str:
    return "—" if v is None or math.isnan(v) else ("identical" if v == math.inf else f"{v:.1f}")


def _x(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.2f}×"


def _cell(config: str) -> str:
    return "`" + config.replace("|", "\\|") + "`"


def table(rows: Sequence[Row]) -> str:
    out = ["| configuration | kind | skipped calls | noisy queries | source kept | PSNR vs full | SSIM vs full | "
           "background PSNR (full's) | edit PSNR vs target (− full's) | FLOP-ideal: toy | Kontext 1024² | 2048² | "
           "Qwen-Edit 1024² | 2048² | CPU time ratio, median (p25–p75) |", "|" + "---|" * 15]
    for r in rows:
        cpu = "—" if not r["cpu_records"] else f"{r['cpu_speedup']:.2f}× ({r['cpu_p25']:.2f}–{r['cpu_p75']:.2f})"
        out.append(f"| {_cell(r['config'])} | {r['kind']} | {r['skipped']:.1f} | {r['query']:.2f} | {r['keep']:.2f} | "
                   f"{_db(r['psnr_full'])} | {r['ssim_full']:.3f} | {_db(r['psnr_bg'])} ({_db(r['psnr_bg_full'])}) | "
                   f"{_db(r['psnr_edit'])} ({r['edit_vs_full']:+.2f}) | {_x(r['flop_toy'])} | "
                   f"{_x(r['flop_kontext_1024'])} | {_x(r['flop_kontext_2048'])} | {_x(r['flop_qwen_1024'])} | "
                   f"{_x(r['flop_qwen_2048'])} | {cpu} |")
    return "\n".join(out)


def per_category(lines: Sequence[Row], model: str, configs: Sequence[str]) -> tuple[str, dict[str, dict[str, Row]]]:
    """Edit PSNR against the target minus full's, per local category, for `configs`."""
    by: dict[str, dict[str, Row]] = {}
    for category in LOCAL_CATEGORIES:
        for r in aggregate(lines, model, lambda x, c=category: x.get("category") == c):
            by.setdefault(r["config"], {})[category] = r
    out = ["| configuration | " + " | ".join(LOCAL_CATEGORIES) + " |", "|---|" + "---|" * len(LOCAL_CATEGORIES)]
    for config in configs:
        cats = by.get(config, {})
        out.append(f"| {_cell(config)} | " + " | ".join(
            f"{cats[c]['edit_vs_full']:+.2f} ({_x(cats[c]['flop_kontext_1024'])})" if c in cats else "—"
            for c in LOCAL_CATEGORIES) + " |")
    return "\n".join(out), by


def ablation(rows: Sequence[Row]) -> str:
    by = {r["config"]: r for r in rows}
    base = by.get(grid.FOCUS)
    out = ["| change | configuration | FLOP-ideal 1024² | PSNR vs full | edit vs full's | background |",
           "|---|---|---|---|---|---|"]
    if base is None:
        return "focus was not measured."
    for name, config in grid.ABLATION.items():
        r = by.get(config)
        if r is None:
            continue
        out.append(f"| {name} | {_cell(config)} | {_x(r['flop_kontext_1024'])} (focus {_x(base['flop_kontext_1024'])}) "
                   f"| {_db(r['psnr_full'])} ({_db(base['psnr_full'])}) | {r['edit_vs_full']:+.2f} "
                   f"({base['edit_vs_full']:+.2f}) | {_db(r['psnr_bg'])} ({_db(base['psnr_bg'])}) |")
    return "\n".join(out)


def compositions(rows: Sequence[Row]) -> str:
    parts = {}
    for config in grid.COMPOSITIONS:
        what, _, cache = config.partition("|")
        parts[config] = (f"{what}|", f"full|{cache}")
    res = composes(rows, parts, verdicts.SPEED, verdicts.FIDELITY)
    if not res:
        return "- no composition measured."
    return "\n".join(f"- `{r['config']}`: ×{r['speed_gain']:.2f} the faster part's speed, {r['vs_worse']:+.1f} dB vs "
                     f"the worse part, {r['vs_better']:+.1f} dB vs the better: "
                     f"{'faster than both parts and dominated by neither' if r['composes'] else 'dominated by a part or not faster than both'}."
                     for r in res)
