"""Verdicts on the seeds' claims, computed from the scored toy rows (so the prose follows the numbers).

Each function returns one markdown bullet: what the claim predicts, what was measured, and whether it
reproduced. A claim that does not reproduce is reported as such.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

Label = Callable[..., str]


def finite_mean(values: pd.Series) -> float:
    """Mean of the finite values (an identical image's PSNR is infinite, a missing one None); NaN if none."""
    v = pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan).dropna()
    return float(v.mean()) if len(v) else float("nan")


def _mean(df: pd.DataFrame, label: str, col: str) -> float:
    return finite_mean(df[df.label == label][col])


def _verdict(ok: bool) -> str:
    return "**reproduces**" if ok else "**does not reproduce**"


def random_drop(df: pd.DataFrame, label: Label) -> str:
    ratios = sorted(df[(df.policy == "random") & df.ratio.notna()].ratio.unique())
    bg = [_mean(df, "full", "psnr_bg")] + [_mean(df, label("random", {"ratio": r, "reg": False}), "psnr_bg")
                                           for r in ratios]
    falling = all(a > b for a, b in zip(bg, bg[1:]))
    return (f"- (a) Random drop lowers background PSNR as the ratio rises: {_verdict(falling)} "
            f"({' → '.join(f'{v:.1f}' for v in bg)} dB from full to a drop of {ratios[-1]:.2f}).")


def _variant(omega: float, blur: str | None) -> str:
    return f"ω = {omega}" + (f", {blur} kernel" if blur else "")


def matched_budgets(df: pd.DataFrame, label: Label, omega: float, blur: str | None = None) -> str:
    td = label("tokendrop", {"omega": omega, "reg": True, "blur": blur})
    rnd = label("random", {"budget": 1, "reg": False, "matched_omega": omega, "matched_blur": blur})
    td_noreg = label("tokendrop", {"omega": omega, "reg": False, "blur": blur})
    bg = {k: _mean(df, k, "psnr_bg") for k in (td, rnd, td_noreg)}
    edit = {k: _mean(df, k, "psnr_edit") for k in (td, rnd, td_noreg)}
    ok = bg[td] > bg[rnd] and bg[td] > bg[td_noreg]
    return (f"- (b) {_variant(omega, blur)}: TokenDrop with reg keeps the background better than random drop at "
            f"its budget and than TokenDrop without reg: {_verdict(ok)} (bg PSNR {bg[td]:.2f} vs {bg[rnd]:.2f} and "
            f"{bg[td_noreg]:.2f} dB). The edit pays for it: edit PSNR vs target {edit[td]:.2f} vs "
            f"{edit[rnd]:.2f} and {edit[td_noreg]:.2f} dB (full: {_mean(df, 'full', 'psnr_edit'):.2f}).")


def kernels(df: pd.DataFrame, label: Label, variants: list[tuple[float, str | None]]) -> str:
    """The grid-scaled blur against the paper's, per ω (TokenDrop with reg): keep ratio, bg and edit PSNR.
    Not a claim of the paper (it has one grid): which kernel does better here, computed."""
    parts = []
    for omega in sorted({w for w, _ in variants}):
        if (omega, "paper") not in variants or (omega, "grid") not in variants:
            continue
        lab = {b: label("tokendrop", {"omega": omega, "reg": True, "blur": b}) for b in ("paper", "grid")}
        m = {b: {c: _mean(df, lab[b], c) for c in ("keep_ratio_mean", "psnr_bg", "psnr_edit")} for b in lab}
        d_bg, d_edit = m["grid"]["psnr_bg"] - m["paper"]["psnr_bg"], m["grid"]["psnr_edit"] - m["paper"]["psnr_edit"]
        def way(d: float) -> str:
            return "better" if d >= 0.005 else "worse" if d <= -0.005 else "equal"   # at the printed precision

        parts.append(f"ω = {omega}: keep ratio {m['grid']['keep_ratio_mean']:.3f} vs {m['paper']['keep_ratio_mean']:.3f}, "
                     f"bg PSNR {d_bg:+.2f} dB, edit PSNR {d_edit:+.2f} dB (**background {way(d_bg)}, edit "
                     f"{way(d_edit)}** with the grid kernel)")
    if not parts:
        return ""
    return ("- (b′) The blur scaled to the token grid against the paper's kernel as given, TokenDrop with reg: "
            + "; ".join(parts) + ".")


def proposition_1(df: pd.DataFrame, label: Label) -> str:
    ratios = sorted(df[(df.policy == "random") & df.ratio.notna()].ratio.unique())
    pairs = [(label("random", {"ratio": r, "reg": True}), label("random", {"ratio": r, "reg": False})) for r in ratios]
    closer = all(_mean(df, w, "psnr_mask_vs_source") > _mean(df, n, "psnr_mask_vs_source") for w, n in pairs)
    worse = all(_mean(df, w, "psnr_edit") < _mean(df, n, "psnr_edit") for w, n in pairs)
    w, n = pairs[-1]
    return (f"- (c) Random drop with the regularizer collapses toward the source: {_verdict(closer and worse)} "
            f"(at every ratio, in-mask PSNR vs the source is higher and edit PSNR lower than without it; at a "
            f"drop of {ratios[-1]:.2f}: {_mean(df, w, 'psnr_mask_vs_source'):.2f} vs "
            f"{_mean(df, n, 'psnr_mask_vs_source'):.2f} dB vs source, {_mean(df, w, 'psnr_edit'):.2f} vs "
            f"{_mean(df, n, 'psnr_edit'):.2f} dB vs target).")


def keep_vs_area(omega: float, r_all: float, r_local: float, blur: str | None = None) -> str:
    ok = r_all > 0 and r_local > 0   # NaN (no spread to correlate) compares false: not reproduced
    return (f"- (d) {_variant(omega, blur)}: the adaptive keep ratio grows with the edited area: {_verdict(ok)} "
            f"(Pearson r = {r_all:.2f} over all records, {r_local:.2f} over the local edits).")


def other_methods(df: pd.DataFrame) -> str:
    full_bg, full_edit = _mean(df, "full", "psnr_bg"), _mean(df, "full", "psnr_edit")
    parts = []
    for lab in sorted(df[df.policy.isin(["topi", "spotedit"])].label.unique()):
        saved = (1 - _mean(df, lab, "active_fraction")) if lab.startswith("SpotEdit") else (1 - _mean(df, lab, "keep_ratio_mean"))
        what = "noisy queries skipped" if lab.startswith("SpotEdit") else "source tokens pruned"
        parts.append(f"{lab}: {saved:.0%} {what}, bg PSNR {_mean(df, lab, 'psnr_bg') - full_bg:+.2f} dB, "
                     f"edit PSNR {_mean(df, lab, 'psnr_edit') - full_edit:+.2f} dB")
    return "- (e) Against `full`: " + "; ".join(parts) + "." if parts else ""
