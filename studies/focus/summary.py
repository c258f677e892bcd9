"""Per-record rows (`studies.focus.measure`) to one row per configuration and group of records: all, local edits
(a region exists), global edits, or one category."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from studies.cache.compare import psnr_of
from studies.cache.grid import read_rows

from .grid import kind

Row = dict[str, Any]
GROUPS: dict[str, Callable[[Row], bool]] = {"all": lambda r: True, "local": lambda r: bool(r.get("local")),
                                            "global": lambda r: not r.get("local")}
SPEEDS = ("flop_toy", "flop_kontext_1024", "flop_kontext_2048", "flop_qwen_1024", "flop_qwen_2048")


def _psnr(mses: Iterable[float | None]) -> float:
    """PSNR of the mean squared error over the records that have one (identical edits: zero error)."""
    v = [m for m in mses if m is not None]
    return psnr_of(float(np.mean(v))) if v else math.nan


def _mean(values: Iterable[float | None]) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def aggregate(lines: Sequence[Row], model: str, keep: Callable[[Row], bool] = GROUPS["all"]) -> list[Row]:
    """One row per configuration over the records `keep` selects, in the order first seen."""
    groups: dict[str, list[Row]] = {}
    for line in lines:
        if line.get("model") == model and keep(line):
            groups.setdefault(line["config"], []).append(line)
    return [_row(config, rows) for config, rows in groups.items()]


def _row(config: str, rows: list[Row]) -> Row:
    cpu = [r["cpu_speedup"] for r in rows if r.get("cpu_speedup") is not None]
    out = {"config": config, "kind": kind(config), "records": len(rows),
           "skipped": _mean(r["skipped"] for r in rows), "keep": _mean(r["keep"] for r in rows),
           "query": _mean(r["query"] for r in rows),
           "psnr_full": _psnr(r["mse_full"] for r in rows), "ssim_full": _mean(r["ssim_full"] for r in rows),
           "lpips_full": _mean(r.get("lpips_full") for r in rows),
           "psnr_target": _psnr(r["mse_target"] for r in rows),
           "psnr_edit": _mean(r["psnr_edit"] for r in rows), "psnr_edit_full": _mean(r["psnr_edit_full"] for r in rows),
           "psnr_bg": _psnr(r["mse_bg"] for r in rows), "psnr_bg_full": _psnr(r["mse_bg_full"] for r in rows),
           "cpu_speedup": float(np.median(cpu)) if cpu else math.nan,
           "cpu_p25": float(np.percentile(cpu, 25)) if cpu else math.nan,
           "cpu_p75": float(np.percentile(cpu, 75)) if cpu else math.nan, "cpu_records": len(cpu)}
    out.update({s: _mean(r.get(s) for r in rows) for s in SPEEDS})
    out["edit_vs_full"] = out["psnr_edit"] - out["psnr_edit_full"]
    return out


def _db(v: float) -> str:
    return "—" if math.isnan(v) else ("identical" if v == math.inf else f"{v:.1f}")


def summary_table(path: Path, model: str) -> str:
    """A compact Markdown table: per configuration, local and global edits side by side."""
    lines = read_rows(path)
    local = {r["config"]: r for r in aggregate(lines, model, GROUPS["local"])}
    glob = {r["config"]: r for r in aggregate(lines, model, GROUPS["global"])}
    out = ["| configuration | local: FLOP-ideal Kontext 1024² | PSNR vs full | edit PSNR − full's | background "
           "PSNR (full's) | global: FLOP-ideal 1024² | PSNR vs full |", "|---|---|---|---|---|---|---|"]
    for config, r in local.items():
        g = glob.get(config, {})
        out.append(f"| `{config.replace('|', chr(92) + '|')}` | {r['flop_kontext_1024']:.2f}× | {_db(r['psnr_full'])} | "
                   f"{r['edit_vs_full']:+.2f} | {_db(r['psnr_bg'])} ({_db(r['psnr_bg_full'])}) | "
                   f"{g.get('flop_kontext_1024', math.nan):.2f}× | {_db(g.get('psnr_full', math.nan))} |")
    return "\n".join(out)
