"""Pixel metrics on the CPU finish stage: PSNR/SSIM/MSE outside the edited mask against the source
(PIE-Bench's background preservation) and PSNR/SSIM against the group's ``full`` edit (fidelity).

Conventions follow PIE-Bench's evaluation code (cure-lab/PnPInversion, ``evaluation/evaluate.py`` and
``evaluation/matrics_calculator.py``), which uses torchmetrics:

- images are scaled to [0, 1] (``/255``), so ``mse_bg`` is on [0, 1] (PIE-Bench tables print it x10^4) and
  PSNR/SSIM use ``data_range=1``;
- the "unedit part" metrics multiply BOTH images by ``1 - mask`` (edited region zeroed) and compute the
  ordinary whole-image metric on the results with torchmetrics (``PeakSignalNoiseRatio``, ``MeanSquaredError``,
  ``StructuralSimilarityIndexMeasure``; here their functional forms, the same computation): zeroed pixels add
  0 error;
- SSIM is the installed torchmetrics' (Gaussian window sigma 1.5, 11 taps, k1 0.01, k2 0.03).  Note:
  torchmetrics before Lightning-AI/torchmetrics#2721 (Sept 2024; PIE-Bench's 2023 scores) averaged over the
  image minus a 5-pixel border; newer versions do not, so ``ssim_bg`` differs slightly from old numbers;
- if nothing is left outside the mask the background metrics are undefined (PIE-Bench writes "nan"; here:
  ``None``).
PSNR of identical images is ``+inf`` (as torchmetrics/skimage), not capped.

One PSNR for the project: ``psnr`` (over the whole image, or over a mask's pixels).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from metrics.base import Column, Metric, Scoring
from metrics.images import as_tensor, background_mask_product, pair

NO_MASK = ("no background to score: the record has no ground-truth mask, or its mask covers the whole image "
           "(a global edit such as grayscale), or `background` is not in metrics.compute")
NO_FULL = "no `full` output of the same record to compare with (or `vs_full` not in metrics.compute)"
FULL_IS_REFERENCE = "full is the reference"


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    # torchmetrics' StructuralSimilarityIndexMeasure(data_range=1.0), as PIE-Bench calls it
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(as_tensor(x), as_tensor(y), data_range=1.0))


def psnr(a: Any, b: Any, mask: np.ndarray | None = None) -> float:
    """PSNR in dB with data range 1 (uint8 images are divided by 255), over every pixel or, with
    ``mask``, over its True pixels only (NaN when it has none).  Identical images: +inf, not capped."""
    x, y = pair(a, b)
    err = (x - y) ** 2
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return float("nan")
        err = err[mask]
    mse = float(err.mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def background_metrics(edited: Any, source: Any, mask: np.ndarray) -> dict[str, float | None]:
    """``psnr_bg``, ``ssim_bg``, ``mse_bg`` outside the edited mask (True = edited)."""
    x, y = pair(edited, source)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {x.shape[:2]}")
    if mask.all():
        return {"psnr_bg": None, "ssim_bg": None, "mse_bg": None}
    # PIE-Bench scores the whole product images (zeroed pixels add no error), not the background pixels
    # alone: hence psnr of the products, not psnr(x, y, ~mask)
    from torchmetrics.functional import mean_squared_error
    from torchmetrics.functional.image import peak_signal_noise_ratio

    xb, yb = background_mask_product(x, mask), background_mask_product(y, mask)
    tx, ty = as_tensor(xb), as_tensor(yb)
    return {
        "psnr_bg": float(peak_signal_noise_ratio(tx, ty, data_range=1.0)),
        "ssim_bg": _ssim(xb, yb),
        "mse_bg": float(mean_squared_error(tx, ty)),
    }


def fidelity_metrics(edited: Any, full_output: Any) -> dict[str, float]:
    """``psnr_vs_full``, ``ssim_vs_full`` of a pruned edit against the ``full`` output."""
    x, y = pair(edited, full_output)
    return {"psnr_vs_full": psnr(x, y), "ssim_vs_full": _ssim(x, y)}


class Background(Metric, name="background"):
    """PIE-Bench's background preservation: the edit at the source's size against the source, outside the mask."""

    stage = "finish"
    columns = (
        Column("psnr_bg", pa.float64(), "PSNR (dB) of edit x (1 - mask) vs source x (1 - mask)", reported=True),
        Column("ssim_bg", pa.float64(), "SSIM of the same masked images", reported=True),
        Column("mse_bg", pa.float64(), "MSE of the same masked images, on [0, 1]", reported=True),
    )

    def score(self, scoring: Scoring) -> dict[str, Any]:
        if scoring.mask is None:
            return {}
        return background_metrics(scoring.edited, scoring.source, scoring.mask)

    @classmethod
    def why_missing(cls, row: Mapping[str, Any], column: str) -> str:
        return NO_MASK


class VsFull(Metric, name="vs_full"):
    """Fidelity to the group's ``full`` edit, at the edit's own size."""

    stage = "finish"
    columns = (
        Column("psnr_vs_full", pa.float64(), "PSNR (dB) of the edit vs the same record's full edit", reported=True),
        Column("ssim_vs_full", pa.float64(), "SSIM of the edit vs the same record's full edit", reported=True),
    )

    def score(self, scoring: Scoring) -> dict[str, Any]:
        return {} if scoring.full is None else fidelity_metrics(scoring.made, scoring.full)

    @classmethod
    def why_missing(cls, row: Mapping[str, Any], column: str) -> str:
        return FULL_IS_REFERENCE if row.get("policy") == "full" else NO_FULL

