"""One entry point for the input: pick the reader for a URI and return record dicts.

Formats: ``manifest`` (our JSONL / JSON array / Parquet), ``pie`` (PIE-Bench
``mapping_file.json``), ``gedit`` (GEdit-Bench parquet), ``imgedit`` (ImgEdit
``basic_edit.json``), or ``auto`` (decided from the name, then the content).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq

from pipeline import storage as st
from pipeline.benchmarks import GEDIT_COLUMNS, read_gedit_bench, read_imgedit, read_pie_bench
from pipeline.images import load_image, load_mask, record_image, record_mask  # noqa: F401
from pipeline.manifest import read_manifest
from pipeline.records import RecordError  # noqa: F401  (re-exported for callers)

FORMATS = ("auto", "manifest", "pie", "gedit", "imgedit")


def detect_format(uri: str, storage: st.StorageLike = None) -> str:
    """Guess the input format of ``uri`` (cheap name checks first, then a peek)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if name == "mapping_file.json":
        return "pie"
    if name == "basic_edit.json":
        return "imgedit"
    if name.endswith(".jsonl"):
        return "manifest"
    if name.endswith(".json"):
        data = json.loads(st.read_bytes(uri, storage).decode("utf-8-sig"))
        if isinstance(data, list):
            return "manifest"
        first = next(iter(data.values()), None) if isinstance(data, dict) else None
        if isinstance(first, dict) and {"image_path", "mask"} <= first.keys():
            return "pie"
        if isinstance(first, dict) and {"id", "prompt"} <= first.keys():
            return "imgedit"
        raise ValueError(f"cannot tell the format of {uri}; set input.format to one of {FORMATS[1:]}")
    if name.endswith(".parquet") or name.endswith(".pq"):
        fs, path = st.filesystem_for(uri, storage)
        schema = pq.read_schema(path, filesystem=fs)
        return "gedit" if set(GEDIT_COLUMNS) <= set(schema.names) else "manifest"
    if st.list_uris(uri, storage, suffix=".parquet"):
        return "gedit"  # a folder of parquet shards: the GEdit-Bench HF layout
    raise ValueError(f"cannot tell the format of {uri}; set input.format to one of {FORMATS[1:]}")


def read_records(
    uri: str, fmt: str = "auto", storage: st.StorageLike = None, **options: Any
) -> list[dict[str, Any]]:
    """Read every record of the input at ``uri``; ``options`` go to the reader."""
    if fmt not in FORMATS:
        raise ValueError(f"input format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(uri, storage)
    if fmt == "manifest":
        return read_manifest(uri, storage, **options)
    if fmt == "pie":
        return read_pie_bench(uri, storage, **options)
    if fmt == "gedit":
        return read_gedit_bench(uri, storage, **options)
    return read_imgedit(uri, storage, **options)


__all__ = [
    "FORMATS",
    "RecordError",
    "detect_format",
    "load_image",
    "load_mask",
    "read_records",
    "record_image",
    "record_mask",
]
