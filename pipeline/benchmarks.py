"""Readers for the benchmarks' own formats, producing the same record dicts as manifests.

- PIE-Bench ``mapping_file.json``: ``{key: {image_path, editing_instruction,
  editing_type_id, mask, editing_prompt, ...}}``; ``editing_prompt`` without its ``[ ]`` is the
  record's ``target_prompt``.  The mask stays a run list in the record
  (``mask_rle`` + ``mask_shape=[512, 512]``) and is decoded on the worker by
  ``images.record_mask``: a few hundred ints travel instead of a PNG, and nothing
  has to be written next to a (possibly read-only) benchmark copy.  Images are
  looked up under ``image_root`` (default: ``annotation_images/`` next to the
  mapping file, the layout of the PIE-Bench release).
- GEdit-Bench parquet (a file or a prefix of ``*.parquet``): English rows only;
  the image is embedded (``image_bytes``), taken from ``input_image_raw`` (the
  original resolution) or ``input_image`` when the raw one is absent.
- ImgEdit ``basic_edit.json``: ``{key: {id, prompt, edit_type}}`` with ``id`` the
  image path relative to the json file.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import pyarrow.parquet as pq

from pipeline import storage as st
from pipeline.images import PIE_MASK_SHAPE
from pipeline.records import new_record

GEDIT_COLUMNS = ("task_type", "key", "instruction", "instruction_language")


def _load_json_object(uri: str, storage: st.StorageLike) -> dict[str, Any]:
    data = json.loads(st.read_bytes(uri, storage).decode("utf-8-sig"))
    if not isinstance(data, dict):
        raise ValueError(f"{uri}: expected a JSON object keyed by record id")
    return data


def read_pie_bench(
    uri: str, storage: st.StorageLike = None, image_root: str | None = None
) -> list[dict[str, Any]]:
    """Records of a PIE-Bench ``mapping_file.json``."""
    base = st.parent_uri(uri)
    root = st.resolve_uri(image_root, base) if image_root else st.join_uri(base, "annotation_images")
    records = []
    for key, item in _load_json_object(uri, storage).items():
        if not isinstance(item, Mapping):
            records.append(new_record(id=str(key), error=f"PIE-Bench entry {key} is not an object"))
            continue
        missing = [f for f in ("image_path", "editing_instruction", "mask") if f not in item]
        rec = new_record(
            id=str(key),
            instruction=item.get("editing_instruction"),
            category=None if item.get("editing_type_id") is None else str(item["editing_type_id"]),
            error=f"PIE-Bench entry {key}: missing {', '.join(missing)}" if missing else None,
        )
        if not missing:
            rec["image"] = st.resolve_uri(str(item["image_path"]), root)
            rec["mask_rle"] = [int(v) for v in item["mask"]]
            rec["mask_shape"] = list(PIE_MASK_SHAPE)
        rec["target_prompt"] = pie_prompt(item.get("editing_prompt"))
        records.append(rec)
    return records


def pie_prompt(prompt: Any) -> str | None:
    """A PIE-Bench prompt without its ``[`` ``]`` word markers (``editing_prompt``: the target's caption,
    what PIE-Bench's CLIP similarity scores against; ``original_prompt``: the source's)."""
    if not isinstance(prompt, str):
        return None
    text = prompt.replace("[", "").replace("]", "")   # exactly PIE-Bench's evaluate.py
    return text if text.strip() else None


def read_gedit_bench(
    uri: str,
    storage: st.StorageLike = None,
    language: str = "en",
    image_column: str = "input_image_raw",
) -> list[dict[str, Any]]:
    """English (by default) records of GEdit-Bench parquet file(s), images embedded."""
    files = [uri] if uri.endswith(".parquet") else st.list_uris(uri, storage, suffix=".parquet")
    if not files:
        raise FileNotFoundError(f"no parquet files at {uri}")
    records = []
    for file_uri in files:
        fs, path = st.filesystem_for(file_uri, storage)
        schema = pq.read_schema(path, filesystem=fs)
        missing = [c for c in GEDIT_COLUMNS if c not in schema.names]
        if missing:
            raise ValueError(f"{file_uri}: not GEdit-Bench parquet, missing columns {missing}")
        image_cols = [c for c in (image_column, "input_image") if c in schema.names]
        if not image_cols:
            raise ValueError(f"{file_uri}: no image column ({image_column} or input_image)")
        table = st.with_retries(
            lambda: pq.read_table(
                path,
                filesystem=fs,
                columns=list(GEDIT_COLUMNS) + sorted(set(image_cols)),
                filters=[("instruction_language", "=", language)],
            )
        )
        for row in table.to_pylist():
            rid = f"{row['task_type']}/{row['key']}"  # GEdit's own output layout
            data = next((b for b in (_image_bytes(row.get(c)) for c in image_cols) if b), None)
            records.append(
                new_record(
                    id=rid,
                    instruction=row["instruction"],
                    category=row["task_type"],
                    image_bytes=data,
                    error=None if data else f"GEdit-Bench row {rid}: no embedded image bytes",
                )
            )
    return records


def _image_bytes(value: Any) -> bytes | None:
    # HF ``Image`` feature = struct<bytes, path>; plain binary columns are accepted too.
    if isinstance(value, Mapping):
        value = value.get("bytes")
    return bytes(value) if value else None


def read_imgedit(uri: str, storage: st.StorageLike = None) -> list[dict[str, Any]]:
    """Records of an ImgEdit ``basic_edit.json``."""
    base = st.parent_uri(uri)
    records = []
    for key, item in _load_json_object(uri, storage).items():
        if not isinstance(item, Mapping) or "id" not in item:
            records.append(new_record(id=str(key), error=f"ImgEdit entry {key}: missing 'id'"))
            continue
        records.append(
            new_record(
                id=str(key),
                image=st.resolve_uri(str(item["id"]), base),
                instruction=item.get("prompt"),
                category=None if item.get("edit_type") is None else str(item["edit_type"]),
            )
        )
    return records
