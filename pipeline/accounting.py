"""What a run wrote, counted on a worker, file by file: the driver never holds the run's rows nor its files' names.

A run writes its Parquet files under a prefix of its own (`run_prefix`), so a Ray task finds them after the run
(`count_written`) and `new_row_counts` reads them one at a time and only the columns it counts (record id,
status, `pairing_rerun_s`, `pairing_wait_s`); what it keeps between files is the counts and a 64-bit hash of each record id
seen (8 bytes a record; distinct records are counted exactly up to a hash collision, ~3e-8 likely at a
million). The driver gets the counts back. The ok pairs a resumed run skips are counted by the task that
indexes them (`resume.done_index`)."""
from __future__ import annotations

from typing import Iterable

import os
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import storage as st
from .records import STATUS_OK
from .resume import read_results_files

COLUMNS = ["record_id", "status", "pairing_rerun_s", "pairing_wait_s"]


def _columns(path: str, fs: pa.fs.FileSystem, wanted: list[str]) -> pa.Table:
    """The `wanted` columns of one Parquet file that has them (results written before a column existed lack it)."""
    with fs.open_input_file(path) as f:
        parquet = pq.ParquetFile(f)
        names = [c for c in wanted if c in parquet.schema_arrow.names]
        return parquet.read(columns=names)


def _hashes(ids: pa.ChunkedArray) -> np.ndarray:
    """The distinct 64-bit hashes of one file's record ids."""
    return np.unique(pd.util.hash_array(np.asarray(ids.to_numpy(), dtype=object), categorize=False))


def new_row_counts(files: Iterable[str], fs: pa.fs.FileSystem) -> dict[str, int | float]:
    """Rows in `files` by status, their records, the `full` edits re-run for pairing, and the GPU seconds pairing
    cost (re-runs plus waits for a reference read back)."""
    rows = ok = reruns = 0
    rerun_s, hashes = 0.0, []
    for path in sorted(files):
        table = _columns(path, fs, COLUMNS)
        rows += table.num_rows
        ok += int(pc.sum(pc.equal(table["status"], STATUS_OK)).as_py() or 0)
        hashes.append(_hashes(table["record_id"]))
        if "pairing_rerun_s" in table.column_names:
            charged = table["pairing_rerun_s"]
            reruns += len(charged) - charged.null_count
            rerun_s += float(pc.sum(charged).as_py() or 0.0)
        if "pairing_wait_s" in table.column_names:
            rerun_s += float(pc.sum(table["pairing_wait_s"]).as_py() or 0.0)
    records = len(np.unique(np.concatenate(hashes))) if hashes else 0
    return {"records": records, "edited": rows, "ok": ok, "errors": rows - ok,
            "pairing_reruns": reruns, "extra_gpu_s_for_pairing": round(rerun_s, 6)}


def run_prefix() -> str:
    """A fresh prefix for one run's Parquet files (`result_files.file_name`)."""
    return f"run-{uuid.uuid4().hex[:16]}"


def count_written(results_uri: str, storage: st.StorageLike, prefix: str) -> dict[str, int | float]:
    """`new_row_counts` of the files named with `prefix` under `results_uri` (a Ray task's work)."""
    files = [f for f in read_results_files(results_uri, storage) if os.path.basename(f).startswith(f"{prefix}_")]
    return new_row_counts(files, st.filesystem_for(results_uri, storage)[0])
