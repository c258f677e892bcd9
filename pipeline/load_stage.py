"""CPU stage before the GPU: check each unit's record, decode its images and mask, write its inputs beside
the results (for reports), and hand the GPU actor decoded pixels, so the GPU never waits on I/O or PNG
decoding. A bad record (unreadable image, missing mask, empty instruction) is not dropped: its unit carries
`load_error` and turns into one error row per configuration."""
from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import PIL.Image
import pyarrow as pa

from . import storage as st
from .images import load_image, record_image, record_mask
from .records import EditRecord, RecordError, validate_record
from .storage import safe_name

# pickled numpy arrays between the stages of one job (same code on both sides; never read from outside)
INPUT_FIELDS = [pa.field("inputs", pa.binary()), pa.field("load_error", pa.string())]


def png_bytes(image: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def decoded_inputs(record: EditRecord, storage: st.StorageConfig) -> dict[str, Any]:
    """Source (H x W x 3 uint8), mask (H x W bool or None), references and target, decoded."""
    source = record_image(record, storage)
    mask = record_mask(record, source.size, storage)
    return {"source": np.asarray(source.convert("RGB")), "mask": mask,
            "references": [np.asarray(load_image(u, storage).convert("RGB")) for u in record.references],
            "target": np.asarray(load_image(record.target, storage).convert("RGB")) if record.target else None}


def write_inputs(output: str, record_id: str, inputs: dict[str, Any], storage: st.StorageConfig) -> None:
    """Source, mask and target of the record under `inputs/`, once (the source last: its presence means
    all are there)."""
    stem = st.join_uri(output, "inputs", safe_name(record_id))
    if st.exists(f"{stem}.png", storage):
        return
    if inputs["mask"] is not None:
        st.write_bytes(f"{stem}_mask.png", png_bytes(PIL.Image.fromarray(inputs["mask"].astype(np.uint8) * 255)),
                       storage)
    if inputs["target"] is not None:
        st.write_bytes(f"{stem}_target.png", png_bytes(PIL.Image.fromarray(inputs["target"])), storage)
    st.write_bytes(f"{stem}.png", png_bytes(PIL.Image.fromarray(inputs["source"])), storage)


def _load_one(unit: dict[str, Any], output: str, storage: st.StorageConfig) -> tuple[bytes | None, str | None]:
    try:
        record = validate_record(unit)
        inputs = decoded_inputs(record, storage)
        write_inputs(output, record.id, inputs, storage)
    except RecordError as err:
        return None, str(err)
    except Exception as err:   # noqa: BLE001 - one bad record must not stop the job
        return None, f"{type(err).__name__}: {err}"
    return pickle.dumps(inputs, protocol=pickle.HIGHEST_PROTOCOL), None


def load_units(batch: pa.Table, output: str, storage: dict[str, Any] | None) -> pa.Table:
    """`map_batches` function: units -> units with `inputs` (pickled arrays) or `load_error`."""
    cfg = st.StorageConfig.from_mapping(storage)
    loaded = [_load_one(unit, output, cfg) for unit in batch.to_pylist()]
    batch = batch.drop_columns(["image_bytes"])   # decoded now; do not carry the encoded copy further
    return (batch.append_column(INPUT_FIELDS[0], pa.array([i for i, _ in loaded], pa.binary()))
            .append_column(INPUT_FIELDS[1], pa.array([e for _, e in loaded], pa.string())))
