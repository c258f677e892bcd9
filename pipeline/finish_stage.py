"""CPU stage after the GPU: each unit's edits become output rows. Here, not on the GPU actor: PNG encoding,
the writes of the edited image and its keep-mask picture, and the metrics of the `finish` stage (the pixel
metrics of `metrics.pixel`: background PSNR/SSIM/MSE, PSNR/SSIM against the same unit's `full` edit, held in
memory). A write that still fails after the storage
retries turns that row into an error row with the reason; nothing is lost."""
from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import PIL.Image
import pyarrow as pa

from . import storage as st
from .load_stage import png_bytes
from .records import STATUS_ERROR, rows_to_table
from .scoring import StageMetrics, metric_settings, scoring_of
from .reference_readback import image_uri
from .unit_stage import UnitEdit, reference_of


def mask_overlay(source: np.ndarray, keep_mean: np.ndarray) -> PIL.Image.Image:
    """The step-averaged keep mask in green over the (dimmed) source: what was computed where."""
    heat = PIL.Image.fromarray((keep_mean * 255).astype(np.uint8)).resize(
        (source.shape[1], source.shape[0]), PIL.Image.NEAREST)
    green = np.asarray(heat, np.float32)[..., None] * np.array([0.0, 0.5, 0.0], np.float32)
    return PIL.Image.fromarray((source.astype(np.float32) * 0.5 + green).clip(0, 255).astype(np.uint8))


def finish_edit(edit: UnitEdit, inputs: dict[str, Any], full: UnitEdit | None, output: str,
                storage: st.StorageConfig, metrics: StageMetrics) -> dict[str, Any]:
    """The output row of one emitted edit (writes its pictures; the finish-stage metrics fill their columns)."""
    row = edit.row
    if not edit.ok:
        return row
    record_id, config_id = row["record_id"], row["config_id"]
    try:
        out_uri = edit.extra.get("output_uri")   # written already: a split record's `full`, for its other parts
        if out_uri is None:
            out_uri = image_uri(output, "images", config_id, record_id)
            st.write_bytes(out_uri, png_bytes(PIL.Image.fromarray(edit.image)), storage)
        if edit.keep_mean is not None:
            st.write_bytes(image_uri(output, "masks", config_id, record_id),
                           png_bytes(mask_overlay(inputs["source"], edit.keep_mean)), storage)
        row.update(metrics.score(scoring_of(edit, inputs, full)), output_uri=out_uri)
    except Exception as err:   # noqa: BLE001 - the row says why; the rest of the unit goes on
        row.update(status=STATUS_ERROR, error=f"after the edit: {type(err).__name__}: {err}", output_uri=None)
    return row


def finish_units(batch: pa.Table, output: str, storage: dict[str, Any] | None,
                 compute: list[str] | None = None) -> pa.Table:
    """`map_batches` function: units with pickled edits -> output rows (`records.output_schema()`); `compute`
    names the metrics to run (None: every registered one)."""
    cfg = st.StorageConfig.from_mapping(storage)
    metrics = StageMetrics("finish", metric_settings({"compute": compute}))
    rows = []
    for blob, edits_blob in zip(batch.column("inputs").to_pylist(), batch.column("edits").to_pylist()):
        inputs = pickle.loads(blob) if blob is not None else None
        edits: list[UnitEdit] = pickle.loads(edits_blob)
        for e in edits:
            if e.emit:
                rows.append(finish_edit(e, inputs, reference_of(e, edits), output, cfg, metrics)
                            if inputs is not None else e.row)
    return rows_to_table(rows)
