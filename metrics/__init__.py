"""Metrics: one file per metric, each declaring its output columns (``base.Column``) and the stage it runs in.

    pixel.py       psnr_bg, ssim_bg, mse_bg (background) and psnr_vs_full, ssim_vs_full: the CPU finish stage
    lpips.py       lpips_bg, lpips_vs_full (+ lpips_model.py, the torch side): the GPU actor
    clip.py        clip_whole, clip_edited (+ clip_model.py): the GPU actor
    structure.py   structure_distance, DINO (+ structure_model.py): the GPU actor
    judge/         the VLM judge's judge_* columns (metric.py; backends, prompts, parsing): the GPU actor

The registry (``base.REGISTRY``, filled by subclassing ``Metric``) is what the output row schema
(``pipeline.records``), the report's metric list (``report.tables``) and the stages read: a new metric is one
file whose module is imported before use (here, for the built-in ones; before ``pipeline.config`` for a run
config to accept its name in ``metrics.compute``). This package imports no ``pipeline``.
"""
from __future__ import annotations

from metrics.base import (EDIT_FAILED, METRIC_OK, REGISTRY, Column, Metric, MetricSettings, Scoring, Stage,
                          failed_edit_columns, metric_of, output_columns, registered, reported_columns, selected)
from metrics import pixel, lpips, clip, structure  # noqa: E402,F401 - registers the built-in metrics, in row order
from metrics.judge import metric as _judge  # noqa: E402,F401

__all__ = [
    "EDIT_FAILED", "METRIC_OK", "REGISTRY", "Column", "Metric", "MetricSettings", "Scoring", "Stage",
    "failed_edit_columns", "metric_of", "output_columns", "registered", "reported_columns", "selected",
]
