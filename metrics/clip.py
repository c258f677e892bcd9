"""CLIP similarity on the GPU actor: torchmetrics ``CLIPScore`` (CLIP ViT-L/14 in PIE-Bench) of the edit
(``clip_whole``) and of edit x mask (``clip_edited``) against the record's ``target_prompt``; the torch side is
``metrics.clip_model``."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyarrow as pa
from PIL import Image

from metrics.base import METRIC_OK, Column, Metric, MetricSettings, Scoring
from metrics.local_model import LocalModel

NO_CLIP_MODEL = ("unavailable: no metrics.clip_model given (a local folder or s3:// prefix of a CLIPModel + "
                 "CLIPProcessor; PIE-Bench uses CLIP ViT-L/14)")
NO_PROMPT = "not computed: the record has no target_prompt"


class Clip(LocalModel):
    """CLIPScore (torchmetrics: ``100 * max(cos, 0)``) of an edit against its target prompt."""

    missing = NO_CLIP_MODEL

    def _loader(self) -> tuple[Callable[[str, str], Any], type[Exception]]:
        from metrics.clip_model import ClipUnavailable, load_clip  # torch: only where CLIP is computed

        return load_clip, ClipUnavailable

    def __call__(self, edited: Any, prompt: str | None, mask: np.ndarray | None) -> dict[str, Any]:
        """``clip_whole`` (the whole edit), ``clip_edited`` (edit x mask, True = edited) and ``clip_status``."""
        if not self.available:
            return {"clip_whole": None, "clip_edited": None, "clip_status": self.status}
        if not prompt:
            return {"clip_whole": None, "clip_edited": None, "clip_status": NO_PROMPT}
        from metrics.clip_model import clip_score

        # PIE-Bench hands CLIPScore the uint8 image (np.array of the PIL image), masked by multiplication
        image = np.asarray(edited.convert("RGB")) if isinstance(edited, Image.Image) else np.asarray(edited)
        whole = clip_score(self._model, image, prompt)
        if mask is None:
            return {"clip_whole": whole, "clip_edited": None,
                    "clip_status": "ok; clip_edited: no ground-truth mask"}
        part = (image * np.asarray(mask, dtype=bool)[..., None]).astype(np.uint8)
        return {"clip_whole": whole, "clip_edited": clip_score(self._model, part, prompt), "clip_status": METRIC_OK}


class ClipMetric(Metric, name="clip"):
    """CLIP scores of the edit at the source's size."""

    title = "CLIP"
    stage = "edit"
    status_column = "clip_status"
    columns = (
        Column("clip_whole", pa.float64(), "CLIPScore (100 * max(cos, 0)) of the edit vs target_prompt",
               reported=True),
        Column("clip_edited", pa.float64(), "the same on edit * mask (PIE-Bench 'edited part')", reported=True),
        Column("clip_status", pa.string(), "ok, or why a CLIP value is null"),
    )

    def __init__(self, settings: MetricSettings) -> None:
        super().__init__(settings)
        self.clip = Clip(settings.options.get("clip_model"), settings.device, settings.localize)

    def score(self, scoring: Scoring) -> dict[str, Any]:
        return self.clip(scoring.edited, scoring.target_prompt, scoring.mask)
