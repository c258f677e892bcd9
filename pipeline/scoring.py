"""The registered metrics (``metrics``) of one stage, run on a unit's edits: the GPU actor scores the
``edit``-stage metrics (they hold models), the CPU finish stage the ``finish``-stage ones (pixel metrics).
Neither stage names a metric: a metric's file says which stage it belongs to."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import PIL.Image

from metrics import MetricSettings, Scoring, Stage, registered, selected

from .unit_stage import UnitEdit


def metric_settings(block: Mapping[str, Any] | None, device: str = "cpu",
                    localize: Callable[[str], str] | None = None) -> MetricSettings:
    """A run's ``metrics`` block (a dict of ``pipeline.config.MetricsConfig``); no ``compute``: every metric."""
    options = dict(block or {})
    compute = options.get("compute")
    names = [m.name for m in registered()] if compute is None else compute
    return MetricSettings(frozenset(names), options, device, localize)


class StageMetrics:
    """The metrics of one stage, built once (per actor or per batch), and what each unselected one writes."""

    def __init__(self, stage: Stage, settings: MetricSettings) -> None:
        self.settings = settings
        self.active = [m(settings) for m in selected(stage, settings.compute)]
        self.skipped: dict[str, Any] = {}
        for m in registered(stage):
            if m.name not in settings.compute:
                self.skipped.update(m.skipped(f"not computed: {m.name} not in metrics.compute"))

    def score(self, scoring: Scoring) -> dict[str, Any]:
        """Every column this stage's metrics give one ok edit."""
        out = dict(self.skipped)
        for metric in self.active:
            out.update(metric.score(scoring))
        return out


def scoring_of(edit: UnitEdit, inputs: Mapping[str, Any], full: UnitEdit | None,
               unit: Mapping[str, Any] | None = None) -> Scoring:
    """What ``edit`` gives its metrics: the record's source and mask, its group's ok ``full`` edit, the texts
    (from the unit on the GPU actor, from the row on the finish stage)."""
    texts = unit if unit is not None else edit.row
    return Scoring(
        source=PIL.Image.fromarray(inputs["source"]), made=PIL.Image.fromarray(edit.image), mask=inputs["mask"],
        full=PIL.Image.fromarray(full.image) if full is not None and full.ok else None,
        is_reference=edit.config.is_reference, instruction=texts.get("instruction"),
        target_prompt=texts.get("target_prompt"), category=texts.get("category"))
