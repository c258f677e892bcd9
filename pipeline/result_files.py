"""The run's result rows written as Parquet by the CPU stage that made them, and the stream drained in the driver.

Not Ray Data's `write_parquet`: its datasink materialises the write stage (a reference and a metadata record per
write task, kept in the driver for the whole run) and then gathers every task's write result there, so a
driver's memory grew with the units (a 10k-record run: +26 MB at the end alone). Here each CPU task writes its
batch's rows as one file through `pipeline.storage` (retried, atomic on a local disk, faults injected in tests
like every other write) and passes on one count; the driver only iterates over those counts.

A file is named by the run's prefix (`accounting.run_prefix`) and a digest of its (record, configuration) pairs:
a retried task rewrites the same file instead of adding a second copy of its rows."""
from __future__ import annotations

import hashlib
import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import storage as st

COUNT_SCHEMA = pa.schema([pa.field("rows", pa.int64())])


def file_name(prefix: str, rows: pa.Table) -> str:
    """`{prefix}_{digest}.parquet`, the digest of the rows' (record_id, config_id) pairs in order."""
    pairs = zip(rows.column("record_id").to_pylist(), rows.column("config_id").to_pylist())
    digest = hashlib.sha1("\n".join(f"{r}\t{c}" for r, c in pairs).encode()).hexdigest()[:24]
    return f"{prefix}_{digest}.parquet"


def write_rows(batch: pa.Table, results: str, prefix: str, storage: dict[str, Any] | None) -> pa.Table:
    """`map_batches` function: the batch's output rows as one Parquet file under `results`; returns its count."""
    if batch.num_rows == 0:
        return COUNT_SCHEMA.empty_table()
    buf = io.BytesIO()
    pq.write_table(batch, buf)
    st.write_bytes(st.join_uri(results, file_name(prefix, batch)), buf.getvalue(), st.StorageConfig.from_mapping(storage))
    return pa.table({"rows": pa.array([batch.num_rows], pa.int64())}, schema=COUNT_SCHEMA)


def drain(dataset: Any) -> int:
    """Run `dataset` (ending in `write_rows`) to its end; the rows written. Holds one count batch at a time."""
    return sum(int(pc.sum(b["rows"]).as_py() or 0)
               for b in dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
