"""Images as the metrics take them: ``H x W x 3`` float64 in [0, 1], pairs of one shape, PIE-Bench's masked
"unedit part" product, and the tensors torchmetrics' image metrics take."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


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


def pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two images as float arrays in [0, 1] of the same shape."""
    x, y = to_float01(a), to_float01(b)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    return x, y


def background_mask_product(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``img * (1 - mask)``: the PIE-Bench "unedit part" image."""
    return img * (~mask.astype(bool))[..., None]


def as_tensor(x: np.ndarray) -> Any:
    """``H x W x 3`` float64 -> ``1 x 3 x H x W`` tensor (what torchmetrics' image metrics take)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
