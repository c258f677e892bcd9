"""Zack's triangle threshold on the GPU, following scikit-image's `threshold_triangle` step by step
(256-bin histogram over the data range, flip towards the longer tail, farthest bin from the
peak-to-tail line), so that the two agree on the same histogram."""
from __future__ import annotations

import torch


def histogram(values: torch.Tensor, nbins: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts and bin centres over [min, max], as `skimage.exposure.histogram(source_range='image')`."""
    values = values.reshape(-1).double()
    lo, hi = values.min(), values.max()
    counts = torch.histc(values, bins=nbins, min=float(lo), max=float(hi))
    edges = torch.linspace(float(lo), float(hi), nbins + 1, dtype=torch.float64, device=values.device)
    return counts, (edges[:-1] + edges[1:]) / 2


def threshold_from_histogram(counts: torch.Tensor, centers: torch.Tensor) -> float:
    nbins = counts.numel()
    nonzero = torch.nonzero(counts).flatten()
    low, high = int(nonzero[0]), int(nonzero[-1])
    if low == high:   # constant data
        return float(centers[low])
    peak = int(torch.argmax(counts))
    peak_height = float(counts[peak])
    flip = peak - low < high - peak
    if flip:
        counts = counts.flip(0)
        low, peak = nbins - high - 1, nbins - peak - 1
    width = peak - low
    x = torch.arange(width, dtype=torch.float64, device=counts.device)
    y = counts[low: low + width].double()
    norm = (peak_height ** 2 + width ** 2) ** 0.5
    level = int(torch.argmax(peak_height / norm * x - width / norm * y)) + low
    if flip:
        level = nbins - level - 1
    return float(centers[level])


def triangle_threshold(values: torch.Tensor, nbins: int = 256) -> float:
    return threshold_from_histogram(*histogram(values, nbins))
