"""The issue's goals as computed verdicts over the aggregated rows (`studies.focus.summary`), so that the prose
follows the numbers. Speed: FLOP-ideal on FLUX.1-Kontext-dev at 1024² (projected); fidelity: PSNR vs `full`."""
from __future__ import annotations

import math
from typing import Any, Sequence

from studies.cache.pareto import best_at_speed, pareto_frontier

Row = dict[str, Any]
SPEED, FIDELITY = "flop_kontext_1024", "psnr_full"
TOLERANCE = 0.05          # "at its own speed": the single caches at least 95 % as fast
EDIT_MARGIN = 0.5         # dB: edit PSNR against the target within this of full's, per local category
RIVALS = ("seed", "cache", "peer", "regione")


def dominates(a: Row, b: Row, speed: str = SPEED, quality: str = FIDELITY) -> bool:
    """a is at least as fast and as good as b, and better on one."""
    return (a[speed] >= b[speed] and a[quality] >= b[quality]
            and (a[speed] > b[speed] or a[quality] > b[quality]))


def _db(v: float) -> str:
    return "identical" if v == math.inf else f"{v:.1f} dB"


def speed_goal(row: Row, target: float, group: str) -> str:
    ok = row[SPEED] >= target
    return (f"- **{target:g}× FLOP-ideal at 1024² on FLUX.1-Kontext-dev ({group} edits)**: "
            f"{'met' if ok else 'not met'}: `{row['config']}` {row[SPEED]:.2f}× "
            f"({row.get('flop_kontext_2048', math.nan):.2f}× at 2048²; Qwen-Image-Edit {row.get('flop_qwen_1024', math.nan):.2f}×"
            f" / {row.get('flop_qwen_2048', math.nan):.2f}×).")


def cache_goal(row: Row, rows: Sequence[Row]) -> str:
    caches = [r for r in rows if r["kind"] == "cache"]
    best = best_at_speed(caches, SPEED, FIDELITY, row[SPEED] * (1 - TOLERANCE))
    if best is None:
        fastest = max(caches, key=lambda r: r[SPEED], default=None)
        tail = "" if fastest is None else f" (the fastest, `{fastest['config']}`, is {fastest[SPEED]:.2f}×)"
        return (f"- **PSNR vs full no worse than the best single cache at its speed**: met, no single cache is as "
                f"fast as `{row['config']}` ({row[SPEED]:.2f}×){tail}.")
    ok = row[FIDELITY] >= best[FIDELITY]
    return (f"- **PSNR vs full no worse than the best single cache at its speed**: {'met' if ok else 'not met'}: "
            f"`{row['config']}` {_db(row[FIDELITY])} at {row[SPEED]:.2f}× vs `{best['config']}` "
            f"{_db(best[FIDELITY])} at {best[SPEED]:.2f}×.")


def background_goal(row: Row) -> str:
    ok = row["psnr_bg"] >= row["psnr_bg_full"] - 1e-9
    return (f"- **Background PSNR no worse than full's**: {'met' if ok else 'not met'}: {_db(row['psnr_bg'])} vs "
            f"full's {_db(row['psnr_bg_full'])}.")


def edit_goal(per_category: dict[str, Row]) -> str:
    parts, ok = [], True
    for category, r in per_category.items():
        delta = r["edit_vs_full"]
        ok &= delta >= -EDIT_MARGIN
        parts.append(f"{category} {delta:+.2f} dB")
    return (f"- **Edit PSNR vs the exact target within {EDIT_MARGIN} dB of full's in every local category**: "
            f"{'met' if ok else 'not met'} ({'; '.join(parts)}).")


def dominance_goal(ours: Sequence[Row], rows: Sequence[Row], group: str) -> str:
    """Is every rival (seed method, single cache, peer, RegionE) Pareto-dominated by some focus setting?"""
    rivals = [r for r in rows if r["kind"] in RIVALS]
    free = [r for r in rivals if not any(dominates(f, r) for f in ours)]
    head = f"- **focus Pareto-dominates every seed method, cache, cache-dit and RegionE ({group} edits)**: "
    if not free:
        return head + f"met: each of the {len(rivals)} is dominated by a focus setting."
    names = ", ".join(f"`{r['config']}` ({r[SPEED]:.2f}×, {_db(r[FIDELITY])})" for r in free)
    return head + f"not met: {len(rivals) - len(free)} of {len(rivals)} dominated; not by any focus setting: {names}."


def not_dominated_goal(row: Row, rows: Sequence[Row], group: str) -> str:
    by = [r for r in rows if r["config"] != row["config"] and dominates(r, row)]
    head = f"- **`{row['config']}` not dominated ({group} edits)**: "
    if not by:
        return head + f"met ({row[SPEED]:.2f}×, {_db(row[FIDELITY])})."
    return head + "not met: dominated by " + ", ".join(f"`{r['config']}` ({r[SPEED]:.2f}×, {_db(r[FIDELITY])})"
                                                       for r in by) + "."


def frontier_text(rows: Sequence[Row], group: str) -> str:
    front = pareto_frontier(rows, SPEED, FIDELITY)
    return (f"- **Pareto frontier ({group} edits, FLOP-ideal 1024² vs PSNR vs full)**: "
            + " → ".join(f"`{r['config']}` ({r[SPEED]:.2f}×, {_db(r[FIDELITY])})" for r in front) + ".")
