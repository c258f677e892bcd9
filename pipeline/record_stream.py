"""Records as a Ray Data dataset, read on the workers: the driver never holds them.

The dataset starts from the input's files (one manifest or mapping file, or GEdit-Bench's parquet shards);
a read task parses each file with the format's reader (`pipeline.sources`) and yields the records in tables of
`CHUNK` with the fixed `RECORD_SCHEMA` plus `from_end` (how many records follow it in its file: the unit split
finds the run's tail by it), which Ray Data packs into blocks up to its target block size; the graph then
splits them into units. Image bytes embedded in GEdit-Bench shards stay on the workers. Only the format
detection (a name check, or a peek at a schema) and the file listing run on the driver; `count_records`
counts on the workers."""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import pyarrow as pa
import ray

from . import storage as st
from .records import FROM_END, RECORD_SCHEMA
from .sources import FORMATS, detect_format, read_records

CHUNK = 1000   # records per yielded table
STREAM_SCHEMA = RECORD_SCHEMA.append(pa.field(FROM_END, pa.int64()))


def input_files(uri: str, fmt: str, storage: st.StorageLike = None) -> tuple[str, list[str]]:
    """(format, files): the resolved format and the files one read task each parses."""
    if fmt not in FORMATS:
        raise ValueError(f"input format {fmt!r} is not one of {', '.join(FORMATS)}")
    fmt = detect_format(uri, storage) if fmt == "auto" else fmt
    if fmt == "gedit" and not uri.endswith(".parquet"):
        files = st.list_uris(uri, storage, suffix=".parquet")
        if not files:
            raise FileNotFoundError(f"no parquet files at {uri}")
        return fmt, files
    return fmt, [uri]


def _read_files(batch: pa.Table, fmt: str, storage: dict[str, Any] | None,
                options: Mapping[str, Any]) -> Iterator[pa.Table]:
    for uri in batch.column("file").to_pylist():
        records = read_records(uri, fmt, st.StorageConfig.from_mapping(storage), **dict(options))
        n = len(records)
        for start in range(0, n, CHUNK):
            chunk = records[start:start + CHUNK]
            last = n - 1 - start
            yield pa.Table.from_pylist(chunk, schema=RECORD_SCHEMA).append_column(
                STREAM_SCHEMA.field(FROM_END), pa.array(range(last, last - len(chunk), -1), pa.int64()))


def record_dataset(uri: str, fmt: str = "auto", storage: st.StorageConfig | None = None,
                   options: Mapping[str, Any] | None = None) -> ray.data.Dataset:
    """The input's records, streamed (lazy: nothing is read until the dataset runs)."""
    fmt, files = input_files(uri, fmt, storage)
    storage_dict = storage.model_dump() if storage is not None else None
    return ray.data.from_items([{"file": f} for f in files]).map_batches(
        _read_files, batch_size=1, batch_format="pyarrow", num_cpus=1,
        fn_kwargs=dict(fmt=fmt, storage=storage_dict, options=dict(options or {})))


def count_records(uri: str, fmt: str = "auto", storage: st.StorageConfig | None = None,
                  options: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """(records, files) of the input: the records are parsed and counted on the workers (one pass over the
    input, nothing collected on the driver)."""
    files = len(input_files(uri, fmt, storage)[1])
    return record_dataset(uri, fmt, storage, options).count(), files
