"""LPIPS on the GPU actor: outside the mask against the source (``lpips_bg``) and against the group's ``full``
edit (``lpips_vs_full``), from local weights only (the torch model is ``metrics.lpips_model``).

PIE-Bench's "unedit part" convention: both images are zeroed inside the mask and mapped to [-1, 1]. Without
weights the value is ``None`` and ``lpips_status`` says why: a random network's number is not the metric.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from metrics.base import METRIC_OK, Column, Metric, MetricSettings, Scoring
from metrics.images import background_mask_product, pair
from metrics.pixel import FULL_IS_REFERENCE, NO_MASK

LPIPS_NETS = ("alex", "squeeze", "vgg")   # the trunks metrics.lpips_model has torchvision files for (config: lpips_net)
# lpips_status joins per-target messages as "bg: ...; vs_full: ..."
_PART = re.compile(r"; (?=(?:bg|vs_full): )")


class Lpips:
    """LPIPS from local weights only; ``__call__`` returns ``(value or None, status)``.

    ``status`` is ``"ok"`` or a sentence saying why there is no value.  The torch model is built on first
    use, so constructing this is cheap on a worker that never needs it.
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
        return self.status == METRIC_OK

    def _load(self) -> None:
        from metrics.lpips_model import LpipsUnavailable, load_lpips  # torch: only where LPIPS is computed

        try:
            self._model, self._status = load_lpips(self.net, self.weights_path, self.device), METRIC_OK
        except LpipsUnavailable as exc:
            self._model, self._status = None, str(exc)

    def __call__(self, a: Any, b: Any, mask: np.ndarray | None = None) -> tuple[float | None, str]:
        """LPIPS(a, b); with ``mask`` (True = edited) both images are zeroed inside it first."""
        if not self.available:
            return None, self.status
        from metrics.lpips_model import lpips_distance

        x, y = pair(a, b)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.all():
                return None, "undefined: mask covers the whole image"
            x, y = background_mask_product(x, mask), background_mask_product(y, mask)
        return lpips_distance(self._model, x, y, self.device), METRIC_OK


class LpipsMetric(Metric, name="lpips"):
    """``lpips_bg`` and ``lpips_vs_full``, each when its target (``background``, ``vs_full``) is computed."""

    title = "LPIPS"
    stage = "edit"
    status_column = "lpips_status"
    columns = (
        Column("lpips_bg", pa.float64(), "LPIPS of edit x (1 - mask) vs source x (1 - mask)", reported=True),
        Column("lpips_vs_full", pa.float64(), "LPIPS of the edit vs the same record's full edit", reported=True),
        Column("lpips_status", pa.string(), "ok, or why an LPIPS value is null (per target: 'bg: ...')"),
    )

    def __init__(self, settings: MetricSettings) -> None:
        super().__init__(settings)
        options = settings.options
        self.lpips = Lpips(options.get("lpips_weights"), options.get("lpips_net", "squeeze"), settings.device)

    def score(self, scoring: Scoring) -> dict[str, Any]:
        compute, out, statuses = self.settings.compute, {}, []
        if scoring.mask is not None and "background" in compute:
            out["lpips_bg"], status = self.lpips(scoring.edited, scoring.source, scoring.mask)
            statuses.append(f"bg: {status}")
        if "vs_full" in compute and not scoring.is_reference:
            if scoring.full is None:
                statuses.append("vs_full: the full edit of this record failed")
            else:
                out["lpips_vs_full"], status = self.lpips(scoring.made, scoring.full)
                statuses.append(f"vs_full: {status}")
        out["lpips_status"] = join_statuses(statuses)
        return out

    @classmethod
    def why_missing(cls, row: Mapping[str, Any], column: str) -> str:
        if column == "lpips_vs_full" and row.get("policy") == "full":
            return FULL_IS_REFERENCE
        if column == "lpips_bg" and _missing(row.get("psnr_bg")):
            return NO_MASK
        return "LPIPS " + lpips_reason(row.get("lpips_status"), column)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def join_statuses(statuses: list[str]) -> str:
    """One message when every LPIPS attempt says the same, else each labelled."""
    if not statuses:
        return "not computed: no mask and no full reference"
    bodies = {s.split(": ", 1)[-1] for s in statuses}
    return bodies.pop() if len(bodies) == 1 and len(statuses) > 1 else "; ".join(statuses)


def lpips_reason(status: object, column: str) -> str:
    """The part of an ``lpips_status`` that concerns ``column`` (``lpips_bg`` or ``lpips_vs_full``)."""
    if not isinstance(status, str) or not status.strip():
        return "no reason recorded (empty lpips_status)"
    target = "bg" if column == "lpips_bg" else "vs_full"
    parts = _PART.split(status)
    mine = [p.split(": ", 1)[1] for p in parts if p.startswith(f"{target}: ")]
    plain = [p for p in parts if not p.startswith(("bg: ", "vs_full: "))]
    return "; ".join(mine or plain or parts)
