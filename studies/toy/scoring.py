"""Every output scored against the exact target (edited region, background), its fidelity to `full`, and the
shares of tokens kept or edited."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _psnr_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _load(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def score(edited: np.ndarray, source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Metrics against what is known exactly (PSNR in dB; PIE-Bench background convention for psnr_bg)."""
    from metrics.pixel import background_metrics, psnr

    return {
        "psnr_bg": background_metrics(edited, source, mask)["psnr_bg"],
        "psnr_edit": _psnr_or_none(psnr(edited, target, mask)),          # inside the mask vs the target
        "psnr_mask_vs_source": _psnr_or_none(psnr(edited, source, mask)),  # inside the mask vs the source
        "psnr_target": _psnr_or_none(psnr(edited, target)),
    }


def manifest_index(data: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def add_scores(df: pd.DataFrame, data: Path) -> pd.DataFrame:
    """Target-based metrics and the mask fraction for every ok row (read from the written images)."""
    from PIL import Image

    from pipeline.images import mask_from_image

    index = manifest_index(data)
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    extra = []
    for row in df.itertuples():
        rec = index[row.record_id]
        if row.record_id not in cache:
            with Image.open(data / rec["mask"]) as m:
                mask = mask_from_image(m)
            cache[row.record_id] = (_load(data / rec["image"]), _load(data / rec["target"]), mask)
        source, target, mask = cache[row.record_id]
        s = score(_load(row.output_uri), source, target, mask) if row.status == "ok" else {}
        s["mask_fraction"] = float(mask.mean())
        extra.append(s)
    out = df.reset_index(drop=True).copy()
    for key in ("psnr_edit", "psnr_mask_vs_source", "psnr_target", "mask_fraction"):
        out[key] = [e.get(key) for e in extra]
    # rows of the in-process arms have no pipeline psnr_bg: the same function scores them here
    bg = pd.to_numeric(out["psnr_bg"], errors="coerce") if "psnr_bg" in out else pd.Series(np.nan, index=out.index)
    out["psnr_bg"] = [e.get("psnr_bg") if pd.isna(v) else v for v, e in zip(bg, extra)]
    return out


def fidelity_to_full(df: pd.DataFrame) -> pd.Series:
    """PSNR of each output against the `full` output of the same record (for the in-process rows too)."""
    from metrics.pixel import psnr

    # each model entry against its own `full` (a fine-tuned copy is another model)
    full = {(r.model, r.record_id): r.output_uri for r in df[(df.policy == "full") & (df.status == "ok")].itertuples()}
    vals = []
    for r in df.itertuples():
        ref = full.get((r.model, r.record_id))
        if r.policy == "full" or ref is None or r.status != "ok":
            vals.append(None)
        else:
            vals.append(_psnr_or_none(psnr(_load(r.output_uri), _load(ref))))
    return pd.Series(vals, index=df.index, dtype="float64")


def active_fraction(df: pd.DataFrame) -> pd.Series:
    """SpotEdit: mean over steps of the share of noisy tokens that got queries (1 where a step ran fully)."""
    vals = []
    for r in df.itertuples():
        steps = getattr(r, "active_per_step", None)
        noisy = (int(r.height) // 16) * (int(r.width) // 16)   # Flux: 8x VAE, 2x2 patches
        listed = isinstance(steps, (list, tuple, np.ndarray)) and len(steps) > 0   # in-process rows: NaN
        vals.append(float(np.mean(steps)) / noisy if listed else None)
    return pd.Series(vals, index=df.index, dtype="float64")


def correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(Pearson r, Spearman ρ); NaN where fewer than 2 points or a constant series."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(x, y)[0, 1]), float(np.corrcoef(rx, ry)[0, 1])
