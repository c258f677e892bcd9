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

LPIPS trunk: PIE-Bench used SqueezeNet (torchmetrics ``net_type='squeeze'``);
the default here is lpips' own default, AlexNet.  Set ``metrics.lpips_net:
squeeze`` to compare with published PIE-Bench numbers.

LPIPS weights are never downloaded.  The trunk is built randomly initialised
(``pnet_rand=True``) and then overwritten from a local torchvision state dict
(configured path, or the torch hub cache where torchvision itself would have put
it); the linear layers ship inside the ``lpips`` package.  Without backbone
weights the value is ``None`` and the status says why: a random trunk's
distance is not LPIPS.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

LPIPS_OK = "ok"

# torchvision's file name for each LPIPS trunk (the name torch.hub caches it under).
_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
    "vgg": "vgg16-397923af.pth",
}


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


def _psnr(x: np.ndarray, y: np.ndarray) -> float:
    if np.array_equal(x, y):
        return float("inf")  # skimage would warn about the division by zero
    return float(peak_signal_noise_ratio(y, x, data_range=1.0))


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
    xb, yb = background_mask_product(x, mask), background_mask_product(y, mask)
    return {
        "psnr_bg": _psnr(xb, yb),
        "ssim_bg": _ssim(xb, yb),
        "mse_bg": float(mean_squared_error(yb, xb)),
    }


def fidelity_metrics(edited: Any, full_output: Any) -> dict[str, float]:
    """``psnr_vs_full``, ``ssim_vs_full`` of a pruned edit against the ``full`` output."""
    x, y = _pair(edited, full_output)
    return {"psnr_vs_full": _psnr(x, y), "ssim_vs_full": _ssim(x, y)}


# -------------------------------------------------------------------------- LPIPS


def backbone_candidates(net: str, weights_path: str | None) -> list[str]:
    """Files that may hold the trunk weights, in the order they are tried."""
    filename = _BACKBONE_FILES[net]
    out = []
    if weights_path:
        p = os.path.expanduser(weights_path)
        out.append(os.path.join(p, filename) if os.path.isdir(p) else p)
    import torch.hub  # the hub dir honours TORCH_HOME / torch.hub.set_dir

    out.append(os.path.join(torch.hub.get_dir(), "checkpoints", filename))
    return out


class Lpips:
    """LPIPS from local weights only; ``__call__`` returns ``(value or None, status)``.

    ``status`` is ``"ok"`` or a sentence saying why there is no value.  The model is
    built on first use, so constructing this is cheap on a worker that never needs it.
    """

    def __init__(self, weights_path: str | None = None, net: str = "alex", device: str = "cpu") -> None:
        if net not in _BACKBONE_FILES:
            raise ValueError(f"lpips net must be one of {sorted(_BACKBONE_FILES)}, got {net!r}")
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
        candidates = backbone_candidates(self.net, self.weights_path)
        path = next((c for c in candidates if os.path.isfile(c)), None)
        if path is None:
            self._status = (
                f"unavailable: no {self.net} backbone weights (looked for "
                + ", ".join(candidates)
                + "); set metrics.lpips_weights to a local torchvision state dict"
            )
            return
        try:
            import lpips
            import torch

            lin_file = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{self.net}.pth")
            if not os.path.isfile(lin_file):
                self._status = f"unavailable: lpips linear-layer weights missing at {lin_file}"
                return
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation
                # pnet_rand=True: the trunk is built WITHOUT torchvision's download;
                # pretrained=True: linear layers from the lpips package's own files.
                model = lpips.LPIPS(net=self.net, pretrained=True, pnet_rand=True, verbose=False)
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.net.load_state_dict(_trunk_state(model.net, state), strict=True)
            self._model = model.to(self.device).eval()
            self._status = LPIPS_OK
        except Exception as exc:  # noqa: BLE001 - any failure means "no LPIPS", said clearly
            self._model = None
            self._status = f"unavailable: cannot load {self.net} backbone from {path}: {type(exc).__name__}: {exc}"

    def __call__(self, a: Any, b: Any, mask: np.ndarray | None = None) -> tuple[float | None, str]:
        """LPIPS(a, b); with ``mask`` (True = edited) both images are zeroed inside it first."""
        if not self.available:
            return None, self.status
        import torch

        x, y = _pair(a, b)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.all():
                return None, "undefined: mask covers the whole image"
            x, y = background_mask_product(x, mask), background_mask_product(y, mask)

        def tensor(arr: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1)[None]
            return (t * 2 - 1).to(self.device)  # LPIPS takes [-1, 1]

        with torch.no_grad():
            value = self._model(tensor(x), tensor(y))
        return float(value.item()), LPIPS_OK


def _trunk_state(trunk: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Trunk weights under lpips' ``slice<k>.<i>.*`` names.

    Accepts a torchvision state dict (``features.<i>.*``, the hub-cache file) or a
    saved ``lpips.LPIPS`` state dict (``net.slice<k>.<i>.*``).
    """
    out = {}
    for name in trunk.state_dict():
        _slice, idx, rest = name.split(".", 2)  # e.g. slice2.3.weight
        for src in (f"features.{idx}.{rest}", f"net.{name}"):
            if src in state:
                out[name] = state[src]
                break
        else:
            raise KeyError(f"backbone state dict has no 'features.{idx}.{rest}' (is it a torchvision {type(trunk).__name__}?)")
    return out
