"""What a metric is: the columns it declares, the stage it runs in, and how it scores one edit.

A metric is one class in one file: ``class Mae(Metric, name="mae")`` with its ``columns`` and ``score``.
Subclassing registers it; the output row schema (``pipeline.records``), the report's metric list and the
stages that compute metrics all read the registry, so nothing else names it.

``name`` is also the metric's entry in ``metrics.compute`` of a run config. Two entries there are targets, not
metrics: ``background`` (scores outside the record's mask, against the source) and ``vs_full`` (against the
group's ``full`` edit); the pixel metrics are named after them and LPIPS honours both.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, ClassVar, Collection, Literal, Mapping

import numpy as np
import pyarrow as pa
from PIL import Image

from core.registry import PluginError, Registry

METRIC_OK = "ok"   # a *_status column's value when the metric has its number
EDIT_FAILED = "not computed: edit failed"
Stage = Literal["edit", "finish"]   # "edit": the GPU actor (holds a model); "finish": the CPU stage after it


class MetricError(PluginError):
    """A metric name or column that cannot be registered, or an unknown metric."""


REGISTRY: Registry[Any] = Registry("metric", MetricError)   # name -> Metric subclass, in registration order


@dataclass(frozen=True)
class Column:
    """One output column a metric fills; ``reported`` numbers are averaged in the report's table."""

    name: str
    arrow: pa.DataType
    description: str
    reported: bool = False


@dataclass(frozen=True)
class MetricSettings:
    """A run's ``metrics`` block as the stages hand it over: what to compute, the models' paths and options,
    the device, and how a configured path (s3:// or local) becomes a local folder."""

    compute: frozenset[str]
    options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    localize: Callable[[str], str] | None = None


@dataclass(frozen=True, eq=False)
class Scoring:
    """What one ok edit gives its metrics: the source and mask at the source's size, the edit as the editor made
    it, the group's ``full`` edit (None: there is none that succeeded) and the record's texts."""

    source: Image.Image
    made: Image.Image
    mask: np.ndarray | None = None
    full: Image.Image | None = None
    is_reference: bool = False          # this edit is its group's `full`: nothing to compare against
    instruction: str | None = None
    target_prompt: str | None = None
    category: str | None = None

    @cached_property
    def edited(self) -> Image.Image:
        """The edit at the source's size, where PIE-Bench scores it."""
        return self.made.resize(self.source.size, Image.BICUBIC)


class Metric(abc.ABC):
    """One metric: its declared ``columns`` (``status_column`` among them, saying why a value is null), the
    ``stage`` it runs in, and ``score``. One instance per actor or batch; it keeps no state of an edit."""

    name: ClassVar[str]
    title: ClassVar[str] = ""   # how the report's notes name it (default: its name)
    stage: ClassVar[Stage] = "finish"
    columns: ClassVar[tuple[Column, ...]] = ()
    status_column: ClassVar[str | None] = None

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:   # an abstract helper base, not a metric
            return
        taken = {c.name for other, m in REGISTRY.items() if other != name for c in m.columns}
        clash = taken.intersection(c.name for c in cls.columns)
        if clash:
            raise MetricError(f"metric {name!r}: columns {sorted(clash)} belong to another metric")
        cls.name = name
        REGISTRY.add(name, cls)

    def __init__(self, settings: MetricSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def score(self, scoring: Scoring) -> dict[str, Any]:
        """This metric's columns for one ok edit (a subset; the rest stay null)."""

    @classmethod
    def skipped(cls, reason: str) -> dict[str, Any]:
        """The columns of an edit this metric did not score (not selected, or the edit failed)."""
        return {cls.status_column: reason} if cls.status_column else {}

    @classmethod
    def why_missing(cls, row: Mapping[str, Any], column: str) -> str:
        """Why ``column`` is null on an ok row, read from the row (its status column by default)."""
        if cls.status_column is None:
            return "not computed"
        return f"{cls.title or cls.name} " + status_reason(row.get(cls.status_column), column, cls.status_column)


def status_reason(status: object, column: str, status_column: str) -> str:
    """Why ``column`` is missing, from its ``*_status`` value; "ok; clip_edited: <why>" names one column only."""
    if not isinstance(status, str) or not status.strip():
        return f"no reason recorded (no {status_column}: rows written before the metric existed?)"
    prefix = f"ok; {column}: "
    return status[len(prefix):] if status.startswith(prefix) else status


def registered(stage: Stage | None = None) -> list[type[Metric]]:
    """Registered metrics in registration order, optionally those of one stage."""
    return [m for m in REGISTRY.values() if stage is None or m.stage == stage]


def output_columns() -> list[Column]:
    """Every metric's columns, in registration order: the metric part of the output row."""
    return [c for m in registered() for c in m.columns]


def reported_columns() -> list[str]:
    """The numbers the report's table averages."""
    return [c.name for c in output_columns() if c.reported]


def metric_of(column: str) -> type[Metric]:
    """The metric that declares ``column``."""
    for m in registered():
        if any(c.name == column for c in m.columns):
            return m
    raise KeyError(f"no registered metric declares column {column!r}")


def failed_edit_columns() -> dict[str, Any]:
    """What an error row says in every metric's status column."""
    out: dict[str, Any] = {}
    for m in registered():
        out.update(m.skipped(EDIT_FAILED))
    return out


def selected(stage: Stage, compute: Collection[str]) -> list[type[Metric]]:
    """The metrics of ``stage`` that ``compute`` asks for."""
    return [m for m in registered(stage) if m.name in compute]
