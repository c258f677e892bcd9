"""PIE-Bench's structure distance on the GPU actor: MSE between DINO ViT-B/8 block-11 key self-similarity
maps of the source and the edit (whole images, at the source's size); the torch side is
``metrics.structure_model``."""
from __future__ import annotations

from typing import Any, Callable

import pyarrow as pa

from metrics.base import METRIC_OK, Column, Metric, MetricSettings, Scoring
from metrics.images import pair
from metrics.local_model import LocalModel

NO_DINO_MODEL = ("unavailable: no metrics.dino_model given (a local folder or s3:// prefix of a transformers "
                 "ViTModel; PIE-Bench uses DINO ViT-B/8)")


class Structure(LocalModel):
    """PIE-Bench's structure distance between a source and its edit (whole images)."""

    missing = NO_DINO_MODEL

    def _loader(self) -> tuple[Callable[[str, str], Any], type[Exception]]:
        from metrics.structure_model import StructureUnavailable, load_dino  # torch: only where it is computed

        return load_dino, StructureUnavailable

    def __call__(self, source: Any, edited: Any) -> tuple[float | None, str]:
        """``(structure_distance or None, structure_status)``; images of the same size."""
        if not self.available:
            return None, self.status
        from metrics.structure_model import structure_distance

        x, y = pair(source, edited)
        return structure_distance(self._model, x, y, self.device), METRIC_OK


class StructureMetric(Metric, name="structure"):
    """The structure distance of the edit at the source's size to the source."""

    title = "structure distance"
    stage = "edit"
    status_column = "structure_status"
    columns = (
        Column("structure_distance", pa.float64(), "DINO ViT-B/8 key self-similarity MSE, source vs edit",
               reported=True),
        Column("structure_status", pa.string(), "ok, or why structure_distance is null"),
    )

    def __init__(self, settings: MetricSettings) -> None:
        super().__init__(settings)
        self.structure = Structure(settings.options.get("dino_model"), settings.device, settings.localize)

    def score(self, scoring: Scoring) -> dict[str, Any]:
        distance, status = self.structure(scoring.source, scoring.edited)
        return {"structure_distance": distance, "structure_status": status}
