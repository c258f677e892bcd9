"""Image metrics: PIE-Bench background preservation, fidelity vs ``full``, LPIPS.

Conventions follow PIE-Bench's evaluation code (cure-lab/PnPInversion,
``evaluation/evaluate.py`` and ``evaluation/matrics_calculator.py``):

- images are scaled to [0, 1] (``/255``), so ``mse_bg`` is on [0, 1] (PIE-Bench
  tables print it x10^4) and PSNR uses ``data_range=1``;
- the "unedit part" metrics multiply BOTH images by ``1 - mask`` (edited region
  zeroed) and compute the ordinary full-image metric on the results: MSE/PSNR
  average over all pixels (zeroed ones add 0 error), SSIM runs on the masked
  images, LPIPS gets the masked images mapped to [-1, 1];
- SSIM is torchmetrics' (Gaussian window sigma 1.5, 11 taps, k1 0.01, k2 0.03,
  data_range 1, population variances), averaged over the image minus a 5-pixel
  border as torchmetrics did until Lightning-AI/torchmetrics#2721 (Sept 2024),
  i.e. in the version PIE-Bench (2023) was scored with.  skimage's
  ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)`` computes exactly that (checked
  against torchmetrics' full SSIM image cropped by 5: equal in float64);
- if nothing is left outside the mask the metrics are undefined (PIE-Bench writes
  "nan"; here: ``None``).
PSNR of identical images is ``+inf`` (as torchmetrics/skimage), not capped.

LPIPS weights are never downloaded: ``Lpips`` asks actors.lpips_model (the torch
side) for a model built from local weights only, and without them the value is
``None`` and the status says why: a random trunk's distance is not LPIPS.

One PSNR for the project: ``psnr`` (over the whole image, or over a mask's pixels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

from pipeline.config import LPIPS_NETS

LPIPS_OK = "ok"


def to_float01(img: Image.Image | np.ndarray) -> np.ndarray:
    """``H x W x 3`` float64 in [0, 1] from a PIL image or a uint8/float array."""
    if isinstance(img, Image.Image):
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    else:
        arr = np.asarray(img)
        arr = arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {arr.shape}")
    return arr


def align_to(edited: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize an edited image to the source's PIL ``(w, h)`` (metrics run at source size)."""
    edited = edited.convert("RGB")
    return edited if edited.size == tuple(size) else edited.resize(tuple(size), Image.Resampling.BICUBIC)


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = to_float01(a), to_float01(b)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    return x, y


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    # torchmetrics SSIM defaults, as used by PIE-Bench.
    return float(
        structural_similarity(
            x, y, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
    )


def psnr(a: Any, b: Any, mask: np.ndarray | None = None) -> float:
    """PSNR in dB with data range 1 (uint8 images are divided by 255), over every pixel or, with
    ``mask``, over its True pixels only (NaN when it has none).  Identical images: +inf, not capped."""
    x, y = _pair(a, b)
    err = (x - y) ** 2
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return float("nan")
        err = err[mask]
    mse = float(err.mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def background_mask_product(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``img * (1 - mask)``: the PIE-Bench "unedit part" image."""
    return img * (~mask.astype(bool))[..., None]


def background_metrics(edited: Any, source: Any, mask: np.ndarray) -> dict[str, float | None]:
    """``psnr_bg``, ``ssim_bg``, ``mse_bg`` outside the edited mask (True = edited)."""
    x, y = _pair(edited, source)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {x.shape[:2]}")
    if mask.all():
        return {"psnr_bg": None, "ssim_bg": None, "mse_bg": None}
    # PIE-Bench scores the whole product images (zeroed pixels add no error), not the background pixels
    # alone: hence psnr of the products, not psnr(x, y, ~mask)
    xb, yb = background_mask_product(x, mask), background_mask_product(y, mask)
    return {
        "psnr_bg": psnr(xb, yb),
        "ssim_bg": _ssim(xb, yb),
        "mse_bg": float(np.mean((xb - yb) ** 2)),
    }


def fidelity_metrics(edited: Any, full_output: Any) -> dict[str, float]:
    """``psnr_vs_full``, ``ssim_vs_full`` of a pruned edit against the ``full`` output."""
    x, y = _pair(edited, full_output)
    return {"psnr_vs_full": psnr(x, y), "ssim_vs_full": _ssim(x, y)}


# -------------------------------------------------------------------------- LPIPS


class Lpips:
    """LPIPS from local weights only; ``__call__`` returns ``(value or None, status)``.

    ``status`` is ``"ok"`` or a sentence saying why there is no value.  The torch model
    (actors.lpips_model) is built on first use, so constructing this is cheap on a
    worker that never needs it.
    """

    def __init__(self, weights_path: str | None = None, net: str = "alex", device: str = "cpu") -> None:
        if net not in LPIPS_NETS:
            raise ValueError(f"lpips net must be one of {sorted(LPIPS_NETS)}, got {net!r}")
        self.weights_path = weights_path
        self.net = net
        self.device = device
        self._model: Any = None
        self._status: str | None = None

    @property
    def status(self) -> str:
        if self._status is None:
            self._load()
        return self._status  # type: ignore[return-value]

    @property
    def available(self) -> bool:
        return self.status == LPIPS_OK

    def _load(self) -> None:
        from actors.lpips_model import LpipsUnavailable, load_lpips  # torch: only where LPIPS is computed

        try:
            self._model, self._status = load_lpips(self.net, self.weights_path, self.device), LPIPS_OK
        except LpipsUnavailable as exc:
            self._model, self._status = None, str(exc)

    def __call__(self, a: Any, b: Any, mask: np.ndarray | None = None) -> tuple[float | None, str]:
        """LPIPS(a, b); with ``mask`` (True = edited) both images are zeroed inside it first."""
        if not self.available:
            return None, self.status
        from actors.lpips_model import lpips_distance

        x, y = _pair(a, b)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.all():
                return None, "undefined: mask covers the whole image"
            x, y = background_mask_product(x, mask), background_mask_product(y, mask)
        return lpips_distance(self._model, x, y, self.device), LPIPS_OK
