"""Names of configurations for the report: the row's `label` when the run wrote one, else policy + parameters.

Every part of the report (table, plots, grid) names a configuration the same way, so a reader can match a
legend entry to a grid column to a table row."""
from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd

# Fields that, when they differ between configurations, must appear in the name to tell them apart.
DISTINGUISHING = ("model", "height", "width", "seed", "steps")


def params_text(policy_params: Any) -> str:
    """`{"omega":0.4,"full_steps":1}` -> `omega=0.4, full_steps=1` (the JSON column, or a dict)."""
    if policy_params is None or (isinstance(policy_params, float) and pd.isna(policy_params)):
        return ""
    params = policy_params
    if isinstance(policy_params, str):
        try:
            params = json.loads(policy_params) if policy_params.strip() else {}
        except ValueError:
            return policy_params
    if not isinstance(params, dict):
        return str(params)
    return ", ".join(f"{k}={_value(v)}" for k, v in params.items())


def _value(v: Any) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else str(v)


def base_label(row: Any) -> str:
    """The run's own label when present, else `policy param=value, ...`."""
    label = row.get("label") if hasattr(row, "get") else None
    if isinstance(label, str) and label.strip():
        return label.strip()
    params = params_text(row.get("policy_params"))
    return f"{row.get('policy')} {params}".strip()


def varying(df: pd.DataFrame, fields: tuple[str, ...] = DISTINGUISHING) -> list[str]:
    """Those of `fields` that take more than one value in `df`."""
    return [f for f in fields if f in df and df[f].nunique(dropna=False) > 1]


def config_labels(df: pd.DataFrame, fields: tuple[str, ...] = DISTINGUISHING) -> pd.Series:
    """One display name per row: base label plus whichever of `fields` vary across the results."""
    extra = varying(df, fields)
    if df.empty:
        return pd.Series([], dtype=object, index=df.index)

    def name(row: pd.Series) -> str:
        parts = [base_label(row)]
        if "model" in extra:
            parts.append(str(row["model"]))
        if "height" in extra or "width" in extra:
            parts.append(f"{row['height']}x{row['width']}")
        parts += [f"{f} {row[f]}" for f in ("seed", "steps") if f in extra]
        return " · ".join(parts)

    return df.apply(name, axis=1)


def config_order(df: pd.DataFrame, label_col: str = "config_label") -> list[str]:
    """Labels in reading order: `full` (the reference) first, then by policy and label."""
    keys = df[[label_col, "policy"]].drop_duplicates(label_col)
    return sorted(keys[label_col], key=lambda label: (
        keys.loc[keys[label_col] == label, "policy"].iloc[0] != "full", _natural(label)))


def _natural(text: str) -> list[Any]:
    # omega=0.4 before omega=0.93 and keep=9 before keep=10: numbers compare as numbers
    return [(0, float(t), "") if re.fullmatch(r"\d+(\.\d+)?", t) else (1, 0.0, t)
            for t in re.split(r"(\d+(?:\.\d+)?)", str(text)) if t]
