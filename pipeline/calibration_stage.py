"""ToPi calibration as a Ray Data stage: full-context edits whose every layer reports its context sensitivity.

The same callable runs in-process for small sets and as a Ray Data actor pool for large ones; a record
that cannot be edited comes back with its reason instead of scores, and the rest go on.
"""
from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from actors.architecture import describe
from actors.editor import Editor
from actors.loading import load_pipeline
from policies.calibration import ContextSensitivity

from . import storage as st
from .images import record_image
from .records import validate_record

OUTPUT = pa.schema([("id", pa.string()), ("scores", pa.list_(pa.float64())), ("steps", pa.int64()),
                    ("architecture", pa.string()), ("error", pa.string())])


class CalibrationActor:
    """`map_batches` callable: loads the model once, returns one row of per-layer scores per record."""

    def __init__(self, model: str, model_path: str | None, steps: int, seed: int,
                 height: int | None, width: int | None, storage: dict[str, Any] | None = None,
                 cache_dir: str = "~/.cache/dropedit/models") -> None:
        self.storage = st.StorageConfig.from_mapping(storage)
        path = st.localize_model_path(model_path, cache_dir, self.storage) if model_path else None
        self.pipe = load_pipeline(model, path=path)
        self.editor = Editor(self.pipe, ContextSensitivity())
        self.steps, self.seed, self.height, self.width = steps, seed, height, width
        self.architecture = describe(self.pipe.transformer)   # travels with every row to the driver

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.row(item) for item in batch.to_pylist()], schema=OUTPUT)

    def row(self, item: dict[str, Any]) -> dict[str, Any]:
        try:
            record = validate_record(item)
            result = self.editor.edit(record_image(record, self.storage), record.instruction, seed=self.seed,
                                      steps=self.steps, height=self.height, width=self.width)
            summary = result.policy_summary
            return {"id": record.id, "scores": summary["context_sensitivity"], "steps": summary["steps"],
                    "architecture": json.dumps(self.architecture), "error": None}
        except Exception as err:   # noqa: BLE001 - one bad record must not stop the calibration
            return {"id": str(item.get("id")), "scores": None, "steps": None,
                    "architecture": json.dumps(self.architecture), "error": f"{type(err).__name__}: {err}"}
