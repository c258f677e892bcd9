"""Image metrics: PIE-Bench background preservation, fidelity vs ``full``, LPIPS, CLIP, structure distance.

Conventions follow PIE-Bench's evaluation code (cure-lab/PnPInversion,
``evaluation/evaluate.py`` and ``evaluation/matrics_calculator.py``), which uses torchmetrics:

- images are scaled to [0, 1] (``/255``), so ``mse_bg`` is on [0, 1] (PIE-Bench
  tables print it x10^4) and PSNR/SSIM use ``data_range=1``;
- the "unedit part" metrics multiply BOTH images by ``1 - mask`` (edited region
  zeroed) and compute the ordinary whole-image metric on the results with torchmetrics
  (``PeakSignalNoiseRatio``, ``MeanSquaredError``, ``StructuralSimilarityIndexMeasure``; here their
  functional forms, the same computation): zeroed pixels add 0 error; LPIPS gets the masked images
  mapped to [-1, 1];
- SSIM is the installed torchmetrics' (Gaussian window sigma 1.5, 11 taps, k1 0.01, k2 0.03).  Note:
  torchmetrics before Lightning-AI/torchmetrics#2721 (Sept 2024; PIE-Bench's 2023 scores) averaged over the
  image minus a 5-pixel border; newer versions do not, so ``ssim_bg`` differs slightly from old numbers;
- CLIP similarity (``clip_whole``, ``clip_edited``): torchmetrics ``CLIPScore`` (CLIP ViT-L/14 in PIE-Bench)
  of the edit, and of edit x mask, against the record's ``target_prompt``;
- structure distance: MSE between DINO ViT-B/8 block-11 key self-similarity maps of source and edit;
- if nothing is left outside the mask the background metrics are undefined (PIE-Bench writes
  "nan"; here: ``None``).
PSNR of identical images is ``+inf`` (as torchmetrics/skimage), not capped.

No weights are ever downloaded: ``Lpips``, ``Clip`` and ``Structure`` ask actors/ (the torch side) for a
model built from local files only, and without them the value is ``None`` and the ``*_status`` column says
why: a random network's number is not the metric.

One PSNR for the project: ``psnr`` (over the whole image, or over a mask's pixels).
"""

from __future__ import annotations

import abc
import json
import math
import os
from typing import Any, Callable

import numpy as np
from PIL import Image

from pipeline.config import LPIPS_NETS

METRIC_OK = "ok"   # a *_status column's value when the metric has its number
LPIPS_OK = METRIC_OK


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


def _torch(x: np.ndarray) -> Any:
    """``H x W x 3`` float64 -> ``1 x 3 x H x W`` tensor (what torchmetrics' image metrics take)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    # torchmetrics' StructuralSimilarityIndexMeasure(data_range=1.0), as PIE-Bench calls it
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(_torch(x), _torch(y), data_range=1.0))


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
    from torchmetrics.functional import mean_squared_error
    from torchmetrics.functional.image import peak_signal_noise_ratio

    xb, yb = background_mask_product(x, mask), background_mask_product(y, mask)
    tx, ty = _torch(xb), _torch(yb)
    return {
        "psnr_bg": float(peak_signal_noise_ratio(tx, ty, data_range=1.0)),
        "ssim_bg": _ssim(xb, yb),
        "mse_bg": float(mean_squared_error(tx, ty)),
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

    def __init__(self, weights_path: str | None = None, net: str = "squeeze", device: str = "cpu") -> None:
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


# ------------------------------------------------------------ CLIP and structure distance

NO_CLIP_MODEL = ("unavailable: no metrics.clip_model given (a local folder or s3:// prefix of a CLIPModel + "
                 "CLIPProcessor; PIE-Bench uses CLIP ViT-L/14)")
NO_DINO_MODEL = ("unavailable: no metrics.dino_model given (a local folder or s3:// prefix of a transformers "
                 "ViTModel; PIE-Bench uses DINO ViT-B/8)")
NO_PROMPT = "not computed: the record has no target_prompt"


class _LocalModel(abc.ABC):
    """A metric's torch model, loaded once on first use from a local path only; ``status`` says why not.

    ``localize`` turns a configured path (s3:// prefix or local) into a local folder (the edit stage passes
    storage.localize_model_path); subclasses name the loader and the status when no path is given."""

    missing = "unavailable: no model path given"

    def __init__(self, path: str | None, device: str = "cpu",
                 localize: Callable[[str], str] | None = None) -> None:
        self.path, self.device, self.localize = path, device, localize
        self._model: Any = None
        self._status: str | None = None

    @abc.abstractmethod
    def _loader(self) -> tuple[Callable[[str, str], Any], type[Exception]]:
        """(load(path, device) -> model, the exception that means "unavailable") of the subclass's model."""

    @property
    def status(self) -> str:
        if self._status is None:
            self._status = self._load()
        return self._status

    @property
    def available(self) -> bool:
        return self.status == METRIC_OK

    def _load(self) -> str:
        if not self.path:
            return self.missing
        try:
            local = self.localize(self.path) if self.localize else self.path
        except Exception as exc:  # noqa: BLE001 - a missing model is a status, not a failed edit
            return f"unavailable: cannot fetch {self.path}: {type(exc).__name__}: {exc}"
        load, unavailable = self._loader()
        try:
            self._model = load(local, self.device)
        except unavailable as exc:
            return str(exc)
        return METRIC_OK


class Clip(_LocalModel):
    """CLIPScore (torchmetrics: ``100 * max(cos, 0)``) of an edit against its target prompt."""

    missing = NO_CLIP_MODEL

    def _loader(self) -> tuple[Callable[[str, str], Any], type[Exception]]:
        from actors.clip_model import ClipUnavailable, load_clip  # torch: only where CLIP is computed

        return load_clip, ClipUnavailable

    def __call__(self, edited: Any, prompt: str | None, mask: np.ndarray | None) -> dict[str, Any]:
        """``clip_whole`` (the whole edit), ``clip_edited`` (edit x mask, True = edited) and ``clip_status``."""
        if not self.available:
            return {"clip_whole": None, "clip_edited": None, "clip_status": self.status}
        if not prompt:
            return {"clip_whole": None, "clip_edited": None, "clip_status": NO_PROMPT}
        from actors.clip_model import clip_score

        # PIE-Bench hands CLIPScore the uint8 image (np.array of the PIL image), masked by multiplication
        image = np.asarray(edited.convert("RGB")) if isinstance(edited, Image.Image) else np.asarray(edited)
        whole = clip_score(self._model, image, prompt)
        if mask is None:
            return {"clip_whole": whole, "clip_edited": None,
                    "clip_status": "ok; clip_edited: no ground-truth mask"}
        part = (image * np.asarray(mask, dtype=bool)[..., None]).astype(np.uint8)
        return {"clip_whole": whole, "clip_edited": clip_score(self._model, part, prompt), "clip_status": METRIC_OK}


class Structure(_LocalModel):
    """PIE-Bench's structure distance between a source and its edit (whole images)."""

    missing = NO_DINO_MODEL

    def _loader(self) -> tuple[Callable[[str, str], Any], type[Exception]]:
        from actors.structure_model import StructureUnavailable, load_dino  # torch: only where it is computed

        return load_dino, StructureUnavailable

    def __call__(self, source: Any, edited: Any) -> tuple[float | None, str]:
        """``(structure_distance or None, structure_status)``; images of the same size."""
        if not self.available:
            return None, self.status
        from actors.structure_model import structure_distance

        x, y = _pair(source, edited)
        return structure_distance(self._model, x, y, self.device), METRIC_OK


# ------------------------------------------------------------------ the VLM judge

NO_JUDGE = "unavailable: no metrics.judge configured"
JUDGE_COLUMNS = ("judge_protocol", "judge_status", "judge_sc", "judge_pq", "judge_overall", "judge_imgedit_avg",
                 "judge_raw")


def judge_columns(status: str, protocol: str | None = None) -> dict[str, Any]:
    """Every judge_* column null but ``judge_status`` (and the protocol, when one was configured)."""
    return {**dict.fromkeys(JUDGE_COLUMNS), "judge_protocol": protocol, "judge_status": status}


class VlmJudge:
    """A VLM judge (actors.judge) from a ``metrics.judge`` block, built once on first use; ``__call__`` returns
    the judge_* columns. No block, a judge that cannot be built or one that fails gives null scores and a
    ``judge_status`` saying why, never a number; ``judge_raw`` keeps whatever the judge answered (JSON). The
    endpoint's API key stays in its environment variable: only the variable's name is held here."""

    def __init__(self, spec: dict[str, Any] | None, device: str = "cpu",
                 localize: Callable[[str], str] | None = None) -> None:
        self.spec, self.device, self.localize = dict(spec) if spec else None, device, localize
        self.protocol = self.spec.get("protocol", "viescore") if self.spec else None
        self._judge: Any = None
        self._status: str | None = None

    @property
    def status(self) -> str:
        if self._status is None:
            self._status = self._load()
        return self._status

    def _load(self) -> str:
        if self.spec is None:
            return NO_JUDGE
        s = self.spec
        try:
            if s.get("backend", "endpoint") == "endpoint":
                from actors.judge import EndpointJudge

                options = {k: s[k] for k in ("timeout_s", "max_attempts", "backoff_s", "max_tokens") if k in s}
                self._judge = EndpointJudge(s["base_url"], s["model"], api_key_env=s.get("api_key_env"), **options)
                return METRIC_OK
            local = self.localize(s["path"]) if self.localize else s["path"]
            from actors.judge import LocalJudge   # torch + transformers: only where a local judge runs

            self._judge = LocalJudge(local, device=self.device, max_new_tokens=s.get("max_tokens", 512))
        except Exception as exc:  # noqa: BLE001 - a judge that cannot be built is a status, not a failed edit
            return f"unavailable: cannot build the judge: {type(exc).__name__}: {exc}"
        return METRIC_OK

    def __call__(self, source: Image.Image, edited: Image.Image, instruction: str,
                 category: str | None) -> dict[str, Any]:
        if self.status != METRIC_OK:
            return judge_columns(self.status, self.protocol)
        if self.protocol == "imgedit" and not category:
            return judge_columns("not computed: the record has no category (ImgEdit's rubric is per edit type)",
                                 self.protocol)
        from actors.judge import judge_edit

        try:
            result = judge_edit(self._judge, source, edited, instruction, self.protocol, category=category)
        except Exception as exc:  # noqa: BLE001 - JudgeError is a status inside judge_edit; anything else here
            return judge_columns(self._scrubbed(f"failed: {type(exc).__name__}: {exc}"), self.protocol)
        return {"judge_protocol": self.protocol, "judge_status": result["status"], "judge_sc": result["sc"],
                "judge_pq": result["pq"], "judge_overall": result["overall"],
                "judge_imgedit_avg": result["imgedit_avg"],
                "judge_raw": json.dumps(result["judge_raw"], ensure_ascii=False) if result["judge_raw"] else None}

    def _scrubbed(self, text: str) -> str:
        """A message with the endpoint's API key blanked out, should an exception have carried it."""
        name = (self.spec or {}).get("api_key_env")
        key = os.environ.get(name) if name else None
        return text.replace(key, "***") if key else text
