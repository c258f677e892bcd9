"""Names of the study's configurations (TokenDrop variants by omega and blur kernel, the matched arms, every
method) and the selections of rows they stand for."""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from studies.toy.models import ToyModel


def _kernel(blur: str | None) -> str:
    return f", {blur} kernel" if blur else ""


def label(policy: str, params: dict[str, Any]) -> str:
    """A configuration's name in tables and findings. TokenDrop's blur (`paper`, `grid`) is named when the
    configuration sets it; the matched random arms name their TokenDrop's ω and blur (`matched_blur`)."""
    reg = params.get("reg")
    if policy == "full":
        return "full"
    if policy == "random":
        if params.get("budget") is not None:
            blur = params.get("matched_blur")
            return (f"random, budget of TokenDrop ω={params['matched_omega']}{f' ({blur} kernel)' if blur else ''}, "
                    f"{'with' if reg else 'no'} reg")
        return f"random {params['ratio']:.2f}, {'with' if reg else 'no'} reg"
    if policy == "tokendrop":
        return f"TokenDrop ω={params['omega']}{_kernel(params.get('blur'))}, {'with' if reg else 'no'} reg"
    if policy == "topi":
        return f"ToPi τ={params['tau']}, {params.get('mode', 'prune')}"   # rows hold the configured params
    if policy == "spotedit":
        return f"SpotEdit τ={params['tau']}, {params.get('fusion', 'spotfusion')}"
    return policy


def blur_of(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def tokendrop_variants(df: pd.DataFrame) -> list[tuple[float, str | None]]:
    """(ω, blur) of every TokenDrop configuration that ran, ω then the paper's kernel first."""
    td = df[df.policy == "tokendrop"]
    blur = td["blur"] if "blur" in td else pd.Series(None, index=td.index, dtype=object)
    pairs = {(float(w), blur_of(b)) for w, b in zip(td.omega, blur) if w is not None and not pd.isna(w)}
    order = {None: 0, "paper": 1, "grid": 2}
    return sorted(pairs, key=lambda p: (p[0], order.get(p[1], 3), str(p[1])))


def value_is(series: pd.Series, value: Any) -> pd.Series:
    """Elementwise equality that counts None/NaN as equal to None."""
    if value is None:
        return series.isna()
    return series == value


def variant_name(omega: float, blur: str | None) -> str:
    return f"ω={omega}{_kernel(blur)}"


def td_rows(df: pd.DataFrame, omega: float, blur: str | None, reg: bool = True) -> pd.DataFrame:
    blur_col = df["blur"] if "blur" in df else pd.Series(None, index=df.index, dtype=object)
    return df[(df.policy == "tokendrop") & (df.reg == reg) & (df.omega == omega) & value_is(blur_col, blur)]


def matched_label(omega: float, blur: str | None, reg: bool) -> str:
    return label("random", {"budget": 1, "reg": reg, "matched_omega": omega, "matched_blur": blur})


def method_labels(df: pd.DataFrame) -> list[str]:
    """Every configuration's label in the doc's order: full, random by ratio, TokenDrop and its matched arms
    per (ω, kernel), ToPi, SpotEdit."""
    random_labels = [label("random", {"ratio": r, "reg": reg}) for reg in (False, True)
                     for r in sorted(df[(df.policy == "random") & df.ratio.notna()].ratio.unique())]
    td = []
    for omega, blur in tokendrop_variants(df):
        td += [label("tokendrop", {"omega": omega, "reg": True, "blur": blur}),
               label("tokendrop", {"omega": omega, "reg": False, "blur": blur}),
               matched_label(omega, blur, False), matched_label(omega, blur, True)]
    others = sorted(df[df.policy.isin(["topi", "spotedit"])].label.unique())
    present = set(df.label)
    return [lab for lab in ["full"] + random_labels + td + others if lab in present]


def kernels_used(model: ToyModel, df: pd.DataFrame | None = None) -> dict[str, tuple[int, float]]:
    """TokenDrop's (kernel, σ) per `blur` on this model's grid: what the rows applied when they say, else
    what `policies.tokendrop` computes (the paper's 11 and 1.0; `grid` scaled by grid / 64)."""
    from policies.tokendrop import grid_scaled_blur

    used = {"paper": (11, 1.0), "grid": grid_scaled_blur(11, 1.0, (model.grid, model.grid))}
    if df is not None and "policy_applied" in df:
        for pol, applied, blur in zip(df.policy, df.policy_applied, df.get("blur", [None] * len(df))):
            if pol == "tokendrop" and isinstance(applied, str):
                a = json.loads(applied)
                if "kernel" in a:
                    used[blur_of(blur) or "paper"] = (int(a["kernel"]), float(a["blur_sigma"]))
    return used
